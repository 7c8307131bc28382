"""The load engine: Locust in a child process, spoken to in JSON lines (`-m perfgate.load.engine`).

Why a child process (decided once, for the whole project): ``import locust`` monkey-patches the
process with gevent. In the CLI process that would freeze every virtual user whenever the CLI
does CPU work (rendering a chart, JSON, Kubernetes watches) and report the freeze as latency, and
it crashes with RecursionError when ``urllib3``/``requests``/``kubernetes`` were imported first.
So the CLI never imports locust; :class:`perfgate.load.runner.LocustRunner` starts this module in
its own process group and talks to it with :mod:`perfgate.load.protocol`.

This module is the process's entry point; the engine itself is cut into modules of one job each,
imported only from here (i.e. only in the child process):

- :mod:`perfgate.load.engine_session` — one protocol session: config, ``ready``, step commands;
- :mod:`perfgate.load.engine_steps` — ``Engine``: the step loop, ticks, measuring windows;
- :mod:`perfgate.load.engine_runners` — Locust's Environment and local/master/worker runners,
  and a master's worker processes;
- :mod:`perfgate.load.engine_record` — the request listener and per-step histograms;
- :mod:`perfgate.load.engine_users` — the virtual users (generated, or a locustfile's);
- :mod:`perfgate.load.engine_process` — stdout kept for protocol lines, logging, exit.

Rules for the engine modules:

- ``import locust`` is the FIRST import of this module and of every engine module that imports
  locust or gevent (the package ``__init__`` modules that ``-m`` runs before it import only
  stdlib and ``perfgate.errors``; tests check both).
- From perfgate they import only each other, ``perfgate.load.protocol``, ``.templates``,
  ``perfgate.histogram`` and ``perfgate.models`` (all stdlib-only).
- stdout carries protocol lines only (:func:`perfgate.load.engine_process.claim_stdout`).

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
import locust  # noqa: F401  must stay first: gevent monkey-patching (see the module docstring)

# isort: on
import sys
import traceback
from contextlib import suppress
from typing import Any

import gevent
from gevent.fileobject import FileObjectPosix
from gevent.lock import Semaphore
from locust import runners as locust_runners

from perfgate.load import protocol
from perfgate.load.engine_process import (
    claim_stdout,
    exit_now,
    raise_fd_limit,
    setup_logging,
)
from perfgate.load.engine_runners import WORKER_CONNECT_S
from perfgate.load.engine_session import serve
from perfgate.load.engine_steps import Engine
from perfgate.load.engine_users import ScenarioInputError, load_locustfile

POD_MASTER_TIMEOUT_S = 15.0  # a worker in a pod quits after this long without master heartbeats

__all__ = ["Engine", "main", "pod_master_main", "worker_main"]


def main(argv: list[str] | None = None) -> int:
    """Serve the parent: config, then steps until quit or EOF.

    ``--worker HOST PORT [--config FILE]``: a worker. ``--master --config FILE``: a master in a
    pod, serving one session on its control port (see the module docstring).
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--check-locustfile"]:
        return _check_locustfile(args[1])
    if args[:1] == ["--worker"]:
        return _worker_cli(args[1:])
    if args[:1] == ["--master"]:
        return pod_master_main(args[1:])
    out = claim_stdout()
    setup_logging("WARNING")
    raise_fd_limit()

    def emit(message: dict[str, Any]) -> None:
        out.write(protocol.encode(message).encode("utf-8"))
        out.flush()

    def finish(code: int) -> None:
        try:
            out.flush()
        finally:
            exit_now(code)

    def make(config: dict[str, Any]) -> Engine:
        workers = max(1, int(config.get("workers") or 1))
        return Engine(config, emit, role="master" if workers > 1 else "local")

    return serve(FileObjectPosix(0, "rb", close=False), None, emit, finish, make)


def _check_locustfile(path: str) -> int:
    """``--check-locustfile PATH``: import it as a run would; one JSON line after the marker."""
    try:
        classes = load_locustfile(path, 0.0)
    except ScenarioInputError as exc:
        result: dict[str, Any] = {"ok": False, "error": str(exc)}
    else:
        result = {"ok": True, "classes": sorted(c.__name__ for c in classes)}
    sys.stdout.write("\n" + protocol.CHECK_MARKER + protocol.encode(result))
    sys.stdout.flush()
    exit_now(0)
    return 0


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
        parser.add_argument("--port", type=int, default=protocol.MASTER_PORT)
        parser.add_argument("--control-port", type=int, default=protocol.CONTROL_PORT)
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
        exit_now(2)
        raise  # unreachable: exit_now does not return


def pod_master_main(args: list[str]) -> int:
    """A master in a pod: Locust's port for the worker pods, one protocol session on control."""
    import socket  # gevent-patched by locust's import

    sys.stdout = sys.stderr  # a container's stdout is its log: nothing but logs goes there
    opts = _pod_args("--master", args, worker=False)
    setup_logging("WARNING")
    raise_fd_limit()
    config = _read_pod_config(opts.config)
    setup_logging(str(config.get("log_level") or "WARNING"))
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
            config, emit, role="master", bind=(opts.bind, opts.port), external_workers=workers
        )
    except ScenarioInputError as exc:
        print(f"perfgate load master: {exc}", file=sys.stderr)
        exit_now(2)
        return 2
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        exit_now(1)
        return 1
    print(
        f"perfgate load master: Locust on {opts.bind}:{opts.port} for {workers} worker(s), "
        f"control on 127.0.0.1:{opts.control_port}",
        file=sys.stderr,
    )
    conn, reader, first = _accept_session(listener)

    def finish(code: int) -> None:
        with suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        exit_now(code)

    return serve(reader, first, emit, finish, lambda _config: engine, opts.connect_timeout)


def _accept_session(listener: Any) -> tuple[Any, Any, bytes]:
    """The first control connection that sends a line: (socket, its reader, that line)."""
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
            listener.close()
            return candidate, reader, first
        # a connection that closes without a line is a probe (e.g. the port-forward check)
        with suppress(OSError):
            candidate.close()


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
    setup_logging("WARNING")
    raise_fd_limit()
    stdin = FileObjectPosix(0, "rb", close=False)
    if config_path is not None:
        config = _read_pod_config(config_path)
        # Locust reads this module global on every check: the default (60 s) keeps an orphaned
        # pod busy for a minute
        locust_runners.MASTER_HEARTBEAT_TIMEOUT = master_timeout_s  # type: ignore[assignment]
    try:
        if config_path is None:
            config = protocol.decode(stdin.readline(), kinds=protocol.COMMANDS)
        setup_logging(str(config.get("log_level") or "WARNING"))
        engine = Engine(config, lambda _m: None, role="worker", master=(master_host, master_port))
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        exit_now(1)
        return 1

    def watch_master() -> None:
        while stdin.readline():
            pass
        engine.shutdown()  # the master (or its pipe) is gone
        exit_now(0)

    gevent.spawn(engine.ticker)
    gevent.spawn(engine.lag_probe)
    if config_path is None:
        gevent.spawn(watch_master)
    engine.runner.greenlet.join()  # returns when the master sends quit (or stops heartbeating)
    exit_now(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
