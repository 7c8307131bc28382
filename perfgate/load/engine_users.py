"""The engine's virtual users: generated from the scenario's requests, or a locustfile's.

Users are either a ``FastHttpUser`` subclass generated from the scenario's weighted requests
(``wait_time = constant(users.wait_s)``, templates from :mod:`perfgate.load.templates`, failure
= an exception or a status outside ``expect_status`` / outside 2xx–3xx) or the User classes of
``users.locustfile`` (failure = the request event's exception, i.e. whatever Locust and the
locustfile's ``catch_response`` decided).

A gate measures one target, so generated users never follow a redirect: a 3xx is the response
(a success unless ``expect_status`` says otherwise), and the scenario's headers never reach
another origin. ``load.request_timeout_s`` bounds each request as a whole (connect, send, the
whole answer): a target that trickles its answer a byte at a time fails the request with
:class:`RequestTimedOut`. A locustfile is code and decides both for itself.
"""

# isort: off
import locust  # noqa: F401  first, as in every engine module (see perfgate.load.engine)

# isort: on
import contextlib
import heapq
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import gevent
from locust import FastHttpUser, User, constant, task
from locust.contrib.fasthttp import FastHttpSession

from perfgate.load.engine_stream import EventStream, Rule, rule
from perfgate.load.stream_probe import stream_url
from perfgate.load.templates import (
    MISSING,
    CompiledRequest,
    RequestPicker,
    Template,
    UserContext,
    compile_capture,
    compile_requests,
    compile_template,
)
from perfgate.models import StreamSpec, UsersSpec, from_jsonable
from perfgate.redaction import ordered


class ScenarioInputError(Exception):
    """The scenario's users cannot be built (broken locustfile, bad template)."""


class RequestTimedOut(Exception):
    """A request that did not complete within ``load.request_timeout_s`` as a whole."""


class IndexLayout:
    """How a process's local user index maps to the global one (unique across workers)."""

    __slots__ = ("offset", "stride")

    def __init__(self) -> None:
        self.stride = 1
        self.offset = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Users:
    """What an engine process runs: the User classes and how their requests are judged."""

    classes: tuple[type[User], ...]
    expects: dict[tuple[str, str], frozenset[int]]  # (METHOD, name) → statuses; generated only
    secrets: tuple[str, ...]  # longest first, so that a secret inside another is redacted whole
    layout: IndexLayout  # a worker sets it once its master has given it an index


def load_users(config: dict[str, Any]) -> Users:
    """The users of an engine ``config`` (ScenarioInputError when they cannot be built)."""
    users = from_jsonable(UsersSpec, config["users"])
    secrets = ordered(users.secret_values)
    timeout_s = float(config.get("request_timeout_s") or 60.0)
    layout = IndexLayout()
    if users.locustfile:
        classes = load_locustfile(users.locustfile, users.wait_s)
        expects: dict[tuple[str, str], frozenset[int]] = {}
    else:
        classes = [build_scenario_user(users, timeout_s, layout)]
        expects = {
            (spec.method.upper(), spec.name): frozenset(spec.expect_status)
            for spec in users.requests
            if spec.expect_status
        }
    return Users(classes=tuple(classes), expects=expects, secrets=secrets, layout=layout)


