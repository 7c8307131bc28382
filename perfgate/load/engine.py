"""The load engine: Locust in a child process, spoken to in JSON lines (`-m perfgate.load.engine`).

Why a child process (decided once, for the whole project): ``import locust`` monkey-patches the
process with gevent. In the CLI process that would freeze every virtual user whenever the CLI
does CPU work (rendering a chart, JSON, Kubernetes watches) and report the freeze as latency, and
it crashes with RecursionError when ``urllib3``/``requests``/``kubernetes`` were imported first.
So the CLI never imports locust; :class:`perfgate.load.runner.LocustRunner` starts this module in
its own process group and talks to it with :mod:`perfgate.load.protocol`.

Rules for this file:

- ``import locust`` is its FIRST import (the package ``__init__`` modules that ``-m`` runs before
  it import only stdlib and ``perfgate.errors``; a test checks both).
- From perfgate it imports only ``perfgate.load.protocol``, ``.templates``,
  ``perfgate.histogram`` and ``perfgate.models`` (all stdlib-only).
- stdout carries protocol lines only: file descriptor 1 is moved aside at start and pointed at
  stderr, so a ``print`` in a user's locustfile cannot corrupt the protocol. Locust's logging
  goes to stderr at WARNING level, with repeated messages throttled.

How it measures: Locust's library API (``Environment`` + ``create_local_runner()``), with
``runner.start(n, spawn_rate=n)`` per step; Locust never resets its stats while running, and we
never read them anyway. Every completed request reaches :meth:`Engine.on_request` (an
``events.request`` listener), which files it by completion time into the current step's
per-endpoint histograms (successes only for latency), counts and error messages. Completions
during the settle period and between steps are discarded. The overall histogram is the merge of
the endpoint histograms, built once at step end.

Users are either a ``FastHttpUser`` subclass generated from the scenario's weighted requests
(``wait_time = constant(users.wait_s)``, templates from :mod:`perfgate.load.templates`, failure
= an exception or a status outside ``expect_status`` / outside 2xx–3xx) or the User classes of
``users.locustfile`` (failure = the request event's exception, i.e. whatever Locust and the
locustfile's ``catch_response`` decided).

Distributed mode (``"workers": N`` ≥ 2 in the config, ``LoadSpec.workers``) uses Locust's own
master/worker runners. This process becomes the master: ``create_master_runner`` bound to
127.0.0.1 on a free port, no users of its own. It starts N workers, ``python -m
perfgate.load.engine --worker 127.0.0.1 PORT``, in its own process group (so the parent's group
kill covers them), hands each the same config line on stdin, and keeps that pipe open: a worker
exits when its master's pipe closes. Users are dispatched by ``runner.start`` as usual. Each
worker records with the same :class:`StepRecorder`; the master opens and closes the measuring
window with a ``pg_window`` custom message, every worker answers ``pg_result`` with its
``StepRecorder.snapshot()``, and the master combines them with
:func:`perfgate.load.protocol.merge_step_results` into one ``step_done``: the parent cannot
tell the difference. Workers also send a ``pg_tick`` every second (counts and a histogram of the
second) for the master's ticks. A worker that exits during the run is an engine error.
``user_index`` stays unique across workers: ``local index × workers + worker index``.

Engines in pods (``load.placement: kubernetes``, docs/kubernetes.md): the master runs in a pod
too, ``python -m perfgate.load.engine --master --config FILE``; it binds Locust's port on every
interface (workers connect through a Service) and a control port on 127.0.0.1 only, reached by
a port-forward through the API server; a connection there is one session of this protocol
(:func:`perfgate.load.protocol.relay_main` is the parent's end). It starts no worker processes:
it waits, after the session's config line, for the config file's number of workers to connect
(too few within ``WORKER_CONNECT_S`` is an engine error naming how many did), and a worker that
disconnects later fails the run. The session's config line only supplies the protocol version;
users, URL and timeouts come from the file, which the workers read too. Workers in pods run
``--worker HOST PORT --config FILE``: no stdin to watch, so a worker quits when the master's
heartbeats stop for ``POD_MASTER_TIMEOUT_S`` (Locust's own check, shortened).
"""

# isort: off
import locust  # must stay first: gevent monkey-patching (see the module docstring)

# isort: on
import heapq
import importlib.util
import logging
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import gevent
from gevent.fileobject import FileObjectPosix
from gevent.lock import Semaphore
from gevent.queue import Queue
from locust import FastHttpUser, User, constant, task
from locust import runners as locust_runners
from locust.env import Environment
from locust.exception import RPCError

from perfgate.histogram import Histogram
from perfgate.load import protocol
from perfgate.load.protocol import merge_step_results
from perfgate.load.templates import (
    MISSING,
    CompiledRequest,
    RequestPicker,
    UserContext,
    compile_requests,
    compile_template,
)
from perfgate.models import UsersSpec, from_jsonable

