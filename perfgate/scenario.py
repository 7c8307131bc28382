"""The config stage: read a scenario file (YAML, schema version 1) into a validated ``Scenario``.

Every error is a :class:`~perfgate.errors.ScenarioError` whose one-line message names the file and
the key (``scenarios/x.yaml: ramp.max_users: must be ≥ ramp.start_users (10), got 5``).

Hostile input is refused before it can cost anything: files over 1 MiB, non-UTF-8 bytes, YAML
aliases beyond a small budget (a "billion laughs" document expands exponentially once walked),
request paths that are absolute URLs (they would send load to another host), and numbers beyond
sane bounds. ``${VAR}`` in ``users`` strings is replaced from the environment; what is a secret
(every value from the environment, authorization-like and ``secret: true`` headers) is decided
by :mod:`perfgate.redaction`, and collected here into ``UsersSpec.secret_values``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from perfgate import redaction
from perfgate.errors import ScenarioError
from perfgate.models import (
    GateSpec,
    KubernetesSpec,
    LoadSpec,
    MetricsSpec,
    PrometheusSpec,
    PromQuery,
    RampSpec,
    RequestSpec,
    Scenario,
    Slo,
    StagingSpec,
    UsersSpec,
)
from perfgate.promql import promql_problem
from perfgate.scenario_streams import parse_streams

SCENARIO_SCHEMA = 1
MAX_FILE_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000
MAX_USERS = 100_000
MAX_STEP_SECONDS = 3600.0
MAX_WORKERS = 256
# packaged (pyproject package-data), so the default works from any folder; the repository's
# scenarios/exchange.yaml is a symlink to this one file
DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "exchange.yaml"
# packaged too: your own service (a URL or a locustfile given) when no scenario is
SERVICE_SCENARIO = DEFAULT_SCENARIO.with_name("service.yaml")
# what `perfgate init` writes; `perfgate run` in a folder that has one uses it (Locust's habit
# with ./locustfile.py)
LOCAL_SCENARIO = Path("perfgate.yaml")


def default_scenario(*, own_service: bool = False) -> Path:
    """The scenario when none is given: ``./perfgate.yaml`` when this folder has one; else, for
    your own service (``own_service``: a URL or a locustfile was given), the packaged generic
    service scenario; else the packaged exchange scenario. Never the exchange's requests
    against your service."""
    if LOCAL_SCENARIO.is_file():
        return LOCAL_SCENARIO
    return SERVICE_SCENARIO if own_service else DEFAULT_SCENARIO


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # fullmatch: no trailing newline
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_TOP_KEYS = {
    "schema", "name", "description", "staging", "users", "ramp", "slo", "gate", "load", "metrics",
}  # fmt: skip


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs and duplicate keys."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            size = _expanded_size(node, {})
            if size > MAX_EXPANDED_NODES:
                raise yaml.YAMLError(
                    f"the document expands to more than {MAX_EXPANDED_NODES} values through "
                    "aliases; refusing a possible alias bomb"
                )
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise yaml.YAMLError(f"duplicate key {key!r} (line {line})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Number of values ``node`` stands for once every alias is expanded (memoised per node)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_EXPANDED_NODES + 1  # a cycle counts as infinite
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_EXPANDED_NODES + 1)
    return memo[key]


def load_scenario(path: str | Path, *, env: Mapping[str, str] | None = None) -> Scenario:
    """Read and validate the scenario file at ``path``."""
    text = _read_text(Path(path), str(path), "scenario file")
    return parse_scenario(text, source=str(path), base_dir=Path(path).resolve().parent, env=env)


def load_yaml_file(path: Path, *, what: str) -> Any:
    """Any YAML (or JSON) document the user hands perfgate, read with the scenario's limits
    (size, alias bombs, duplicate keys); ScenarioError names the file."""
    return _parse_yaml(_read_text(path, str(path), what), str(path))


def _read_text(file: Path, label: str, what: str) -> str:
    try:
        raw = file.read_bytes() if file.stat().st_size <= MAX_FILE_BYTES else None
    except FileNotFoundError:
        raise ScenarioError(f"{label}: {what} not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{label}: is a folder, not a {what}") from None
    except OSError as exc:
        raise ScenarioError(f"{label}: cannot read the {what} ({exc.strerror})") from exc
    if raw is None:
        raise ScenarioError(f"{label}: {what} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{label}: not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: invalid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise ScenarioError(f"{source}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's int parser accepts
        raise ScenarioError(f"{source}: invalid YAML: {_one_line(exc)[:200]}") from None


def parse_scenario(
    text: str,
    *,
    source: str = "<scenario>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Scenario:
    """Validate scenario YAML text; ``source`` names it in errors."""
    data = _parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    v = _Validator(source, base_dir or Path.cwd(), os.environ if env is None else env)
    return v.scenario(data)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _canonical_hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_IDENTITY_KEYS = ("name", "users", "ramp", "slo", "load")
_HIDDEN = re.compile(r"header|token|secret|password|auth|cookie|key", re.IGNORECASE)
_SHOWN_CHARS = 80


def scenario_identity(data: dict[str, Any]) -> dict[str, str]:
    """What the scenario hash covers, one entry per leaf: ``{"ramp.max_users": "600", …}``.

    Stored in fingerprints so that a changed scenario can say which keys changed. Values under
    a key that may hold a credential (headers, tokens, …) are only a short hash; long values
    are cut, with a hash of the whole.
    """
    out: dict[str, str] = {}

    def walk(value: Any, key: str, hidden: bool) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k), hidden or bool(_HIDDEN.search(str(k))))
        elif isinstance(value, list) and value:
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]", hidden)
        else:
            text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
            digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]
            if hidden:
                text = digest
            elif len(text) > _SHOWN_CHARS:
                text = f"{text[: _SHOWN_CHARS - 20]}… ({digest})"
            out[key] = text

    walk({k: data.get(k) for k in _IDENTITY_KEYS if data.get(k) is not None}, "", False)
    return out


class _Validator:
    """Walks the parsed YAML; every check names ``file: key``."""

    def __init__(self, source: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.env = env
        self.secrets: list[str] = []

    def fail(self, key: str, message: str) -> ScenarioError:
        # a value from the environment may be quoted back (e.g. a bad path): never show it
        text = redaction.redact_text(f"{key}: {message}", self.secrets)
        return ScenarioError(f"{self.source}: {text}")

    # -- generic checks ------------------------------------------------------------------------

    def section(self, data: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_type(value)}")
        self.known(value, key, allowed)
        return value

    def known(self, value: dict[str, Any], key: str, allowed: set[str]) -> None:
        for k in value:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                hint = _closest(str(k), allowed)
                raise self.fail(where, f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}")

    def integer(self, d: dict[str, Any], key: str, default: int | None, *, lo: int = 1) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in d or d[name] is None:
            return default
        value = d[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_type(value)} {value!r}")
        if value < lo:
            raise self.fail(key, f"must be ≥ {lo}, got {value}")
        if value > MAX_USERS * 10:
            raise self.fail(key, f"is implausibly large ({value})")
        return value

    def number(
        self,
        d: dict[str, Any],
        key: str,
        default: float | None,
        *,
        lo: float = 0.0,
        hi: float = 1e9,
        lo_open: bool = False,
    ) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in d or d[name] is None:
            return default
        value = d[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {_type(value)} {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise self.fail(key, "must be a finite number")
        if value < lo or (lo_open and value == lo):
            raise self.fail(key, f"must be {'>' if lo_open else '≥'} {lo:g}, got {value:g}")
        if value > hi:
            raise self.fail(key, f"must be ≤ {hi:g}, got {value:g}")
        return value

    def string(self, d: dict[str, Any], key: str, default: str | None) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in d or d[name] is None:
            return default
        value = d[name]
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_type(value)} {value!r}")
        return value

    def choice(self, d: dict[str, Any], key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.string(d, key, default)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    def path(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a file path, got {_type(value)}")
        candidate = (self.base_dir / value).resolve()
        if not candidate.exists():
            # scenario files often name paths relative to the repository root (the usual cwd)
            from_cwd = Path(value).resolve()
            if from_cwd.exists():
                return str(from_cwd)
            raise self.fail(key, f"{value}: no such file or folder")
        return str(candidate)

    def env_subst(self, value: Any, key: str, *, secret: bool = False) -> Any:
        """Replace ``${VAR}`` in strings (recursively); values from the environment are secrets."""
        if isinstance(value, str):

            def repl(m: re.Match[str]) -> str:
                var = m.group(1)
                if var not in self.env:
                    raise self.fail(key, f"environment variable {var} is not set")
                self.secrets.append(self.env[var])
                return self.env[var]

            out = _ENV_RE.sub(repl, value)
            if secret and out:
                self.secrets.append(out)
            return out
        if isinstance(value, list):
            return [self.env_subst(v, f"{key}[{i}]", secret=secret) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.env_subst(v, f"{key}.{k}", secret=secret) for k, v in value.items()}
        return value

    def headers(self, value: Any, key: str) -> dict[str, str]:
        """Header names to values; a value is ``text`` or ``{value: text, secret: true}``."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(
                key, f"expected a mapping of header names to values, got {_type(value)}"
            )
        out: dict[str, str] = {}
        for name, v in value.items():
            where = f"{key}.{name}"
            if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise self.fail(where, "not a valid HTTP header name")
            secret = redaction.is_secret_header(name)
            if isinstance(v, dict):
                self.known(v, where, {"value", "secret"})
                if not isinstance(v.get("secret", False), bool):
                    raise self.fail(f"{where}.secret", "expected true or false")
                secret = secret or bool(v.get("secret", False))
                v = v.get("value")
                where = f"{where}.value"
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.fail(where, f"expected a string, got {_type(v)}")
            text = self.env_subst(str(v), where, secret=secret)
            if "\n" in text or "\r" in text:
                raise self.fail(where, "header values must not contain line breaks")
            out[name] = text
        return out

    # -- sections ------------------------------------------------------------------------------

    def scenario(self, data: dict[str, Any]) -> Scenario:
        self.known(data, "", _TOP_KEYS)
        schema = data.get("schema", SCENARIO_SCHEMA)
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise self.fail("schema", f"expected an integer, got {_type(schema)}")
        if schema > SCENARIO_SCHEMA:
            raise self.fail(
                "schema",
                f"scenario schema {schema} is newer than this perfgate reads "
                f"({SCENARIO_SCHEMA}); upgrade perfgate",
            )
        name = self.string(data, "name", None)
        if name is None:
            raise self.fail("name", "required (it names the baseline and report folders)")
        if not _NAME_RE.fullmatch(name):
            raise self.fail(
                "name", f"{name!r}: use letters, digits, '.', '_' and '-' (max 63 characters)"
            )
        if "description" in data and not isinstance(data["description"], str | type(None)):
            raise self.fail("description", "expected a string")
        staging = self.staging(data)
        users = self.users(data)
        ramp = self.ramp(data)
        slo = self.slo(data)
        gate = self.gate(data)
        load = self.load(data)
        if users.streams is None and users.locustfile is None:
            for key in ("event_p95_ms", "event_loss_rate"):
                if getattr(slo, key) is not None:
                    raise self.fail(f"slo.{key}", "judges events: give users.streams")
        return Scenario(
            name=name,
            path=self.source,
            # the load test's identity: what users do, how they ramp, what SLO judges them; not
            # the system under test (staging knobs change between releases) nor the gate policy
            content_hash=_canonical_hash({k: data.get(k) for k in _IDENTITY_KEYS}),
            identity=scenario_identity(data),
            staging=staging,
            users=users,
            ramp=ramp,
            slo=slo,
            gate=gate,
            load=load,
            metrics=self.metrics(data),
        )

    def staging(self, data: dict[str, Any]) -> StagingSpec:
        s = self.section(data, "staging", {"provider", "embedded", "kubernetes", "target"})
        # no staging section (or only a target): the user's own service, never the demo exchange
        default = "none" if not s or "target" in s else "embedded"
        provider = self.choice(s, "staging.provider", default, ("none", "embedded", "kubernetes"))
        target = s.get("target")
        if target is not None:
            if not isinstance(target, str) or not target.startswith(("http://", "https://")):
                raise self.fail("staging.target", "must be a URL starting with http:// or https://")
            if provider != "none":
                raise self.fail("staging.target", f"only with provider none (here: {provider})")
        embedded = s.get("embedded") or {}
        if not isinstance(embedded, dict):
            raise self.fail("staging.embedded", f"expected a mapping, got {_type(embedded)}")
        kube = None
        if s.get("kubernetes") is not None:
            kube = self.kubernetes(s)
        elif provider == "kubernetes":
            raise self.fail("staging.kubernetes", "required when staging.provider is kubernetes")
        return StagingSpec(
            provider=provider,  # type: ignore[arg-type]
            embedded=dict(embedded),
            kubernetes=kube,
            target=target,
        )

    def kubernetes(self, s: dict[str, Any]) -> KubernetesSpec:
        key = "staging.kubernetes"
        k = self.section(
            s,
            key,
            {"manifests", "service", "port", "url", "ready_timeout_s", "image", "variables"},
        )
        manifests = k.get("manifests")
        if isinstance(manifests, str):
            manifests = [manifests]
        if not isinstance(manifests, list) or not manifests:
            raise self.fail(f"{key}.manifests", "expected a non-empty list of files or folders")
        paths = tuple(self.path(m, f"{key}.manifests[{i}]") for i, m in enumerate(manifests))
        service = self.string(k, f"{key}.service", "")
        url = self.string(k, f"{key}.url", None)
        if not service and not url:
            raise self.fail(f"{key}.service", "required unless staging.kubernetes.url is set")
        variables = k.get("variables") or {}
        if not isinstance(variables, dict):
            raise self.fail(f"{key}.variables", f"expected a mapping, got {_type(variables)}")
        return KubernetesSpec(
            manifests=paths,
            service=service,
            port=self.integer(k, f"{key}.port", 8080),
            url=url,
            ready_timeout_s=self.number(k, f"{key}.ready_timeout_s", 300.0, lo=0, lo_open=True),
            image=self.string(k, f"{key}.image", None),
            variables=dict(variables),
        )

    def users(self, data: dict[str, Any]) -> UsersSpec:
        u = self.section(data, "users", {"wait", "requests", "locustfile", "headers", "streams"})
        if not u:
            raise self.fail("users", "required: a list of `requests` or a `locustfile`")
        wait = self.number(u, "users.wait", 0.0, hi=3600)
        headers = self.headers(u.get("headers"), "users.headers")
        locustfile = None
        requests: tuple[RequestSpec, ...] = ()
        if u.get("locustfile") is not None:
            if u.get("requests"):
                raise self.fail("users", "give either `requests` or `locustfile`, not both")
            locustfile = self.path(u["locustfile"], "users.locustfile")
            if not locustfile.endswith(".py") or not Path(locustfile).is_file():
                raise self.fail("users.locustfile", "must be a Python file (.py)")
        else:
            reqs = u.get("requests")
            if reqs is None:
                raise self.fail("users.requests", "required (or give users.locustfile)")
            if not isinstance(reqs, list):
                raise self.fail("users.requests", f"expected a list, got {_type(reqs)}")
            if not reqs:
                raise self.fail("users.requests", "is empty: give at least one request")
            requests = tuple(self.request(r, f"users.requests[{i}]") for i, r in enumerate(reqs))
            names = [(r.method, r.name) for r in requests]
            for i, n in enumerate(names):
                if n in names[:i]:
                    raise self.fail(f"users.requests[{i}].name", f"duplicate request name {n[1]!r}")
        streams = None
        if u.get("streams") is not None:
            if locustfile is not None:
                raise self.fail(
                    "users.streams", "a locustfile opens its own streams (perfgate EventStream)"
                )
            raw = dict(u["streams"]) if isinstance(u["streams"], dict) else u["streams"]
            if isinstance(raw, dict) and raw.get("subscribe") is not None:
                raw["subscribe"] = self.env_subst(raw["subscribe"], "users.streams.subscribe")
            streams = parse_streams(raw, requests, self.fail)
        return UsersSpec(
            wait_s=wait,
            requests=requests,
            locustfile=locustfile,
            headers=headers,
            secret_values=redaction.ordered(self.secrets),
            streams=streams,
        )

    def request(self, r: Any, key: str) -> RequestSpec:
        allowed = {
            "name",
            "method",
            "path",
            "json",
            "params",
            "headers",
            "weight",
            "capture",
            "expect_status",
        }
        if not isinstance(r, dict):
            raise self.fail(key, f"expected a mapping, got {_type(r)}")
        self.known(r, key, allowed)
        method = self.string(r, f"{key}.method", "GET").upper()
        if method not in _METHODS:
            raise self.fail(
                f"{key}.method", f"must be one of {', '.join(_METHODS)}, got {method!r}"
            )
        path = self.string(r, f"{key}.path", None)
        if path is None:
            raise self.fail(f"{key}.path", "required (e.g. /orderbook/BTC-USDT)")
        path = self.env_subst(path, f"{key}.path")
        if not path.startswith("/") or path.startswith("//") or "://" in path.split("?", 1)[0]:
            raise self.fail(
                f"{key}.path",
                f"{path!r}: must be a path on the target starting with '/', not a URL",
            )
        if any(ch in re.sub(r"\{\{.*?\}\}", "", path) for ch in "\r\n\t "):
            raise self.fail(f"{key}.path", "must not contain spaces or line breaks")
        name = self.string(r, f"{key}.name", None) or f"{method} {path}"
        if len(name) > 200:
            raise self.fail(f"{key}.name", "longer than 200 characters")
        if _CONTROL_RE.search(name):  # they would reach terminals and CI logs
            raise self.fail(f"{key}.name", "must not contain control characters")
        params = r.get("params")
        if params is not None and not isinstance(params, dict):
            raise self.fail(f"{key}.params", f"expected a mapping, got {_type(params)}")
        capture = r.get("capture")
        if capture is not None and (
            not isinstance(capture, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in capture.items())
        ):
            raise self.fail(f"{key}.capture", "expected a mapping of names to JSON paths")
        expect = r.get("expect_status", [])
        if isinstance(expect, int) and not isinstance(expect, bool):
            expect = [expect]
        if not isinstance(expect, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in expect
        ):
            raise self.fail(f"{key}.expect_status", "expected an HTTP status or a list of them")
        return RequestSpec(
            name=name,
            method=method,
            path=path,
            weight=self.integer(r, f"{key}.weight", 1, lo=1),
            json=self.env_subst(r.get("json"), f"{key}.json"),
            params=self.env_subst(params, f"{key}.params") if params is not None else None,
            headers=self.headers(r.get("headers"), f"{key}.headers") or None,
            capture=dict(capture) if capture else None,
            expect_status=tuple(expect),
        )

    def ramp(self, data: dict[str, Any]) -> RampSpec:
        allowed = {
            "strategy",
            "start_users",
            "step_users",
            "max_users",
            "step_seconds",
            "settle_seconds",
            "resolution",
            "min_samples",
            "max_step_seconds",
            "cooldown_seconds",
        }
        r = self.section(data, "ramp", allowed)
        d = RampSpec()
        ramp = RampSpec(
            strategy=self.choice(r, "ramp.strategy", d.strategy, ("linear", "adaptive")),  # type: ignore[arg-type]
            start_users=self.integer(r, "ramp.start_users", d.start_users),
            step_users=self.integer(r, "ramp.step_users", d.step_users),
            max_users=self.integer(r, "ramp.max_users", d.max_users),
            step_seconds=self.number(
                r, "ramp.step_seconds", d.step_seconds, lo=0, lo_open=True, hi=3600
            ),
            settle_seconds=self.number(r, "ramp.settle_seconds", None, hi=3600),
            resolution=self.number(r, "ramp.resolution", d.resolution, lo=0, lo_open=True, hi=1),
            min_samples=self.integer(r, "ramp.min_samples", d.min_samples, lo=0),
            max_step_seconds=self.number(
                r, "ramp.max_step_seconds", None, lo=0, lo_open=True, hi=3600
            ),
            cooldown_seconds=self.number(r, "ramp.cooldown_seconds", d.cooldown_seconds, hi=3600),
        )
        return check_ramp(ramp, lambda key, msg: self.fail(key, msg))

    def slo(self, data: dict[str, Any]) -> Slo:
        keys = {"p95_ms", "error_rate", "event_p95_ms", "event_loss_rate"}
        s = self.section(data, "slo", keys)
        if not s:
            raise self.fail("slo", "required: at least slo.p95_ms")
        p95 = self.number(s, "slo.p95_ms", None, lo=0, lo_open=True, hi=3_600_000)
        if p95 is None:
            raise self.fail("slo.p95_ms", "required (the latency SLO in milliseconds)")
        return Slo(
            p95_ms=p95,
            error_rate=self.number(s, "slo.error_rate", 0.01, hi=1),
            event_p95_ms=self.number(s, "slo.event_p95_ms", None, lo=0, lo_open=True, hi=3_600_000),
            event_loss_rate=self.number(s, "slo.event_loss_rate", None, hi=1),
        )

    def gate(self, data: dict[str, Any]) -> GateSpec:
        g = self.section(
            data,
            "gate",
            {
                "min_users",
                "max_regression",
                "block_min_regression",
                "budget_minutes",
                "interleave",
                "max_drift",
                "drift_releases",
            },
        )
        max_reg = self.number(g, "gate.max_regression", 0.10, hi=1)
        block_min = self.number(g, "gate.block_min_regression", min(0.05, max_reg), hi=1)
        if block_min > max_reg:
            raise self.fail(
                "gate.block_min_regression",
                f"must be ≤ gate.max_regression ({max_reg:g}), got {block_min:g}",
            )
        return GateSpec(
            min_users=self.integer(g, "gate.min_users", None),
            max_regression=max_reg,
            block_min_regression=block_min,
            budget_minutes=self.number(g, "gate.budget_minutes", 8.0, lo=0.5, hi=240),
            interleave=self.choice(  # type: ignore[arg-type]
                g, "gate.interleave", "simultaneous", ("simultaneous", "alternate")
            ),
            max_drift=self.number(g, "gate.max_drift", None, lo=0, lo_open=True, hi=0.9),
            drift_releases=self.integer(g, "gate.drift_releases", 10, lo=1),
        )

    def load(self, data: dict[str, Any]) -> LoadSpec:
        lo = self.section(
            data, "load", {"workers", "request_timeout_s", "placement", "worker_image"}
        )
        workers = self.integer(lo, "load.workers", 1)
        if workers > MAX_WORKERS:  # each is a Python process with Locust: a typo forks a swarm
            raise self.fail("load.workers", f"must be ≤ {MAX_WORKERS}, got {workers}")
        placement = self.choice(lo, "load.placement", "local", ("local", "kubernetes"))
        worker_image = self.string(lo, "load.worker_image", None)
        if worker_image is not None and (not worker_image.strip() or "\n" in worker_image):
            raise self.fail("load.worker_image", "expected an image reference")
        if placement == "kubernetes":
            provider = (data.get("staging") or {}).get("provider")
            if provider != "kubernetes":
                raise self.fail(
                    "load.placement",
                    "kubernetes needs staging.provider kubernetes "
                    "(the worker pods run in the staging namespace)",
                )
            if worker_image is None:
                # the target's image rarely has perfgate and Locust: no silent fallback to it
                raise self.fail(
                    "load.worker_image",
                    "required when load.placement is kubernetes "
                    "(an image with perfgate installed, e.g. built from the repository)",
                )
        return LoadSpec(
            workers=workers,
            request_timeout_s=self.number(
                lo, "load.request_timeout_s", 10.0, lo=0, lo_open=True, hi=600
            ),
            placement=placement,  # type: ignore[arg-type]
            worker_image=worker_image.strip() if worker_image else None,
        )

    def metrics(self, data: dict[str, Any]) -> MetricsSpec:
        m = self.section(data, "metrics", {"prometheus", "enabled"})
        enabled = m.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self.fail("metrics.enabled", f"expected true or false, got {_type(enabled)}")
        p = self.section(m, "metrics.prometheus", {"url", "queries"})
        if not p:
            return MetricsSpec(enabled=enabled)
        url = self.string(p, "metrics.prometheus.url", None)
        if not url or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise self.fail("metrics.prometheus.url", "required: the server's http(s) URL")
        queries = p.get("queries")
        if not isinstance(queries, dict) or not queries:
            raise self.fail(
                "metrics.prometheus.queries", "required: a mapping of names to PromQL queries"
            )
        return MetricsSpec(
            enabled=enabled,
            prometheus=PrometheusSpec(
                url=url.rstrip("/"),
                queries=tuple(self.prom_query(str(k), v) for k, v in queries.items()),
            ),
        )

    def prom_query(self, name: str, value: Any) -> PromQuery:
        key = f"metrics.prometheus.queries.{name}"
        if isinstance(value, str):
            value = {"query": value}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a PromQL string or a mapping, got {_type(value)}")
        self.known(value, key, {"query", "limit", "unit"})
        query = self.string(value, f"{key}.query", None)
        if not query or not query.strip():
            raise self.fail(f"{key}.query", "required: a PromQL query")
        problem = promql_problem(query)
        if problem:
            raise self.fail(f"{key}.query", problem)
        return PromQuery(
            name=name,
            query=query.strip(),
            limit=self.number(value, f"{key}.limit", None, lo=0, lo_open=True),
            unit=self.string(value, f"{key}.unit", "") or "",
        )


