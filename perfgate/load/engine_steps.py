"""The engine's step loop: users up or down, settle, a measuring window, one ``step_done``.

Locust's library API (``Environment`` + a runner, :mod:`perfgate.load.engine_runners`), with
``runner.start(n, spawn_rate=n)`` per step; Locust never resets its stats while running, and we
never read them anyway: the :class:`~perfgate.load.engine_record.RequestListener` records.

With workers, each records with the same :class:`~perfgate.load.engine_record.StepRecorder`;
the master opens and closes the measuring window with a ``pg_window`` custom message, every
worker answers ``pg_result`` with its ``StepRecorder.snapshot()``, and the master combines them
with :func:`perfgate.load.protocol.merge_step_results` into one ``step_done``: the parent cannot
tell the difference. Workers also send a ``pg_tick`` every second (counts and a histogram of the
second) for the master's ticks. ``user_index`` stays unique across workers: ``local index ×
workers + worker index``.
"""

# isort: off
import locust  # noqa: F401  first, as in every engine module (see perfgate.load.engine)

# isort: on
import math
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import gevent
from locust.exception import RPCError

from perfgate.histogram import Histogram
from perfgate.load import protocol
from perfgate.load.engine_process import exit_now
from perfgate.load.engine_record import RequestListener, StepRecorder
from perfgate.load.engine_runners import (
    WORKER_CONNECT_S,
    EngineFailure,
    WorkerProcesses,
    create_environment,
    wait_for,
)
from perfgate.load.engine_stream import SINK
from perfgate.load.engine_users import load_users
from perfgate.load.protocol import merge_step_results

LAG_PROBE_S = 0.05
WORKER_RESULT_S = 10.0  # every worker's pg_result after the window closed
SPAWN_WAIT_S = 10.0  # users that die in on_start never arrive; measure anyway after this