class _IndexPool:
    """Hands out the smallest free 0-based user index; indexes are reused after ramp-down."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0

    def acquire(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        self._next += 1
        return self._next - 1

    def release(self, index: int) -> None:
        heapq.heappush(self._free, index)


def _compile_users(
    users: UsersSpec,
) -> tuple[tuple[CompiledRequest, ...], Template | None]:
    """The compiled request mix and common headers (ScenarioInputError when they are broken)."""
    try:
        compiled = compile_requests(users.requests)
        global_headers = (
            compile_template(dict(users.headers), "users.headers") if users.headers else None
        )
    except ValueError as exc:
        raise ScenarioInputError(str(exc)) from exc
    if not compiled:
        raise ScenarioInputError("users.requests is empty and no users.locustfile is set")
    return compiled, global_headers


def _send(
    user: Any, req: CompiledRequest, ctx: UserContext, dynamic_headers: Template | None
) -> Any:
    kwargs: dict[str, Any] = {}
    if req.json is not None:
        kwargs["json"] = req.json.render(ctx)
    if req.params is not None:
        kwargs["params"] = req.params.render(ctx)
    headers = req.headers.render(ctx) if req.headers is not None else None
    if dynamic_headers is not None:
        common = dynamic_headers.render(ctx)
        headers = {**common, **headers} if headers else common
    if headers:
        kwargs["headers"] = headers
    return user.client.request(
        req.method, req.path.render(ctx), name=req.name, allow_redirects=False, **kwargs
    )


def _send_within(
    user: Any,
    req: CompiledRequest,
    ctx: UserContext,
    dynamic_headers: Template | None,
    timeout_s: float,
) -> Any:
    """:func:`_send`, cut off after ``timeout_s`` in all; then a failed request, None returned.

    Locust records nothing for a request it did not finish, so the failure is recorded here;
    the interrupted connection is in an unknown state, so the user's connections are replaced.
    """
    started, wall = time.perf_counter(), time.time()
    try:
        with gevent.Timeout(timeout_s, RequestTimedOut):
            return _send(user, req, ctx, dynamic_headers)
    except RequestTimedOut:
        user.environment.events.request.fire(
            request_type=req.method,
            name=req.name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=0,
            response=None,
            context={},
            exception=RequestTimedOut(
                f"timed out: no complete answer within {timeout_s:g} s (load.request_timeout_s)"
            ),
            start_time=wall,
            url=None,
        )
        user.renew_client()
        return None


class _Streams:
    """A scenario's ``users.streams`` compiled: subscribe template, rules, which request awaits."""

    def __init__(self, spec: StreamSpec, headers: dict[str, str] | None) -> None:
        self.spec = spec
        try:
            self.subscribe = (
                compile_template(spec.subscribe, "users.streams.subscribe")
                if spec.subscribe is not None
                else None
            )
            self.rules: tuple[Rule, ...] = tuple(rule(e.event_id, e.match) for e in spec.expect)
            self.ids = {
                e.request: (i, compile_capture(e.id, f"users.streams.expect[{i}].id"))
                for i, e in enumerate(spec.expect)
            }
        except ValueError as exc:
            raise ScenarioInputError(str(exc)) from exc
        self.header = [f"{k}: {v}" for k, v in (headers or {}).items()]

    def open(self, host: str, ctx: UserContext) -> EventStream:
        spec = self.spec
        stream = EventStream(
            stream_url(host, spec.url),
            subscribe=self.subscribe.render(ctx) if self.subscribe is not None else None,
            rules=self.rules,
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            name=spec.url,
            header=self.header,
        )
        stream.start()
        return stream

    def await_event(
        self, stream: EventStream, req: CompiledRequest, data: Any, sent: float
    ) -> None:
        found = self.ids.get(req.name)
        if found is None:
            return
        value = found[1](data)
        if value is not MISSING and value is not None:
            stream.expect(value, sent, found[0], wait=self.spec.wait)


def _ok(req: CompiledRequest, response: Any) -> bool:
    status = getattr(response, "status_code", 0) or 0
    return status in req.expect_status if req.expect_status else 200 <= status < 400


def _renew_client(user: Any) -> None:
    """Fresh connections for ``user`` (after a request was cut off mid-answer); cookies kept."""
    old = user.client
    with contextlib.suppress(Exception):
        old.client.close()
    user.client = FastHttpSession(
        base_url=user.host,
        request_event=user.environment.events.request,
        network_timeout=user.network_timeout,
        connection_timeout=user.connection_timeout,
        max_redirects=user.max_redirects,
        max_retries=user.max_retries,
        insecure=user.insecure,
        concurrency=user.concurrency,
        user=user,
        client_pool=user.client_pool,
        ssl_context_factory=user.ssl_context_factory,
        headers=user.default_headers,
        proxy_host=user.proxy_host,
        proxy_port=user.proxy_port,
    )
    user.client.cookiejar = old.cookiejar
    user.client.client.cookiejar = old.cookiejar