def check_ramp(ramp: RampSpec, fail: Callable[[str, str], Exception]) -> RampSpec:
    """Cross-field ramp checks, shared by the file and the CLI overrides."""
    if ramp.max_users < ramp.start_users:
        raise fail(
            "ramp.max_users",
            f"must be ≥ ramp.start_users ({ramp.start_users}), got {ramp.max_users}",
        )
    if ramp.max_users > MAX_USERS:
        raise fail("ramp.max_users", f"must be ≤ {MAX_USERS}, got {ramp.max_users}")
    if ramp.step_users > MAX_USERS:
        raise fail("ramp.step_users", f"must be ≤ {MAX_USERS}, got {ramp.step_users}")
    # the file's values are bounded when read; a CLI override (--step-seconds inf) is not
    if not ramp.step_seconds <= MAX_STEP_SECONDS:
        raise fail(
            "ramp.step_seconds", f"must be ≤ {MAX_STEP_SECONDS:g}, got {ramp.step_seconds:g}"
        )
    if ramp.settle_seconds is not None and ramp.settle_seconds >= ramp.step_seconds:
        raise fail(
            "ramp.settle_seconds",
            f"must be shorter than ramp.step_seconds ({ramp.step_seconds:g})",
        )
    if ramp.max_step_seconds is not None and ramp.max_step_seconds < ramp.step_seconds:
        raise fail(
            "ramp.max_step_seconds",
            f"must be ≥ ramp.step_seconds ({ramp.step_seconds:g})",
        )
    return ramp


def _type(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


def _closest(word: str, options: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.7)
    return f" (did you mean {match[0]!r}?)" if match else ""
