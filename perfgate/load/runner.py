"""``LocustRunner``: the parent side of the load engine (a ``StepRunner``, docs/ARCHITECTURE.md).

The CLI process never imports locust (see :mod:`perfgate.load.engine` for why). This class
starts ``sys.executable -m perfgate.load.engine`` in a new session (its own process group), sends
it the config and one command per step over stdin, and reads JSON lines back
(:mod:`perfgate.load.protocol`) on a reader thread; the engine's stderr is drained on another
thread and its last lines are kept for error messages.

Usage::

    with LocustRunner(url, scenario.users, scenario.slo, scenario.load, on_event=show) as r:
        stats = r.measure(40, settle_s=2.5, min_s=7.5, max_s=7.5, min_samples=0, phase="ramp")
        r.hold(10, 3.0)
    r.timeline  # TimelinePoint per engine tick (1 s)

``LoadSpec.workers`` ≥ 2 makes the engine run Locust's master/worker runners with that many
worker processes (see :mod:`perfgate.load.engine`); nothing else changes for the caller.

With ``load.placement: kubernetes`` the engine runs in pods: :func:`pod_files` writes what the
pods read (ConfigMap and Secret data), the kubernetes provider starts them and port-forwards to
the master, and ``LocustRunner(..., engine_command=relay_command("127.0.0.1", port))`` talks to
it through :func:`perfgate.load.protocol.relay_main`. The engine's ``ready`` then says
``"remote": true``: CPU comes from the engine's own figures (psutil here would see the relay).
``r.ready`` holds the engine's ``ready`` message (Locust version, user classes, worker pids).

``measure`` returns a :class:`perfgate.models.StepStats` built from the engine's histograms:
throughput = (successes + failures) / measured seconds; p50/p95/p99/mean/max of successful
requests; a distribution-free 95 % CI of p95; the SLO check (fails on p95 above the SLO, on an
error rate above the SLO, and when there was no successful request at all), per-endpoint
stats, the top error messages, 1-s stalls, and :class:`GeneratorHealth`:

- ``cpu_percent``: CPU of the busiest engine process during the window, % of one core,
  measured here with psutil on the child's pid and its worker processes (with
  ``LoadSpec.workers`` ≥ 2; the engine's own figure is the fallback);
- ``little_ratio`` = throughput × (mean latency of all completions + think time) / users —
  ≈ 1 when every user is always inside a request (closed model); lower means users wait on the
  generator (greenlet run queue), not on the target;
- ``limited`` when cpu > 85 % of one core, or (generated users only; a locustfile's own waits
  are unknown) ``little_ratio`` < 0.85; ``reason`` says which.

``on_event`` receives :mod:`perfgate.events` records on the caller's thread, for a live display:

- :class:`~perfgate.events.StepStarted` when a step is sent (``record`` False, ``step`` None and
  phase ``"hold"`` for :meth:`hold`), with its timings and the SLO;
- :class:`~perfgate.events.Tick` once a second: the engine's last second (``p95_ms`` None
  without successes; ``step``/``phase`` None for ticks that arrived between steps;
  ``elapsed_s`` since the step or hold began);
- :class:`~perfgate.events.StepDone` with the step's ``StepStats`` (None for a hold).

An exception raised by ``on_event`` (e.g. KeyboardInterrupt) propagates out of ``measure``;
leaving the ``with`` block then stops the engine.

Failures: the engine dying, writing a line that is not protocol, or not answering within
``settle_s + max_s + answer_margin_s`` raise :class:`perfgate.errors.LoadError` with the last
line of its stderr; a locustfile or template the engine cannot load raises
:class:`perfgate.errors.ScenarioError`. ``close()`` (also on any exception, including
KeyboardInterrupt) sends ``quit``, waits ~3 s, then SIGTERMs and finally SIGKILLs the whole
process group, and reaps the child: no orphans. The group is signalled while the engine is
still an unreaped zombie, so its process-group id cannot have been reused.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress as _suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil

from perfgate import redaction
from perfgate.errors import LoadError, ScenarioError
from perfgate.events import Event, EventSink, StepDone, StepStarted, Tick
from perfgate.histogram import Histogram
from perfgate.load import protocol
from perfgate.load.stream_probe import probe_stream
from perfgate.models import (
    EndpointStats,
    ErrorKind,
    EventStats,
    LoadSpec,
    Slo,
    StepStats,
    TimelinePoint,
    UsersSpec,
    to_jsonable,
)
from perfgate.steps import event_stats, judge_step, rate

QUIT_WAIT_S = 3.0
TERM_WAIT_S = 2.0
STDERR_LINES = 50

# Transitional: the pipeline still types its sinks as taking dicts (it passes one sink to both
# itself and this runner); until it takes perfgate.events.Event, accept any one-argument
# callable. It is only ever called with perfgate.events records.

# What the reader threads queue for _next: a decoded engine message, an undecodable line's
# error, or the end of the engine's stdout.
_Incoming = (
    tuple[Literal["msg"], dict[str, Any]]
    | tuple[Literal["garbage"], str]
    | tuple[Literal["eof"], None]
)


LOCAL_ENGINE = (sys.executable, "-m", "perfgate.load.engine")


def step_stats_from_message(
    msg: dict[str, Any],
    *,
    slo: Slo,
    users_spec: UsersSpec,
    index: int,
    phase: str,
    cpu_percent: float | None = None,
) -> StepStats:
    """Turn an engine ``step_done`` message into a StepStats (pure; used by LocustRunner)."""
    try:
        hist = Histogram.from_dict(msg["histogram"])
        requests = int(msg["requests"])
        failures = int(msg["failures"])
        duration = float(msg["duration_s"])
        users = int(msg["users"])
        endpoint_msgs = msg["endpoints"]
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"load engine sent a malformed step result ({exc})") from exc
    endpoints: list[EndpointStats] = []
    for e in endpoint_msgs:
        eh = Histogram.from_dict(e["histogram"])
        n, nf = int(e["requests"]), int(e["failures"])
        endpoints.append(
            EndpointStats(
                name=str(e["name"]),
                method=str(e["method"]),
                requests=n,
                failures=nf,
                throughput_rps=rate(n, duration),
                p50_ms=eh.percentile(50),
                p95_ms=eh.percentile(95),
                p99_ms=eh.percentile(99),
                mean_ms=eh.mean,
                error_rate=nf / n if n else 0.0,
            )
        )
    endpoints.sort(key=lambda ep: (ep.name, ep.method))
    step = judge_step(
        hist,
        users=users,
        duration_s=duration,
        requests=requests,
        failures=failures,
        latency_sum_ms=float(msg.get("latency_sum_ms", 0.0)),
        per_second=msg.get("per_second", ()),
        slo=slo,
        users_spec=users_spec,
        cpu_percent=float(msg.get("cpu_percent", 0.0)) if cpu_percent is None else cpu_percent,
        loop_lag_ms=float(msg.get("loop_lag_p95_ms", 0.0)),
        index=index,
        phase=phase,
        started_s=float(msg.get("t_window") or 0.0),
        endpoints=tuple(endpoints),
        errors=tuple((str(m), int(n)) for m, n in msg.get("errors", ())),
        events=_events_of(msg, users_spec),
    )
    return dataclasses.replace(
        step,
        error_kinds=tuple(
            ErrorKind(method=str(m), name=str(n), kind=str(k), count=int(c), first_s=float(f))
            for m, n, k, c, f in msg.get("error_kinds", ())
        ),
        bytes_sent=int(msg.get("bytes_sent", 0)),
        bytes_received=int(msg.get("bytes_received", 0)),
    )


def _events_of(msg: dict[str, Any], users_spec: UsersSpec) -> EventStats | None:
    """The step's awaited events (None unless the users stream them)."""
    ev = msg.get("events")
    if users_spec.streams is None and not (ev and (ev.get("received") or ev.get("lost"))):
        return None  # a locustfile's EventStream reports through the same fields
    ev = ev or {}
    try:
        read_lag = Histogram.from_dict(ev.get("read_lag") or {})
        return event_stats(
            Histogram.from_dict(ev.get("histogram") or {}),
            lost=int(ev.get("lost", 0)),
            stream_errors=int(ev.get("errors", 0)),
            backlog_mean=float(ev.get("backlog_mean", 0.0)),
            read_lag_p95_ms=read_lag.percentile(95),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise LoadError(f"load engine sent malformed step events ({exc})") from exc


def _package_root() -> str:
    import perfgate

    return str(Path(perfgate.__file__).resolve().parent.parent)


def engine_env() -> dict[str, str]:
    """The environment of an engine child: this perfgate first on its path, unbuffered."""
    env = dict(os.environ)
    root = _package_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LocustRunner:
    """Runs closed-model Locust users against ``url`` one load level at a time (StepRunner)."""

    def __init__(
        self,
        url: str,
        users: UsersSpec,
        slo: Slo,
        load: LoadSpec | None = None,
        *,
        on_event: EventSink | None = None,
        startup_timeout_s: float = 60.0,
        answer_margin_s: float = 30.0,
        engine_command: Sequence[str] | None = None,
        log_level: str = "WARNING",
        web_ui_port: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.web_ui_port = web_ui_port
        self.users_spec = users
        self.slo = slo
        self.load = load or LoadSpec()
        self.on_event = on_event
        self.startup_timeout_s = startup_timeout_s
        self.answer_margin_s = answer_margin_s
        self.engine_command = tuple(engine_command or LOCAL_ENGINE)
        self.log_level = log_level
        self._secrets = redaction.ordered(users.secret_values)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        self._messages: queue.Queue[_Incoming] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads: list[threading.Thread] = []
        self._timeline: list[TimelinePoint] = []
        self._timeline_lock = threading.Lock()
        self._steps = 0
        self._closed = False
        self._broken = False  # the engine misbehaved: skip the polite quit on close
        self._current: tuple[int | None, str | None] = (None, None)  # (step, phase) of ticks
        self.ready: dict[str, Any] = {}

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> LocustRunner:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The engine's pid (also its process-group id), or None before start."""
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        """Whether the engine process is still running."""
        return not self._exited()

    @property
    def timeline(self) -> tuple[TimelinePoint, ...]:
        """One point per engine tick (1 s) since start, measured or not."""
        with self._timeline_lock:
            return tuple(self._timeline)

    @property
    def stderr_tail(self) -> tuple[str, ...]:
        """The engine's last stderr lines (secrets redacted)."""
        return tuple(self._redact(line) for line in self._stderr)

    def start(self) -> None:
        """Start the engine and wait until it has loaded the users (raises on failure)."""
        if self._proc is not None:
            raise RuntimeError("LocustRunner already started")
        if self.engine_command == LOCAL_ENGINE:  # engines in pods reach the target, maybe not we
            probe_stream(self.url, self.users_spec)
        env = engine_env()
        try:
            self._proc = subprocess.Popen(
                self.engine_command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=env,
                bufsize=0,
            )
        except OSError as exc:
            raise LoadError(f"cannot start the load engine ({exc})") from exc
        try:
            try:
                self._ps = psutil.Process(self._proc.pid)
            except psutil.Error:
                self._ps = None
            self._spawn_reader(self._read_stdout, "perfgate-engine-stdout")
            self._spawn_reader(self._read_stderr, "perfgate-engine-stderr")
            self._send(
                engine_config(
                    self.url,
                    self.users_spec,
                    self.slo,
                    self.load,
                    log_level=self.log_level,
                    web_ui_port=self.web_ui_port,
                )
            )
            deadline = time.monotonic() + self.startup_timeout_s
            while True:
                msg = self._next(deadline, what=f"start within {self.startup_timeout_s:g} s")
                if msg["type"] == protocol.READY:
                    if msg.get("version") != protocol.PROTOCOL_VERSION:
                        self._broken = True
                        raise LoadError(
                            f"the load engine speaks protocol {msg.get('version')!r}, "
                            f"expected {protocol.PROTOCOL_VERSION}"
                        )
                    self.ready = msg
                    if msg.get("remote"):
                        self._ps = None  # the child is a relay: the pods report their own CPU
                    return
                if msg["type"] == protocol.TICK:
                    self._record_tick(msg)
                    continue
                raise LoadError(f"load engine sent {msg['type']!r} before 'ready'")
        except BaseException:
            self.close()
            raise

    def measure(
        self,
        users: int,
        *,
        settle_s: float,
        min_s: float,
        max_s: float,
        min_samples: int,
        phase: str = "ramp",
    ) -> StepStats:
        """Run ``users`` users, discard ``settle_s``, measure, and return the step's stats."""
        if users < 1:
            raise ValueError(f"users must be ≥ 1, got {users}")
        command = protocol.step_command(
            users=users,
            settle_s=settle_s,
            min_s=min_s,
            max_s=max_s,
            min_samples=min_samples,
            record=True,
        )
        self._drain()
        index = self._steps
        self._steps += 1
        self._begin(command, step=index, phase=phase)
        started = time.monotonic()
        self._send(command)
        deadline = started + settle_s + max_s + self.answer_margin_s
        what = f"finish a {users}-user step within {settle_s + max_s + self.answer_margin_s:g} s"
        window_cpu: dict[int, float] | None = None
        window_wall = 0.0
        while True:
            msg = self._next(deadline, what=what)
            kind = msg["type"]
            if kind == protocol.TICK:
                self._handle_tick(msg, started)
            elif kind == protocol.WINDOW:
                window_cpu, window_wall = msg.get("_cpu_s"), msg.get("_wall", 0.0)
            elif kind == protocol.STEP_DONE and msg.get("record"):
                break
            else:
                raise LoadError(f"load engine sent an unexpected {kind!r} during a step")
        cpu = None
        end_cpu, end_wall = msg.get("_cpu_s"), msg.get("_wall", 0.0)
        if window_cpu and end_cpu and end_wall > window_wall:
            # The busiest generator process limits: with workers, the master barely works.
            cpu = max(
                100.0 * (end_cpu[pid] - window_cpu[pid]) / (end_wall - window_wall)
                for pid in end_cpu
                if pid in window_cpu
            )
        stats = step_stats_from_message(
            msg, slo=self.slo, users_spec=self.users_spec, index=index, phase=phase, cpu_percent=cpu
        )
        self._current = (None, None)
        self._emit(StepDone(step=index, phase=phase, users=users, stats=stats))
        return stats

    def hold(self, users: int, seconds: float) -> None:
        """Run ``users`` users for ``seconds`` without recording (warm-up, cool-down)."""
        if users < 0:
            raise ValueError(f"users must be ≥ 0, got {users}")
        if seconds <= 0:
            return
        command = protocol.step_command(
            users=users, settle_s=0.0, min_s=seconds, max_s=seconds, min_samples=0, record=False
        )
        self._drain()
        self._begin(command, step=None, phase="hold")
        started = time.monotonic()
        self._send(command)
        deadline = started + seconds + self.answer_margin_s
        while True:
            msg = self._next(deadline, what=f"hold {users} users for {seconds:g} s")
            if msg["type"] == protocol.TICK:
                self._handle_tick(msg, started)
            elif msg["type"] == protocol.STEP_DONE and not msg.get("record"):
                break
            elif msg["type"] != protocol.WINDOW:
                raise LoadError(f"load engine sent an unexpected {msg['type']!r} during a hold")
        self._current = (None, None)
        self._emit(StepDone(step=None, phase="hold", users=users, stats=None))

    def close(self) -> None:
        """Stop the engine: quit, then SIGTERM, then SIGKILL its process group; always reaps."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is None:
            return
        try:
            if not self._exited() and not self._broken:
                with _suppress(LoadError):
                    self._send(protocol.quit_command())
            with _suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            if not self._wait_exit(0.0 if self._broken else QUIT_WAIT_S):
                self._signal_group(signal.SIGTERM)
                if not self._wait_exit(TERM_WAIT_S):
                    self._signal_group(signal.SIGKILL)
                    self._wait_exit(TERM_WAIT_S)
            # The leader is a zombie now (not reaped yet), so its group id is still ours:
            # kill anything a locustfile may have left running in the group.
            self._signal_group(signal.SIGKILL)
        finally:
            if not self._exited():
                # a signal landed before the escalation above finished: never leave the group
                with _suppress(Exception):
                    self._signal_group(signal.SIGKILL)
            with _suppress(Exception):
                proc.wait(timeout=5)
            for thread in self._threads:
                thread.join(timeout=2)
            for stream in (proc.stdout, proc.stderr):
                with _suppress(OSError):
                    if stream is not None:
                        stream.close()

    # -- internals -----------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _begin(self, command: dict[str, Any], *, step: int | None, phase: str) -> None:
        """Note the step (or hold) that ticks now belong to, and announce its ``step`` command."""
        self._current = (step, phase)
        self._emit(
            StepStarted(
                step=step,
                phase=phase,
                users=command["users"],
                record=command["record"],
                settle_s=command["settle_s"],
                min_s=command["min_s"],
                max_s=command["max_s"],
                min_samples=command["min_samples"],
                slo_p95_ms=self.slo.p95_ms,
                slo_error_rate=self.slo.error_rate,
            )
        )

    def _redact(self, text: str) -> str:
        return redaction.redact_text(text, self._secrets)

    def _spawn_reader(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        put = self._messages.put
        try:
            for raw in proc.stdout:
                try:
                    msg = protocol.decode(raw)
                except protocol.ProtocolError as exc:
                    put(("garbage", str(exc)))
                    continue
                if msg["type"] in (protocol.WINDOW, protocol.STEP_DONE):
                    # Sampled here, as the line arrives, so the CPU window matches the engine's.
                    msg["_wall"] = time.monotonic()
                    msg["_cpu_s"] = self._tree_cpu_s()
                elif msg["type"] == protocol.TICK:
                    self._record_tick(msg)
                put(("msg", msg))
        except (OSError, ValueError):  # the pipe was closed under us during close()
            pass
        put(("eof", None))

    def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        try:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._stderr.append(line)
        except (OSError, ValueError):
            pass

    def _tree_cpu_s(self) -> dict[int, float] | None:
        """CPU seconds of the engine and each of its worker processes, by pid."""
        if self._ps is None:
            return None
        out: dict[int, float] = {}
        try:
            procs = [self._ps, *self._ps.children(recursive=True)]
        except psutil.Error:
            return None
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            out[proc.pid] = float(times.user + times.system)
        return out

    def _record_tick(self, msg: dict[str, Any]) -> None:
        try:
            n = int(msg.get("completions", 0))
            fail = int(msg.get("failures", 0))
            point = TimelinePoint(
                t_s=float(msg["t"]),
                users=int(msg.get("users", 0)),
                throughput_rps=float(n),
                p95_ms=None if msg.get("p95_ms") is None else float(msg["p95_ms"]),
                error_rate=fail / n if n else 0.0,
            )
        except (KeyError, TypeError, ValueError):
            return  # a malformed tick only costs a timeline point
        with self._timeline_lock:
            self._timeline.append(point)

    def _handle_tick(self, msg: dict[str, Any], started: float) -> None:
        n = int(msg.get("completions", 0))
        fail = int(msg.get("failures", 0))
        step, phase = self._current
        self._emit(
            Tick(
                t_s=msg.get("t"),
                users=msg.get("users"),
                throughput_rps=float(n),
                p95_ms=msg.get("p95_ms"),
                failures=fail,
                error_rate=fail / n if n else 0.0,
                cpu_percent=msg.get("cpu_percent"),
                recording=bool(msg.get("recording")),
                step=step,
                phase=phase,
                elapsed_s=round(time.monotonic() - started, 1),
            )
        )

    def _drain(self) -> None:
        """Deliver ticks that arrived between steps (and surface a death or error right away)."""
        started = time.monotonic()
        while not self._messages.empty():
            msg = self._next(started, what="stay quiet between steps")
            if msg["type"] == protocol.TICK:
                self._handle_tick(msg, started)
            else:
                raise LoadError(f"the load engine sent an unexpected {msg['type']!r} between steps")

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise LoadError("the load engine is not running")
        try:
            proc.stdin.write(protocol.encode(message).encode("utf-8"))
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise LoadError(f"the load engine stopped listening{self._last_words()}") from exc

    def _next(self, deadline: float, *, what: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            incoming = self._messages.get(timeout=max(0.0, remaining))
        except queue.Empty:
            self._broken = True
            raise LoadError(f"the load engine did not {what}{self._last_words()}") from None
        if incoming[0] == "msg":
            payload = incoming[1]
            if payload["type"] == protocol.ERROR:
                message = self._redact(str(payload.get("message", "")))
                if payload.get("kind") == "scenario":
                    raise ScenarioError(message)
                raise LoadError(f"the load engine failed: {message}")
            return payload
        if incoming[0] == "garbage":
            self._broken = True
            raise LoadError(
                f"the load engine sent an unreadable line ({self._redact(incoming[1])})"
            )
        # EOF: the engine is gone.
        self._wait_exit(2.0)
        code = self._exit_code()
        how = f"with code {code}" if code is not None and code >= 0 else "unexpectedly"
        if code is not None and code < 0:
            with _suppress(ValueError):
                how = f"on {signal.Signals(-code).name}"
        raise LoadError(f"the load engine exited {how}{self._last_words()}")

    def _last_words(self) -> str:
        time.sleep(0.05)  # let the stderr thread catch up with the final lines
        for line in reversed(self._stderr):
            if line.strip():
                text = self._redact(line.strip())
                if len(text) > 300:
                    text = text[:299] + "…"
                return f": {text}"
        return ""

    def _exited(self) -> bool:
        """Whether the engine has exited, without reaping it (so its pgid stays reserved)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _exit_code(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is not None:
            return proc.returncode
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status

    def _wait_exit(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self._exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _signal_group(self, signum: int) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return  # reaped: the group id may belong to someone else now
        with _suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def engine_config(
    url: str,
    users: UsersSpec,
    slo: Slo,
    load: LoadSpec,
    *,
    log_level: str = "WARNING",
    web_ui_port: int | None = None,
) -> dict[str, Any]:
    """The engine's config line for ``users`` against ``url``: a local engine's and the pods'."""
    return protocol.config_message(
        url=url,
        users=to_jsonable(users),
        request_timeout_s=load.request_timeout_s,
        slo=to_jsonable(slo),
        workers=load.workers,
        log_level=log_level,
        web_ui_port=web_ui_port,
    )


def pod_files(
    url: str, users: UsersSpec, slo: Slo, load: LoadSpec
) -> tuple[dict[str, str], dict[str, str]]:
    """(ConfigMap data, Secret data) for load-generator pods that send ``users`` to ``url``.

    Header values and the scenario's secret values go to the Secret only (see
    :func:`perfgate.load.protocol.pod_files`); a locustfile travels as one file.
    """
    locustfile_text = None
    if users.locustfile:
        try:
            locustfile_text = Path(users.locustfile).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"users.locustfile {users.locustfile}: cannot read: {exc}") from exc
    secrets = list(users.secret_values)
    password = redaction.url_password(url)
    if password:
        secrets.append(password)
    try:
        config = engine_config(url.rstrip("/"), users, slo, load)
        return protocol.pod_files(config, secrets=tuple(secrets), locustfile_text=locustfile_text)
    except ValueError as exc:
        raise ScenarioError(f"load.placement kubernetes: {exc}") from exc


def relay_command(host: str, port: int) -> tuple[str, ...]:
    """The ``engine_command`` of a LocustRunner whose engine is a master in a pod."""
    return (sys.executable, "-m", "perfgate.load.protocol", "--relay", host, str(int(port)))


__all__ = [
    "LocustRunner",
    "pod_files",
    "relay_command",
    "step_stats_from_message",
]