MAX_ENDPOINTS = 200  # distinct (method, name) pairs per step; more go to "(other)"
MAX_ERROR_KINDS = 100  # distinct error messages per step; more go to "(other errors)"
MAX_ERROR_CHARS = 200
TOP_ERRORS = 10
LAG_PROBE_S = 0.05
WORKER_START_S = 60.0  # all workers connected, or the engine fails
WORKER_CONNECT_S = 45.0  # pods: less than LocustRunner's 60-s start timeout, so this error wins
POD_MASTER_TIMEOUT_S = 15.0  # a worker in a pod quits after this long without master heartbeats
POD_MASTER_PORT = 5557  # Locust's default
POD_CONTROL_PORT = 5558
WORKER_RESULT_S = 10.0  # every worker's pg_result after the window closed
SPAWN_WAIT_S = 10.0  # users that die in on_start never arrive; measure anyway after this

_perf = time.perf_counter


class ScenarioInputError(Exception):
    """The scenario's users cannot be built (broken locustfile, bad template)."""


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


class EndpointRecord:
    """One (method, name) within one step."""

    __slots__ = ("failures", "hist", "method", "name", "requests")

    def __init__(self, method: str, name: str) -> None:
        self.method = method
        self.name = name
        self.hist = Histogram()
        self.requests = 0
        self.failures = 0


class StepRecorder:
    """Everything recorded in one step's measuring window (bounded memory)."""

    __slots__ = (
        "cpu0",
        "endpoints",
        "errors",
        "failures",
        "lags_ms",
        "latency_sum_ms",
        "per_second",
        "requests",
        "user_errors",
        "window_start",
    )

    def __init__(self, window_start: float) -> None:
        self.window_start = window_start
        self.cpu0 = time.process_time()
        self.endpoints: dict[tuple[str, str], EndpointRecord] = {}
        self.errors: dict[str, int] = {}
        self.requests = 0
        self.failures = 0
        self.latency_sum_ms = 0.0
        self.per_second: list[int] = []
        self.lags_ms: list[float] = []
        self.user_errors = 0

    def endpoint(self, method: str, name: str) -> EndpointRecord:
        key = (method, name)
        if len(self.endpoints) >= MAX_ENDPOINTS:
            key = (method, "(other)")
            found = self.endpoints.get(key)
            if found is not None:
                return found
        rec = self.endpoints[key] = EndpointRecord(*key)
        return rec

    def note_error(self, message: str) -> None:
        errors = self.errors
        if message not in errors and len(errors) >= MAX_ERROR_KINDS:
            message = "(other errors)"
        errors[message] = errors.get(message, 0) + 1

    def snapshot(self, end: float, secrets: tuple[str, ...]) -> dict[str, Any]:
        """The step's results as protocol fields (histograms serialised, errors redacted)."""
        duration = end - self.window_start
        wall = max(duration, 1e-9)
        overall = Histogram.merged(e.hist for e in self.endpoints.values())
        merged_errors: dict[str, int] = {}
        for message, n in self.errors.items():
            clean = redact(message, secrets)
            merged_errors[clean] = merged_errors.get(clean, 0) + n
        top = sorted(merged_errors.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]
        full_seconds = int(duration)
        per_second = (self.per_second + [0] * full_seconds)[:full_seconds]
        lags = sorted(self.lags_ms)
        lag95 = lags[max(0, math.ceil(0.95 * len(lags)) - 1)] if lags else 0.0
        return {
            "t_window": None,  # filled by the caller (run clock)
            "duration_s": duration,
            "requests": self.requests,
            "failures": self.failures,
            "latency_sum_ms": self.latency_sum_ms,
            "histogram": overall.to_dict(),
            "endpoints": [
                {
                    "name": redact(e.name, secrets),
                    "method": e.method,
                    "requests": e.requests,
                    "failures": e.failures,
                    "histogram": e.hist.to_dict(),
                }
                for e in self.endpoints.values()
            ],
            "errors": [[m, n] for m, n in top],
            "user_errors": self.user_errors,
            "per_second": per_second,
            "cpu_percent": 100.0 * (time.process_time() - self.cpu0) / wall,
            "loop_lag_p95_ms": lag95,
        }


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret value in ``text`` with ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _failure_message(
    method: str, name: str, response: Any, exception: BaseException | None, expected: Any
) -> str:
    status = getattr(response, "status_code", 0) or 0
    if status and (exception is None or type(exception).__name__ in _STATUS_ERRORS):
        detail = f"HTTP {status}"
        if expected:
            detail += f" (expected {', '.join(str(s) for s in sorted(expected))})"
    elif exception is not None:
        # URLs carry ids (and sometimes tokens): without them, equal errors count as one.
        text = _URL.sub(_url_placeholder, " ".join(str(exception).split()))
        detail = f"{type(exception).__name__}: {text}" if text else type(exception).__name__
    else:
        detail = "failed"
    message = f"{method} {name}: {detail}"
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return message


