"""Request templates: ``{{ expr }}`` placeholders compiled once, rendered per request.

String values in a request's ``path``, ``json``, ``params`` and ``headers`` may contain
``{{ expr }}`` where ``expr`` is one of

====================================  ==========================================================
``rand_int(a, b)``                    random integer, ``a ≤ n ≤ b``
``rand_float(a, b)``                  random float in ``[a, b]``
``rand_float(a, b, ndigits)``         the same, rounded to ``ndigits`` decimals
``choice('buy', 'sell', ...)``        one of the literal arguments, uniformly
``user_index``                        0-based index of the virtual user (reused after ramp-down)
``seq``                               per-user request counter (0 for the user's first request)
``var.NAME``                          value captured from an earlier response of this user
====================================  ==========================================================

Arguments are literals only: integers, floats, and quoted strings (``'…'`` or ``"…"``). A string
that is exactly one placeholder keeps the value's type (``"{{ rand_int(1, 9) }}"`` → ``7``, a
JSON number); a placeholder inside other text is formatted with ``str`` (``"/orders/{{ seq }}"``).

This is on the hot path (every request of every virtual user), so nothing is parsed at run time:
:func:`compile_template` turns a value into a closure once, values without placeholders are
returned as-is (no copy), and there is no ``eval`` and no template engine. Errors are raised at
compile time as ``ValueError`` naming the key, e.g. ``unknown template function 'foo' in
users.requests[2].json.price``, so the config stage can show them.

A request that needs ``var.NAME`` is not eligible for a user until that user has captured NAME
(``RequestSpec.capture: {NAME: "dotted.path"}`` into the JSON response, list indexes as
numbers: ``orders.0.id``); the user picks among the eligible requests. ``${VAR}`` environment
substitution happens in the config stage, before this module sees the strings.

Stdlib only; imported by the gevent-patched engine and by the config stage.
"""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfgate.models import RequestSpec

Render = Callable[["UserContext"], Any]

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
      | (?P<str>'[^'\\]*'|"[^"\\]*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)?)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)
_MISSING = object()


class UserContext:
    """Per-virtual-user state that templates read: index, request counter, captured vars."""

    __slots__ = ("seq", "user_index", "vars")

    def __init__(self, user_index: int = 0) -> None:
        self.user_index = user_index
        self.seq = 0
        self.vars: dict[str, Any] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """A compiled value: ``render(ctx)`` gives the value to send; ``needs`` lists var names."""

    render: Render
    needs: frozenset[str]
    constant: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledRequest:
    """A RequestSpec with its templates compiled and its captures resolved to getters."""

    index: int
    name: str
    method: str
    weight: int
    path: Template
    json: Template | None
    params: Template | None
    headers: Template | None
    capture: tuple[tuple[str, Callable[[Any], Any]], ...]
    expect_status: frozenset[int]  # empty: any 2xx/3xx
    needs: frozenset[str]


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


def _tokenize(expr: str, where: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expr.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


def _literal(kind: str, text: str, where: str, expr: str) -> Any:
    if kind == "num":
        return float(text) if any(c in text for c in ".eE") else int(text)
    if kind == "str":
        return text[1:-1]
    raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}: arguments must be literals")


def _parse_args(tokens: list[tuple[str, str]], where: str, expr: str) -> list[Any]:
    # tokens: NAME ( [lit (, lit)*] )
    if len(tokens) < 3 or tokens[1] != ("punct", "(") or tokens[-1] != ("punct", ")"):
        raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}")
    inner = tokens[2:-1]
    args: list[Any] = []
    expect_value = True
    for kind, text in inner:
        if expect_value:
            args.append(_literal(kind, text, where, expr))
        elif (kind, text) != ("punct", ","):
            raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}")
        expect_value = not expect_value
    if inner and expect_value:  # trailing comma
        raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}")
    return args


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compile_expression(expr: str, where: str) -> tuple[Render, frozenset[str]]:
    """Compile the inside of one ``{{ … }}``; returns the render function and the vars it needs."""
    tokens = _tokenize(expr, where)
    if not tokens:
        raise ValueError(f"empty template {{{{{expr}}}}} in {where}")
    kind, head = tokens[0]
    if kind != "name":
        if len(tokens) == 1 and kind in ("num", "str"):
            value = _literal(kind, head, where, expr)
            return (lambda _ctx: value), frozenset()
        raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}")
    if len(tokens) == 1:
        return _compile_name(head, where)
    if tokens[1] != ("punct", "("):
        raise ValueError(f"bad template syntax {{{{{expr}}}}} in {where}")
    args = _parse_args(tokens, where, expr)
    return _compile_call(head, args, where), frozenset()


def _compile_name(name: str, where: str) -> tuple[Render, frozenset[str]]:
    if name == "user_index":
        return (lambda ctx: ctx.user_index), frozenset()
    if name == "seq":
        return (lambda ctx: ctx.seq), frozenset()
    if name.startswith("var."):
        var = name[4:]
        return (lambda ctx: ctx.vars[var]), frozenset((var,))
    if "." in name or name in _FUNCTIONS:
        hint = f" (call it: {name}(...))" if name in _FUNCTIONS else ""
        raise ValueError(f"unknown template name '{name}' in {where}{hint}")
    raise ValueError(
        f"unknown template name '{name}' in {where} (known: user_index, seq, var.NAME)"
    )