def build_scenario_user(
    users: UsersSpec, request_timeout_s: float, layout: IndexLayout | None = None
) -> type[FastHttpUser]:
    """A FastHttpUser subclass that runs the scenario's weighted request mix."""
    index_layout = layout or IndexLayout()
    compiled, global_headers = _compile_users(users)
    static_headers = dict(users.headers) if global_headers and global_headers.constant else None
    dynamic_headers = global_headers if global_headers and not global_headers.constant else None
    any_needs = any(r.needs for r in compiled)
    shared_picker = RequestPicker(compiled)
    pool = _IndexPool()
    streams = _Streams(users.streams, static_headers) if users.streams is not None else None

    class ScenarioUser(FastHttpUser):
        wait_time = constant(users.wait_s)
        network_timeout = request_timeout_s
        connection_timeout = request_timeout_s
        default_headers = static_headers

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            self._local_index = pool.acquire()
            self._ctx = UserContext(self._local_index * index_layout.stride + index_layout.offset)
            self._picker = RequestPicker(compiled) if any_needs else shared_picker
            self._stream: EventStream | None = None

        def on_start(self) -> None:
            if streams is not None:
                self._stream = streams.open(self.host or "", self._ctx)

        def on_stop(self) -> None:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

        def start(self, group: Any) -> Any:
            greenlet = super().start(group)
            index = self._local_index
            greenlet.link(lambda _g: pool.release(index))
            greenlet.link(lambda _g: self.on_stop())  # a killed user's stream closes too
            return greenlet

        @task
        def iteration(self) -> None:
            req = self._picker.pick()
            if req is None:  # unreachable: compile_requests guarantees a var-free request
                gevent.sleep(0.01)
                return
            ctx = self._ctx
            sent = time.perf_counter()
            response = _send_within(self, req, ctx, dynamic_headers, request_timeout_s)
            ctx.seq += 1
            if response is None:  # cut off by the request timeout: a failure, nothing to read
                return
            stream = self._stream
            if (req.capture or stream is not None) and _ok(req, response):
                try:
                    data = response.json()
                except Exception:  # a body that is not JSON simply captures nothing
                    return
                if req.capture:
                    self._capture(req, data)
                if stream is not None and streams is not None:
                    streams.await_event(stream, req, data, sent)

        def renew_client(self) -> None:
            _renew_client(self)

        def _capture(self, req: CompiledRequest, data: Any) -> None:
            known = self._ctx.vars
            new = False
            for var, get in req.capture:
                value = get(data)
                if value is not MISSING:
                    new = new or var not in known
                    known[var] = value
            if new and any_needs:
                self._picker.refresh(frozenset(known))

    return ScenarioUser


def load_locustfile(path: str, wait_s: float) -> list[type[User]]:
    """The runnable User classes of a locustfile (its own module name, its folder on sys.path)."""
    directory = os.path.dirname(os.path.abspath(path))
    module_name = "perfgate_user_locustfile"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError("not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, directory)
        try:
            spec.loader.exec_module(module)
        finally:
            if sys.path and sys.path[0] == directory:
                del sys.path[0]
    except BaseException as exc:  # SystemExit from a locustfile is bad input too
        text = " ".join(str(exc).split()) or "(no message)"
        raise ScenarioInputError(
            f"users.locustfile {path} could not be loaded: {type(exc).__name__}: {text}"
        ) from exc
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, User) and value.abstract is False
    ]
    if not classes:
        raise ScenarioInputError(
            f"users.locustfile {path} defines no User class (subclass FastHttpUser or HttpUser)"
        )
    if wait_s > 0:
        for cls in classes:
            own = any(
                "wait_time" in vars(k) for k in cls.__mro__ if not k.__module__.startswith("locust")
            )
            if not own:
                cls.wait_time = constant(wait_s)
    return classes