_URL = re.compile(r"https?://[^\s,'\"]+")


def _url_placeholder(match: re.Match[str]) -> str:
    return "<url>:" if match.group(0).endswith(":") else "<url>"


# Exception types Locust's clients raise for a bad status (FastHttpUser, HttpUser).
_STATUS_ERRORS = frozenset(("LocustBadStatusCode", "HTTPError"))


# ---------------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------------


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


class IndexLayout:
    """How a process's local user index maps to the global one (unique across workers)."""

    __slots__ = ("offset", "stride")

    def __init__(self) -> None:
        self.stride = 1
        self.offset = 0


def build_scenario_user(
    users: UsersSpec, request_timeout_s: float, layout: IndexLayout | None = None
) -> type[FastHttpUser]:
    """A FastHttpUser subclass that runs the scenario's weighted request mix."""
    index_layout = layout or IndexLayout()
    try:
        compiled = compile_requests(users.requests)
        global_headers = (
            compile_template(dict(users.headers), "users.headers") if users.headers else None
        )
    except ValueError as exc:
        raise ScenarioInputError(str(exc)) from exc
    if not compiled:
        raise ScenarioInputError("users.requests is empty and no users.locustfile is set")
    static_headers = dict(users.headers) if global_headers and global_headers.constant else None
    dynamic_headers = global_headers if global_headers and not global_headers.constant else None
    any_needs = any(r.needs for r in compiled)
    shared_picker = RequestPicker(compiled)
    pool = _IndexPool()

    def send(user: Any, req: CompiledRequest, ctx: UserContext) -> Any:
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
        return user.client.request(req.method, req.path.render(ctx), name=req.name, **kwargs)

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

        def start(self, group: Any) -> Any:
            greenlet = super().start(group)
            index = self._local_index
            greenlet.link(lambda _g: pool.release(index))
            return greenlet

        @task
        def iteration(self) -> None:
            req = self._picker.pick()
            if req is None:  # unreachable: compile_requests guarantees a var-free request
                gevent.sleep(0.01)
                return
            ctx = self._ctx
            response = send(self, req, ctx)
            ctx.seq += 1
            if req.capture:
                self._capture(req, response)

        def _capture(self, req: CompiledRequest, response: Any) -> None:
            status = getattr(response, "status_code", 0) or 0
            ok = status in req.expect_status if req.expect_status else 200 <= status < 400
            if not ok:
                return
            try:
                data = response.json()
            except Exception:  # a body that is not JSON simply captures nothing
                return
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


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class EngineFailure(Exception):
    """The engine cannot go on (a worker died, a worker did not answer)."""