def _compile_call(func: str, args: list[Any], where: str) -> Render:
    if func not in _FUNCTIONS:
        raise ValueError(
            f"unknown template function '{func}' in {where} "
            f"(known: {', '.join(sorted(_FUNCTIONS))})"
        )
    return _FUNCTIONS[func](args, where)


def _rand_int(args: list[Any], where: str) -> Render:
    if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise ValueError(f"rand_int needs two integers (a, b) in {where}")
    lo, hi = args
    if lo > hi:
        raise ValueError(f"rand_int({lo}, {hi}): a must not exceed b in {where}")
    randrange = random.randrange
    return lambda _ctx: randrange(lo, hi + 1)


def _rand_float(args: list[Any], where: str) -> Render:
    if len(args) not in (2, 3) or not all(_number(a) for a in args[:2]):
        raise ValueError(f"rand_float needs two numbers (a, b) and optional ndigits in {where}")
    lo, hi = float(args[0]), float(args[1])
    if lo > hi:
        raise ValueError(f"rand_float({args[0]}, {args[1]}): a must not exceed b in {where}")
    uniform = random.uniform
    if len(args) == 2:
        return lambda _ctx: uniform(lo, hi)
    ndigits = args[2]
    if not isinstance(ndigits, int) or isinstance(ndigits, bool) or not 0 <= ndigits <= 15:
        raise ValueError(f"rand_float ndigits must be an integer 0..15 in {where}")
    return lambda _ctx: round(uniform(lo, hi), ndigits)


def _choice(args: list[Any], where: str) -> Render:
    if not args:
        raise ValueError(f"choice needs at least one value in {where}")
    options = tuple(args)
    if len(options) == 1:
        only = options[0]
        return lambda _ctx: only
    choose = random.choice
    return lambda _ctx: choose(options)


_FUNCTIONS: dict[str, Callable[[list[Any], str], Render]] = {
    "rand_int": _rand_int,
    "rand_float": _rand_float,
    "choice": _choice,
}


# ---------------------------------------------------------------------------------------------
# Values (strings, and JSON-like containers of them)
# ---------------------------------------------------------------------------------------------


def _compile_string(text: str, where: str) -> Template:
    if "{{" not in text:
        return Template(render=lambda _ctx: text, needs=frozenset(), constant=True)
    parts: list[str | Render] = []
    needs: set[str] = set()
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal = text[pos : m.start()]
        if "{{" in literal:
            raise ValueError(f"bad template syntax in {where}: unclosed '{{{{'")
        if literal:
            parts.append(literal)
        render, var_needs = compile_expression(m.group(1), where)
        parts.append(render)
        needs |= var_needs
        pos = m.end()
    tail = text[pos:]
    if "{{" in tail:
        raise ValueError(f"bad template syntax in {where}: unclosed '{{{{'")
    if tail:
        parts.append(tail)
    frozen_needs = frozenset(needs)
    if len(parts) == 1 and callable(parts[0]):
        # Exactly one placeholder: keep the value's type (a number stays a JSON number).
        return Template(render=parts[0], needs=frozen_needs, constant=False)
    pieces = tuple(parts)

    def render_text(ctx: UserContext) -> str:
        return "".join(p if isinstance(p, str) else str(p(ctx)) for p in pieces)

    return Template(render=render_text, needs=frozen_needs, constant=False)


def compile_template(value: Any, where: str) -> Template:
    """Compile a string, number, list or dict (JSON-like) into a :class:`Template`.

    Raises ValueError naming ``where`` (e.g. ``users.requests[2].json.price``) on a bad template.
    """
    if isinstance(value, str):
        return _compile_string(value, where)
    if isinstance(value, Mapping):
        items = [(k, compile_template(v, f"{where}.{k}")) for k, v in value.items()]
        needs = frozenset().union(*(t.needs for _, t in items))
        if all(t.constant for _, t in items):
            const = dict(value)
            return Template(render=lambda _ctx: const, needs=needs, constant=True)
        fixed = tuple((k, t.render(None) if t.constant else None, t) for k, t in items)  # type: ignore[arg-type]

        def render_dict(ctx: UserContext) -> dict[str, Any]:
            return {k: c if t.constant else t.render(ctx) for k, c, t in fixed}

        return Template(render=render_dict, needs=needs, constant=False)
    if isinstance(value, list | tuple):
        elems = [compile_template(v, f"{where}[{i}]") for i, v in enumerate(value)]
        needs = frozenset().union(*(t.needs for t in elems))
        if all(t.constant for t in elems):
            const_list = list(value)
            return Template(render=lambda _ctx: const_list, needs=needs, constant=True)
        seq = tuple(elems)
        return Template(
            render=lambda ctx: [t.render(ctx) for t in seq], needs=needs, constant=False
        )
    if value is None or isinstance(value, bool | int | float):
        return Template(render=lambda _ctx: value, needs=frozenset(), constant=True)
    raise ValueError(f"unsupported value of type {type(value).__name__} in {where}")