_perf = time.perf_counter


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
        self.config = config
        self.users = load_users(config)
        self.user_classes = self.users.classes
        self.secrets = self.users.secrets
        self.listener = RequestListener(self.users.expects)
        SINK.listener = self.listener  # event streams file their outcomes into its windows
        self.t0 = _perf()
        self.env, self.runner = create_environment(
            config, self.users, self.listener, role, bind=bind, master=master
        )
        self.pool = WorkerProcesses(self.runner, external_workers)
        self.running = False
        self.target_users = 0
        self._tick_cpu = 0.0  # master: the busiest worker's CPU in the last second
        self._tick_hist = Histogram()  # master: merged latencies of the last second
        self._step_id = 0
        self._window_samples = 0  # master: completions reported by workers while recording
        self._window_open = False
        self._results: dict[str, dict[str, Any]] = {}
        if role == "master":
            self.runner.register_message("pg_result", self._on_result)
            self.runner.register_message("pg_tick", self._on_worker_tick)
        elif role == "worker":
            self.runner.register_message("pg_window", self._on_window)
        self.env.events.init.fire(environment=self.env, runner=self.runner, web_ui=None)

    # -- background greenlets ------------------------------------------------------------------

    def ticker(self) -> None:
        """Every second: emit a tick (local, master) or send one to the master (worker)."""
        next_t = _perf() + 1.0
        cpu_prev, wall_prev = time.process_time(), _perf()
        while True:
            gevent.sleep(max(0.0, next_t - _perf()))
            now = _perf()
            next_t = max(next_t + 1.0, now + 0.5)  # never burst ticks after a stall
            n, fail, lat = self.listener.take_tick()
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
                    "recording": self.listener.rec is not None or self._window_open,
                }
            )

    def lag_probe(self) -> None:
        """Measure event-loop lag: how late a short sleep wakes up (recorded per step)."""
        while True:
            start = _perf()
            gevent.sleep(LAG_PROBE_S)
            lag_ms = max(0.0, (_perf() - start - LAG_PROBE_S) * 1000.0)
            rec = self.listener.rec
            if rec is not None:
                rec.lags_ms.append(lag_ms)
                rec.ev_backlog_sum += SINK.pending
                rec.ev_backlog_n += 1

    def watch_workers(self) -> None:
        """Background check: a dead worker fails the run at once, not at the next step's end."""
        while True:
            gevent.sleep(0.25)
            try:
                self.check_workers()
            except EngineFailure as exc:
                self.emit({"type": protocol.ERROR, "kind": "engine", "message": str(exc)})
                self.shutdown()
                exit_now(1)

    # -- distributed: master side --------------------------------------------------------------

    @property
    def external_workers(self) -> int:
        """Workers started by others (pods) that this master waits for; 0 otherwise."""
        return self.pool.external

    @property
    def workers(self) -> list[Any]:
        """The worker processes this master started (``subprocess.Popen``)."""
        return self.pool.processes

    def start_workers(self, count: int, config_line: bytes) -> None:
        """Start ``count`` worker processes and wait until all have connected."""
        self.pool.start(count, config_line)

    def wait_external_workers(self, timeout_s: float = WORKER_CONNECT_S) -> None:
        """Wait until the expected workers (pods) have connected; EngineFailure after a while."""
        self.pool.wait_external(timeout_s)

    def check_workers(self) -> None:
        """Raise EngineFailure if a worker process has exited (or a worker pod disconnected)."""
        self.pool.check()

    def _on_result(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        if data.get("step") == self._step_id:
            self._results[msg.node_id] = data["result"]

    def _on_worker_tick(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        n = int(data.get("n", 0))
        self.listener.tick_n += n
        self.listener.tick_fail += int(data.get("fail", 0))
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
            self.listener.rec = StepRecorder(_perf())
            return
        rec, self.listener.rec = self.listener.rec, None
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
        """Run one ``step`` command to its ``step_done`` (a hold when it does not record)."""
        n = int(cmd["users"])
        settle_s, min_s, max_s = float(cmd["settle_s"]), float(cmd["min_s"]), float(cmd["max_s"])
        min_samples = int(cmd["min_samples"])
        t_start = _perf()
        self._set_users(n)
        if not cmd["record"]:
            self._hold_done(n, t_start, max_s)
            return
        self._sleep_until(t_start + settle_s)
        spawn_deadline = _perf() + SPAWN_WAIT_S
        while self.runner.user_count != n and _perf() < spawn_deadline:
            gevent.sleep(0.01)
        self.check_workers()
        window_start = _perf()
        rec = self._open_window(window_start)
        self._sleep_until(window_start + min_s)
        hard_end = window_start + max_s
        while self._samples(rec) < min_samples and _perf() < hard_end:
            gevent.sleep(min(0.02, max(0.0, hard_end - _perf())))
        end = _perf()
        if rec is not None:
            self.listener.rec = None
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

    def _hold_done(self, n: int, t_start: float, max_s: float) -> None:
        """A step that does not record: run ``max_s`` seconds, then say so."""
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

    def _open_window(self, window_start: float) -> StepRecorder | None:
        """Start recording: here (the recorder returned) or on every worker (None)."""
        rec: StepRecorder | None = None
        if self.role == "master":
            self._step_id += 1
            self._results = {}
            self._window_samples = 0
            self._window_open = True
            self.runner.send_message("pg_window", {"step": self._step_id, "open": True})
        else:
            rec = self.listener.rec = StepRecorder(window_start)
        self.emit({"type": protocol.WINDOW, "t": round(window_start - self.t0, 3)})
        return rec

    def _collect_results(self) -> dict[str, Any]:
        """Master: close the window on every worker and merge their step results."""
        self.runner.send_message("pg_window", {"step": self._step_id, "open": False})
        self._window_open = False
        expected = self.runner.worker_count
        wait_for(
            lambda: len(self._results) >= expected,
            timeout_s=WORKER_RESULT_S,
            check=self.check_workers,
            failure=lambda: (
                f"only {len(self._results)} of {expected} load workers sent their step "
                f"results within {WORKER_RESULT_S:g} s"
            ),
            poll_s=0.01,
        )
        merged = merge_step_results(list(self._results.values()))
        merged["workers"] = len(self._results)
        return merged

    def shutdown(self) -> None:
        """Stop the users and the runner, then the worker processes (best effort)."""
        self.pool.stopping = True
        try:
            self.runner.quit()
        except Exception:  # quitting is best effort: the process exits right after
            traceback.print_exc(file=sys.stderr)
        self.pool.reap()