class Engine:
    """Runs steps on a Locust runner and reports them through ``emit``.

    ``role`` is ``local`` (one process, the default), ``master`` (dispatches users to worker
    processes it starts, merges their step results) or ``worker`` (runs users for a master,
    records, and answers the master's window messages; emits nothing on stdout).
    """

    def __init__(
        self,
        config: dict[str, Any],
        emit: Callable[[dict[str, Any]], None],
        *,
        role: str = "local",
        master: tuple[str, int] | None = None,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        external_workers: int = 0,
    ) -> None:
        self.emit = emit
        self.role = role
        self.external_workers = external_workers  # master: workers started by others (pods)
        self._workers_ready = False
        self.config = config
        users = from_jsonable(UsersSpec, config["users"])
        self.secrets = tuple(sorted((s for s in users.secret_values if s), key=len, reverse=True))
        timeout_s = float(config.get("request_timeout_s") or 60.0)
        self.layout = IndexLayout()
        if users.locustfile:
            self.user_classes = load_locustfile(users.locustfile, users.wait_s)
            self._expects: dict[tuple[str, str], frozenset[int]] = {}
        else:
            self.user_classes = [build_scenario_user(users, timeout_s, self.layout)]
            self._expects = {
                (spec.method.upper(), spec.name): frozenset(spec.expect_status)
                for spec in users.requests
                if spec.expect_status
            }
        self.env = Environment(
            user_classes=self.user_classes,
            host=str(config["url"]).rstrip("/"),
            events=locust.events,  # module-level listeners of a locustfile bind to this one
            catch_exceptions=True,
        )
        self.rec: StepRecorder | None = None
        self.running = False
        self.target_users = 0
        self.t0 = _perf()
        self._tick_n = 0
        self._tick_fail = 0
        self._tick_lat: list[float] = []
        self._tick_cpu = 0.0  # master: the busiest worker's CPU in the last second
        self._tick_hist = Histogram()  # master: merged latencies of the last second
        self._step_id = 0
        self._window_samples = 0  # master: completions reported by workers while recording
        self._window_open = False
        self._results: dict[str, dict[str, Any]] = {}
        self.workers: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        if role == "local":
            self.runner: Any = self.env.create_local_runner()
        elif role == "master":
            self.runner = self.env.create_master_runner(bind[0], bind[1])
            self.runner.register_message("pg_result", self._on_result)
            self.runner.register_message("pg_tick", self._on_worker_tick)
        elif role == "worker":
            assert master is not None
            self.runner = self.env.create_worker_runner(master[0], master[1])
            self.runner.register_message("pg_window", self._on_window)
            workers = max(1, int(config.get("workers") or 1))
            self.layout.stride, self.layout.offset = workers, max(0, self.runner.worker_index)
        else:
            raise ValueError(f"unknown engine role {role!r}")
        if not config.get("locust_stats", False) and config.get("web_ui_port") is None:
            _drop_locust_stats_listener(self.env)
        if role != "master":
            self.env.events.request.add_listener(self.on_request)
            self.env.events.user_error.add_listener(self.on_user_error)
        self.env.events.init.fire(environment=self.env, runner=self.runner, web_ui=None)

    # -- hot path ------------------------------------------------------------------------------

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int = 0,
        response: Any = None,
        context: Any = None,
        exception: BaseException | None = None,
        **_kwargs: Any,
    ) -> None:
        ok = exception is None
        expected = None
        if self._expects:
            expected = self._expects.get((request_type, name))
            if expected is not None:
                ok = (getattr(response, "status_code", 0) or 0) in expected
        self._tick_n += 1
        if ok:
            self._tick_lat.append(response_time)
        else:
            self._tick_fail += 1
        rec = self.rec
        if rec is None:
            return
        key = (request_type, name)
        ep = rec.endpoints.get(key)
        if ep is None:
            ep = rec.endpoint(request_type, name)
        ep.requests += 1
        rec.requests += 1
        rec.latency_sum_ms += response_time
        if ok:
            ep.hist.record(response_time)
        else:
            ep.failures += 1
            rec.failures += 1
            rec.note_error(_failure_message(request_type, name, response, exception, expected))
        second = int(_perf() - rec.window_start)
        per_second = rec.per_second
        while len(per_second) <= second:
            per_second.append(0)
        per_second[second] += 1

    def on_user_error(self, user_instance: Any, exception: BaseException, tb: Any) -> None:
        rec = self.rec
        if rec is None:
            return
        rec.user_errors += 1
        text = " ".join(str(exception).split())
        rec.note_error(f"user error: {type(exception).__name__}: {text}"[:MAX_ERROR_CHARS])

    # -- background greenlets ------------------------------------------------------------------

    def ticker(self) -> None:
        """Every second: emit a tick (local, master) or send one to the master (worker)."""
        next_t = _perf() + 1.0
        cpu_prev, wall_prev = time.process_time(), _perf()
        while True:
            gevent.sleep(max(0.0, next_t - _perf()))
            now = _perf()
            next_t = max(next_t + 1.0, now + 0.5)  # never burst ticks after a stall
            lat, self._tick_lat = self._tick_lat, []
            n, fail = self._tick_n, self._tick_fail
            self._tick_n = self._tick_fail = 0
            cpu = time.process_time()
            cpu_pct = 100.0 * (cpu - cpu_prev) / max(now - wall_prev, 1e-9)
            cpu_prev, wall_prev = cpu, now
            if self.role == "worker":
                hist = Histogram()
                hist.record_many(lat)
                with suppress(RPCError):
                    self.runner.send_message(
                        "pg_tick", {"n": n, "fail": fail, "hist": hist.to_dict(), "cpu": cpu_pct}
                    )
                continue
            p95 = None
            if self.role == "master":
                hist, self._tick_hist = self._tick_hist, Histogram()
                p95 = hist.percentile(95)
                cpu_pct, self._tick_cpu = max(cpu_pct, self._tick_cpu), 0.0
            elif lat:
                lat.sort()
                p95 = lat[max(0, math.ceil(0.95 * len(lat)) - 1)]
            if not self.running:
                continue
            self.emit(
                {
                    "type": protocol.TICK,
                    "t": round(now - self.t0, 3),
                    "users": self.runner.user_count,
                    "completions": n,
                    "failures": fail,
                    "p95_ms": p95,
                    "cpu_percent": round(cpu_pct, 1),
                    "recording": self.rec is not None or self._window_open,
                }
            )

    def lag_probe(self) -> None:
        """Measure event-loop lag: how late a short sleep wakes up (recorded per step)."""
        while True:
            start = _perf()
            gevent.sleep(LAG_PROBE_S)
            lag_ms = max(0.0, (_perf() - start - LAG_PROBE_S) * 1000.0)
            rec = self.rec
            if rec is not None:
                rec.lags_ms.append(lag_ms)

    # -- distributed: master side --------------------------------------------------------------

    def start_workers(self, count: int, config_line: bytes) -> None:
        """Start ``count`` worker processes and wait until all have connected."""
        port = self.runner.server.port
        command = [sys.executable, "-m", "perfgate.load.engine", "--worker", "127.0.0.1", str(port)]
        for _ in range(count):
            # Same process group as this master; stdout is fd 1, i.e. our stderr by now.
            worker = subprocess.Popen(command, stdin=subprocess.PIPE)
            assert worker.stdin is not None
            worker.stdin.write(config_line)
            worker.stdin.flush()
            self.workers.append(worker)
        deadline = _perf() + WORKER_START_S
        while self.runner.worker_count < count:
            self.check_workers()
            if _perf() > deadline:
                raise EngineFailure(
                    f"only {self.runner.worker_count} of {count} load workers connected "
                    f"within {WORKER_START_S:g} s"
                )
            gevent.sleep(0.05)

    def wait_external_workers(self, timeout_s: float = WORKER_CONNECT_S) -> None:
        """Wait until the expected workers (pods) have connected; EngineFailure after a while."""
        count = self.external_workers
        deadline = _perf() + timeout_s
        while self.runner.worker_count < count:
            if _perf() > deadline:
                namespace = os.environ.get("PERFGATE_NAMESPACE")
                where = f"kubectl -n {namespace} " if namespace else "kubectl "
                raise EngineFailure(
                    f"only {self.runner.worker_count} of {count} load workers connected within "
                    f"{timeout_s:g} s (their logs: {where}logs "
                    "-l app.kubernetes.io/component=load-generator; --keep-namespace keeps them)"
                )
            gevent.sleep(0.05)
        self._workers_ready = True

    def check_workers(self) -> None:
        """Raise EngineFailure if a worker process has exited (or a worker pod disconnected)."""
        if self._stopping:
            return
        if self._workers_ready and self.runner.worker_count < self.external_workers:
            raise EngineFailure(
                f"a load worker disconnected: {self.runner.worker_count} of "
                f"{self.external_workers} still connected (a worker pod restarted or was evicted?)"
            )
        for i, worker in enumerate(self.workers):
            code = worker.poll()
            if code is not None:
                how = f"on {_signal_name(-code)}" if code < 0 else f"with code {code}"
                raise EngineFailure(f"load worker {i + 1} of {len(self.workers)} exited {how}")

    def watch_workers(self) -> None:
        """Background check: a dead worker fails the run at once, not at the next step's end."""
        while True:
            gevent.sleep(0.25)
            try:
                self.check_workers()
            except EngineFailure as exc:
                self.emit({"type": protocol.ERROR, "kind": "engine", "message": str(exc)})
                self.shutdown()
                _exit(1)

    def _on_result(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        if data.get("step") == self._step_id:
            self._results[msg.node_id] = data["result"]

    def _on_worker_tick(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        n = int(data.get("n", 0))
        self._tick_n += n
        self._tick_fail += int(data.get("fail", 0))
        self._tick_cpu = max(self._tick_cpu, float(data.get("cpu", 0.0)))
        with suppress(ValueError, TypeError):
            self._tick_hist.merge(Histogram.from_dict(data.get("hist") or {}))
        if self._window_open:
            self._window_samples += n

    # -- distributed: worker side --------------------------------------------------------------

    def _on_window(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        if data.get("open"):
            self._step_id = int(data["step"])
            self.rec = StepRecorder(_perf())
            return
        rec, self.rec = self.rec, None
        if rec is None or int(data.get("step", -1)) != self._step_id:
            return
        snapshot = rec.snapshot(_perf(), self.secrets)
        self.runner.send_message("pg_result", {"step": self._step_id, "result": snapshot})

    # -- steps ---------------------------------------------------------------------------------

    def _set_users(self, n: int) -> None:
        if n == self.target_users and self.running:
            return
        if n == 0:
            self.runner.stop()
            self.running = False
        else:
            # One dispatch batch for ramp-ups and ramp-downs alike (the rate is users per second).
            self.runner.start(n, spawn_rate=max(n, self.runner.user_count, 1))
            self.running = True
        self.target_users = n

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - _perf()
        if remaining > 0:
            gevent.sleep(remaining)

    def _samples(self, rec: StepRecorder | None) -> int:
        return rec.requests if rec is not None else self._window_samples

    def run_step(self, cmd: dict[str, Any]) -> None:
        n = int(cmd["users"])
        settle_s, min_s, max_s = float(cmd["settle_s"]), float(cmd["min_s"]), float(cmd["max_s"])
        min_samples = int(cmd["min_samples"])
        t_start = _perf()
        self._set_users(n)
        if not cmd["record"]:
            self._sleep_until(t_start + max_s)
            self.check_workers()
            self.emit(
                {
                    "type": protocol.STEP_DONE,
                    "record": False,
                    "users": n,
                    "active_users": self.runner.user_count,
                    "t_start": round(t_start - self.t0, 3),
                    "t_end": round(_perf() - self.t0, 3),
                }
            )
            return
        self._sleep_until(t_start + settle_s)
        spawn_deadline = _perf() + SPAWN_WAIT_S
        while self.runner.user_count != n and _perf() < spawn_deadline:
            gevent.sleep(0.01)
        self.check_workers()
        window_start = _perf()
        rec: StepRecorder | None = None
        if self.role == "master":
            self._step_id += 1
            self._results = {}
            self._window_samples = 0
            self._window_open = True
            self.runner.send_message("pg_window", {"step": self._step_id, "open": True})
        else:
            rec = self.rec = StepRecorder(window_start)
        self.emit({"type": protocol.WINDOW, "t": round(window_start - self.t0, 3)})
        self._sleep_until(window_start + min_s)
        hard_end = window_start + max_s
        while self._samples(rec) < min_samples and _perf() < hard_end:
            gevent.sleep(min(0.02, max(0.0, hard_end - _perf())))
        end = _perf()
        if rec is not None:
            self.rec = None
            result = rec.snapshot(end, self.secrets)
        else:
            result = self._collect_results()
        result.update(
            {
                "type": protocol.STEP_DONE,
                "record": True,
                "users": n,
                "active_users": self.runner.user_count,
                "t_start": round(t_start - self.t0, 3),
                "t_window": round(window_start - self.t0, 3),
                "t_end": round(end - self.t0, 3),
            }
        )
        self.emit(result)

    def _collect_results(self) -> dict[str, Any]:
        """Master: close the window on every worker and merge their step results."""
        self.runner.send_message("pg_window", {"step": self._step_id, "open": False})
        self._window_open = False
        expected = self.runner.worker_count
        deadline = _perf() + WORKER_RESULT_S
        while len(self._results) < expected:
            self.check_workers()
            if _perf() > deadline:
                raise EngineFailure(
                    f"only {len(self._results)} of {expected} load workers sent their step "
                    f"results within {WORKER_RESULT_S:g} s"
                )
            gevent.sleep(0.01)
        merged = merge_step_results(list(self._results.values()))
        merged["workers"] = len(self._results)
        return merged

    def shutdown(self) -> None:
        self._stopping = True
        try:
            self.runner.quit()
        except Exception:  # quitting is best effort: the process exits right after
            traceback.print_exc(file=sys.stderr)
        for worker in self.workers:
            with suppress(Exception):
                if worker.stdin is not None:
                    worker.stdin.close()
        deadline = _perf() + 3.0
        for worker in self.workers:
            try:
                worker.wait(timeout=max(0.1, deadline - _perf()))
            except subprocess.TimeoutExpired:
                worker.kill()
                with suppress(Exception):
                    worker.wait(timeout=2.0)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _drop_locust_stats_listener(env: Environment) -> None:
    """Remove Locust's own stats listener: perfgate never reads those stats (saves CPU/request)."""
    handlers = env.events.request._handlers
    for handler in list(handlers):
        if getattr(handler, "__qualname__", "").endswith("Runner.__init__.<locals>.on_request"):
            handlers.remove(handler)


# ---------------------------------------------------------------------------------------------
# Process plumbing
# ---------------------------------------------------------------------------------------------


class _QuietFilter(logging.Filter):
    """Drop Locust's per-step spawn-rate warning and throttle repeated messages."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            first = record.getMessage().split("\n", 1)[0][:200]
        except Exception:
            return True
        if first.startswith("Your selected spawn rate is very high"):
            return False
        n = self._seen.get(first, 0) + 1
        if len(self._seen) < 10_000:
            self._seen[first] = n
        if n <= 3:
            return True
        if n & (n - 1) == 0:  # powers of two: keep a trace of how often it repeats
            record.msg, record.args = f"(repeated {n} times) {first}", None
            record.exc_info = None
            return True
        return False


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_QuietFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.WARNING))


def _raise_fd_limit() -> None:
    # locust's CLI does this too (one socket per user); a library user must do it itself.
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 10_000 if hard == resource.RLIM_INFINITY else min(hard, 10_000)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        pass


def _claim_stdout() -> Any:
    """Keep the real stdout for protocol lines; point fd 1 (and sys.stdout) at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return FileObjectPosix(proto_fd, "wb", close=True)


def main(argv: list[str] | None = None) -> int:
    """Serve the parent: config, then steps until quit or EOF.

    ``--worker HOST PORT [--config FILE]``: a worker. ``--master --config FILE``: a master in a
    pod, serving one session on its control port (see the module docstring).
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--worker"]:
        return _worker_cli(args[1:])
    if args[:1] == ["--master"]:
        return pod_master_main(args[1:])
    out = _claim_stdout()
    _setup_logging("WARNING")
    _raise_fd_limit()

    def emit(message: dict[str, Any]) -> None:
        out.write(protocol.encode(message).encode("utf-8"))
        out.flush()

    def finish(code: int) -> None:
        try:
            out.flush()
        finally:
            _exit(code)

    def make(config: dict[str, Any]) -> Engine:
        workers = max(1, int(config.get("workers") or 1))
        return Engine(config, emit, role="master" if workers > 1 else "local")

    return _serve(FileObjectPosix(0, "rb", close=False), None, emit, finish, make)


def _serve(
    reader: Any,
    first_line: bytes | None,
    emit: Callable[[dict[str, Any]], None],
    finish: Callable[[int], None],
    make: Callable[[dict[str, Any]], Engine],
    connect_timeout_s: float = WORKER_CONNECT_S,
) -> int:
    """One session of the protocol: config (``first_line`` if already read), ready, steps."""

    def fail(exc: BaseException, engine: Engine | None) -> None:
        if not isinstance(exc, EngineFailure):
            traceback.print_exc(file=sys.stderr)
        one_line = " ".join(
            (str(exc) if isinstance(exc, EngineFailure) else f"{type(exc).__name__}: {exc}").split()
        )
        emit({"type": protocol.ERROR, "kind": "engine", "message": one_line})
        if engine is not None:
            engine.shutdown()
        finish(1)

    engine: Engine | None = None
    try:
        line = first_line if first_line is not None else reader.readline()
        config = protocol.decode(line, kinds=protocol.COMMANDS)
        if config["cmd"] != protocol.CONFIG:
            raise protocol.ProtocolError("the first line must be a config")
        if config.get("version") != protocol.PROTOCOL_VERSION:
            raise protocol.ProtocolError(f"protocol version {config.get('version')} unsupported")
        _setup_logging(str(config.get("log_level") or "WARNING"))
        engine = make(config)
        if engine.external_workers:
            if config.get("web_ui_port") is not None:
                raise EngineFailure("Locust's web UI needs load.placement local")
            engine.wait_external_workers(connect_timeout_s)
        elif engine.role == "master":
            engine.start_workers(max(1, int(config.get("workers") or 1)), line)
    except ScenarioInputError as exc:
        emit({"type": protocol.ERROR, "kind": "scenario", "message": str(exc)})
        finish(2)
        return 2
    except Exception as exc:
        fail(exc, engine)
        return 1

    web_url = None
    if config.get("web_ui_port") is not None:
        # `perfgate ramp --ui`: Locust's own web UI drives the users; no steps are run
        port = int(config["web_ui_port"])
        try:
            engine.env.create_web_ui(host="127.0.0.1", port=port)
        except Exception as exc:
            emit({"type": protocol.ERROR, "kind": "web_ui", "message": f"web UI: {exc}"})
            finish(1)
            return 1
        web_url = f"http://127.0.0.1:{port}"
    emit(
        {
            "type": protocol.READY,
            "web_ui": web_url,
            "version": protocol.PROTOCOL_VERSION,
            "pid": os.getpid(),
            "locust": locust.__version__,
            "user_classes": [cls.__name__ for cls in engine.user_classes],
            "workers": engine.external_workers or len(engine.workers) or 1,
            "worker_pids": [w.pid for w in engine.workers],
            "remote": bool(engine.external_workers),
        }
    )
    steps: Queue = Queue()

    def read_commands() -> None:
        assert engine is not None
        while True:
            line = reader.readline()
            if not line:  # the parent went away: never outlive it
                engine.shutdown()
                finish(0)
            try:
                cmd = protocol.decode(line, kinds=protocol.COMMANDS)
            except protocol.ProtocolError as exc:
                emit({"type": protocol.ERROR, "kind": "engine", "message": f"bad command: {exc}"})
                engine.shutdown()
                finish(1)
                return
            if cmd["cmd"] == protocol.QUIT:
                engine.shutdown()
                emit({"type": protocol.BYE})
                finish(0)
            steps.put(cmd)

    gevent.spawn(engine.ticker)
    gevent.spawn(engine.lag_probe)
    gevent.spawn(read_commands)
    if engine.workers or engine.external_workers:
        gevent.spawn(engine.watch_workers)
    while True:
        cmd = steps.get()
        try:
            engine.run_step(cmd)
        except Exception as exc:
            fail(exc, engine)


def _pod_args(prog: str, args: list[str], *, worker: bool) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m perfgate.load.engine {prog}")
    if worker:
        parser.add_argument("host")
        parser.add_argument("port", type=int)
        parser.add_argument("--config", help="config.json of a pod (stdin when absent)")
        parser.add_argument("--master-timeout", type=float, default=POD_MASTER_TIMEOUT_S)
    else:
        parser.add_argument("--config", required=True, help="config.json of a pod")
        parser.add_argument("--bind", default="*", help="where workers connect (Locust's port)")
        parser.add_argument("--port", type=int, default=POD_MASTER_PORT)
        parser.add_argument("--control-port", type=int, default=POD_CONTROL_PORT)
        parser.add_argument("--connect-timeout", type=float, default=WORKER_CONNECT_S)
    return parser.parse_args(args)


def _worker_cli(args: list[str]) -> int:
    opts = _pod_args("--worker", args, worker=True)
    return worker_main(opts.host, opts.port, opts.config, master_timeout_s=opts.master_timeout)


def _read_pod_config(path: str) -> dict[str, Any]:
    try:
        return protocol.read_pod_config(path)
    except protocol.ProtocolError as exc:
        print(f"perfgate load engine: {exc}", file=sys.stderr)
        _exit(2)
        raise  # unreachable: _exit does not return


def pod_master_main(args: list[str]) -> int:
    """A master in a pod: Locust's port for the worker pods, one protocol session on control."""
    import socket  # gevent-patched by locust's import

    sys.stdout = sys.stderr  # a container's stdout is its log: nothing but logs goes there
    opts = _pod_args("--master", args, worker=False)
    _setup_logging("WARNING")
    _raise_fd_limit()
    config = _read_pod_config(opts.config)
    _setup_logging(str(config.get("log_level") or "WARNING"))
    workers = max(1, int(config.get("workers") or 1))
    lock = Semaphore()
    conn: Any = None

    def emit(message: dict[str, Any]) -> None:
        if conn is None:
            return
        data = protocol.encode(message).encode("utf-8")
        with lock:  # greenlets (ticker, steps) must not interleave their lines
            conn.sendall(data)

    try:
        # the control port opens before Locust's: the readiness probe on Locust's port then
        # also means the port-forward target is listening
        listener = socket.create_server(("127.0.0.1", opts.control_port))
        engine = Engine(
            config,
            emit,
            role="master",
            bind=(opts.bind, opts.port),
            external_workers=workers,
        )
    except ScenarioInputError as exc:
        print(f"perfgate load master: {exc}", file=sys.stderr)
        _exit(2)
        return 2
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        _exit(1)
        return 1
    print(
        f"perfgate load master: Locust on {opts.bind}:{opts.port} for {workers} worker(s), "
        f"control on 127.0.0.1:{opts.control_port}",
        file=sys.stderr,
    )
    while True:
        candidate, _ = listener.accept()
        candidate.settimeout(30.0)  # a client that connects and says nothing must not block us
        reader = candidate.makefile("rb")
        try:
            first = reader.readline()
        except OSError:
            first = b""
        if first:
            candidate.settimeout(None)
            conn = candidate
            break
        # a connection that closes without a line is a probe (e.g. the port-forward check)
        with suppress(OSError):
            candidate.close()
    listener.close()

    def finish(code: int) -> None:
        with suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        _exit(code)

    return _serve(reader, first, emit, finish, lambda _config: engine, opts.connect_timeout)


def worker_main(
    master_host: str,
    master_port: int,
    config_path: str | None = None,
    *,
    master_timeout_s: float = POD_MASTER_TIMEOUT_S,
) -> int:
    """A distributed worker: users for the master; exits when the master goes away.

    Config on stdin (a local worker: exits when stdin closes) or from ``config_path`` (a pod:
    exits when the master's heartbeats stop for ``master_timeout_s``).
    """
    sys.stdout = sys.stderr  # fd 1 is the master's stderr (or the pod's log): never protocol
    _setup_logging("WARNING")
    _raise_fd_limit()
    stdin = FileObjectPosix(0, "rb", close=False)
    if config_path is not None:
        config = _read_pod_config(config_path)
        # Locust reads this module global on every check: the default (60 s) keeps an orphaned
        # pod busy for a minute
        locust_runners.MASTER_HEARTBEAT_TIMEOUT = master_timeout_s  # type: ignore[assignment]
    try:
        if config_path is None:
            config = protocol.decode(stdin.readline(), kinds=protocol.COMMANDS)
        _setup_logging(str(config.get("log_level") or "WARNING"))
        engine = Engine(config, lambda _m: None, role="worker", master=(master_host, master_port))
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        _exit(1)
        return 1

    def watch_master() -> None:
        while stdin.readline():
            pass
        engine.shutdown()  # the master (or its pipe) is gone
        _exit(0)

    gevent.spawn(engine.ticker)
    gevent.spawn(engine.lag_probe)
    if config_path is None:
        gevent.spawn(watch_master)
    engine.runner.greenlet.join()  # returns when the master sends quit (or stops heartbeating)
    _exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