def compile_capture(path: str, where: str) -> Callable[[Any], Any]:
    """A getter for a dotted path into parsed JSON (``a.b.0.c``); returns ``MISSING`` if absent."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"capture path must be a non-empty dotted path in {where}")
    keys: list[str | int] = [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]
    if any(k == "" for k in keys):
        raise ValueError(f"capture path '{path}' has an empty part in {where}")

    def get(data: Any) -> Any:
        for key in keys:
            if isinstance(key, int) and isinstance(data, list):
                if not -len(data) <= key < len(data):
                    return _MISSING
                data = data[key]
            elif isinstance(data, dict):
                data = data.get(str(key), _MISSING)
                if data is _MISSING:
                    return _MISSING
            else:
                return _MISSING
        return data

    return get


MISSING = _MISSING


def compile_request(
    spec: RequestSpec, index: int, *, where: str = "users.requests"
) -> CompiledRequest:
    """Compile one RequestSpec (``index`` is its position, used in error messages)."""
    at = f"{where}[{index}]"
    path = compile_template(spec.path, f"{at}.path")
    json_t = None if spec.json is None else compile_template(spec.json, f"{at}.json")
    params = None if spec.params is None else compile_template(spec.params, f"{at}.params")
    headers = None if spec.headers is None else compile_template(spec.headers, f"{at}.headers")
    capture = tuple(
        (name, compile_capture(p, f"{at}.capture.{name}"))
        for name, p in (spec.capture or {}).items()
    )
    for name, _ in capture:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise ValueError(f"capture name '{name}' is not a valid identifier in {at}.capture")
    needs = frozenset().union(*(t.needs for t in (path, json_t, params, headers) if t is not None))
    return CompiledRequest(
        index=index,
        name=spec.name,
        method=spec.method.upper(),
        weight=spec.weight,
        path=path,
        json=json_t,
        params=params,
        headers=headers,
        capture=capture,
        expect_status=frozenset(spec.expect_status),
        needs=needs,
    )


def compile_requests(
    specs: Sequence[RequestSpec], *, where: str = "users.requests"
) -> tuple[CompiledRequest, ...]:
    """Compile a request mix and check that every ``var.NAME`` can ever be captured.

    Raises ValueError naming the request and key on a bad template, a var that no request
    captures, or a mix where every request needs a var (no user could ever start).
    """
    compiled = tuple(compile_request(spec, i, where=where) for i, spec in enumerate(specs))
    captured = {name for c in compiled for name, _ in c.capture}
    for c in compiled:
        missing = sorted(c.needs - captured)
        if missing:
            raise ValueError(
                f"{where}[{c.index}] uses var.{missing[0]} but no request captures "
                f"'{missing[0]}' (add capture: {{{missing[0]}: <json path>}} to an earlier request)"
            )
    if compiled and all(c.needs for c in compiled):
        raise ValueError(
            f"every request in {where} needs a captured var; at least one must need none"
        )
    # Vars can only ever be captured by requests that are themselves reachable.
    reachable: set[str] = set()
    changed = True
    while changed:
        changed = False
        for c in compiled:
            if c.needs <= reachable:
                new = {name for name, _ in c.capture} - reachable
                if new:
                    reachable |= new
                    changed = True
    for c in compiled:
        if not c.needs <= reachable:
            var = sorted(c.needs - reachable)[0]
            raise ValueError(
                f"{where}[{c.index}] uses var.{var}, which is only captured by requests that "
                f"themselves need vars never captured"
            )
    return compiled


class RequestPicker:
    """Weighted choice among the requests a user is currently eligible for (hot path)."""

    __slots__ = ("_all", "_cum", "_eligible", "_known", "_total")

    def __init__(self, requests: Sequence[CompiledRequest]) -> None:
        self._all = tuple(requests)
        self._known: frozenset[str] = frozenset()
        self._eligible: tuple[CompiledRequest, ...] = ()
        self._cum: list[float] = []
        self._total = 0.0
        self.refresh(frozenset())

    def refresh(self, known_vars: frozenset[str]) -> None:
        """Recompute eligibility after the user captured a new var name."""
        self._known = known_vars
        self._eligible = tuple(r for r in self._all if r.needs <= known_vars)
        cum: list[float] = []
        total = 0.0
        for r in self._eligible:
            total += r.weight
            cum.append(total)
        self._cum, self._total = cum, total

    @property
    def known(self) -> frozenset[str]:
        return self._known

    def pick(self) -> CompiledRequest | None:
        """One eligible request, chosen by weight; None when none is eligible."""
        eligible = self._eligible
        if len(eligible) == 1:
            return eligible[0]
        if not eligible:
            return None
        return eligible[bisect_right(self._cum, random.random() * self._total)]
