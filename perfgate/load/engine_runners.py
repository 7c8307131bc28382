"""Locust's Environment and runner for one engine process, and a master's worker processes.

``role`` ``local`` (the default) is one process: ``Environment.create_local_runner()``.
Distributed mode (``"workers": N`` ≥ 2 in the config, ``LoadSpec.workers``) uses Locust's own
master/worker runners. The parent's engine becomes the master: ``create_master_runner`` bound to
127.0.0.1 on a free port, no users of its own. It starts N workers, ``python -m
perfgate.load.engine --worker 127.0.0.1 PORT``, in its own process group (so the parent's group
kill covers them), hands each the same config line on stdin, and keeps that pipe open: a worker
exits when its master's pipe closes (:class:`WorkerProcesses`). A worker that exits during the
run is an engine error. In pods the master starts no processes: it waits for the config's
number of workers to connect, and one that disconnects later fails the run.
"""

# isort: off
import locust  # first, as in every engine module (see perfgate.load.engine)

# isort: on
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import gevent
from locust.env import Environment

from perfgate.load.engine_process import signal_name
from perfgate.load.engine_record import RequestListener
from perfgate.load.engine_users import Users

WORKER_START_S = 60.0  # all workers connected, or the engine fails
WORKER_CONNECT_S = 45.0  # pods: less than LocustRunner's 60-s start timeout, so this error wins

_perf = time.perf_counter


class EngineFailure(Exception):
    """The engine cannot go on (a worker died, a worker did not answer)."""


def create_environment(
    config: dict[str, Any],
    users: Users,
    listener: RequestListener,
    role: str,
    *,
    bind: tuple[str, int] = ("127.0.0.1", 0),
    master: tuple[str, int] | None = None,
) -> tuple[Environment, Any]:
    """Locust's Environment and the runner for ``role``, with perfgate's listeners attached.

    The caller registers its custom messages on the runner and then fires ``events.init``.
    """
    env = Environment(
        user_classes=list(users.classes),
        host=str(config["url"]).rstrip("/"),
        events=locust.events,  # module-level listeners of a locustfile bind to this one
        catch_exceptions=True,
    )
    runner: Any
    if role == "local":
        runner = env.create_local_runner()
    elif role == "master":
        runner = env.create_master_runner(bind[0], bind[1])
    elif role == "worker":
        assert master is not None
        runner = env.create_worker_runner(master[0], master[1])
        workers = max(1, int(config.get("workers") or 1))
        users.layout.stride, users.layout.offset = workers, max(0, runner.worker_index)
    else:
        raise ValueError(f"unknown engine role {role!r}")
    if not config.get("locust_stats", False) and config.get("web_ui_port") is None:
        _drop_locust_stats_listener(env)
    if role != "master":
        env.events.request.add_listener(listener.on_request)
        env.events.user_error.add_listener(listener.on_user_error)
    return env, runner


def _drop_locust_stats_listener(env: Environment) -> None:
    """Remove Locust's own stats listener: perfgate never reads those stats (saves CPU/request)."""
    handlers = env.events.request._handlers
    for handler in list(handlers):
        if getattr(handler, "__qualname__", "").endswith("Runner.__init__.<locals>.on_request"):
            handlers.remove(handler)


def wait_for(
    done: Callable[[], bool],
    *,
    timeout_s: float,
    failure: Callable[[], str],
    check: Callable[[], None] | None = None,
    poll_s: float = 0.05,
) -> None:
    """Poll ``done`` every ``poll_s`` (other greenlets run meanwhile), calling ``check`` first.

    Raises EngineFailure with ``failure()`` (worded when it happens) after ``timeout_s``.
    """
    deadline = _perf() + timeout_s
    while not done():
        if check is not None:
            check()
        if _perf() > deadline:
            raise EngineFailure(failure())
        gevent.sleep(poll_s)


class WorkerProcesses:
    """A master's workers: the processes it started, or the pods it expects (``external``)."""

    def __init__(self, runner: Any, external: int = 0) -> None:
        self.runner = runner
        self.external = external  # workers started by others (pods)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self._external_ready = False

    def start(self, count: int, config_line: bytes) -> None:
        """Start ``count`` worker processes and wait until all have connected."""
        port = self.runner.server.port
        command = [sys.executable, "-m", "perfgate.load.engine", "--worker", "127.0.0.1", str(port)]
        for _ in range(count):
            # Same process group as this master; stdout is fd 1, i.e. our stderr by now.
            worker = subprocess.Popen(command, stdin=subprocess.PIPE)
            assert worker.stdin is not None
            worker.stdin.write(config_line)
            worker.stdin.flush()
            self.processes.append(worker)
        wait_for(
            lambda: self.runner.worker_count >= count,
            timeout_s=WORKER_START_S,
            check=self.check,
            failure=lambda: (
                f"only {self.runner.worker_count} of {count} load workers connected "
                f"within {WORKER_START_S:g} s"
            ),
        )

    def wait_external(self, timeout_s: float = WORKER_CONNECT_S) -> None:
        """Wait until the expected workers (pods) have connected; EngineFailure after a while."""
        count = self.external

        def failure() -> str:
            namespace = os.environ.get("PERFGATE_NAMESPACE")
            where = f"kubectl -n {namespace} " if namespace else "kubectl "
            return (
                f"only {self.runner.worker_count} of {count} load workers connected within "
                f"{timeout_s:g} s (their logs: {where}logs "
                "-l app.kubernetes.io/component=load-generator; --keep-namespace keeps them)"
            )

        wait_for(lambda: self.runner.worker_count >= count, timeout_s=timeout_s, failure=failure)
        self._external_ready = True

    def check(self) -> None:
        """Raise EngineFailure if a worker process has exited (or a worker pod disconnected)."""
        if self.stopping:
            return
        if self._external_ready and self.runner.worker_count < self.external:
            raise EngineFailure(
                f"a load worker disconnected: {self.runner.worker_count} of "
                f"{self.external} still connected (a worker pod restarted or was evicted?)"
            )
        for i, worker in enumerate(self.processes):
            code = worker.poll()
            if code is not None:
                how = f"on {signal_name(-code)}" if code < 0 else f"with code {code}"
                raise EngineFailure(f"load worker {i + 1} of {len(self.processes)} exited {how}")

    def reap(self) -> None:
        """Close every worker's stdin (it exits then) and wait ~3 s before killing it."""
        for worker in self.processes:
            with suppress(Exception):
                if worker.stdin is not None:
                    worker.stdin.close()
        deadline = _perf() + 3.0
        for worker in self.processes:
            try:
                worker.wait(timeout=max(0.1, deadline - _perf()))
            except subprocess.TimeoutExpired:
                worker.kill()
                with suppress(Exception):
                    worker.wait(timeout=2.0)
