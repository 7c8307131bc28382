"""One session of the engine protocol: config, ``ready``, then step commands until quit or EOF.

The same session runs over the parent's pipes (``python -m perfgate.load.engine``) and over a
pod master's control connection (:func:`perfgate.load.engine.pod_master_main`); ``emit`` and
``finish`` say where lines go and how the process ends. Commands are read on their own greenlet,
so ``quit`` and a closed pipe are seen while a step runs; steps run one at a time, in order.
"""

# isort: off
import locust  # first, as in every engine module (see perfgate.load.engine)

# isort: on
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import gevent
from gevent.queue import Queue

from perfgate.load import protocol
from perfgate.load.engine_process import setup_logging
from perfgate.load.engine_runners import WORKER_CONNECT_S, EngineFailure
from perfgate.load.engine_steps import Engine
from perfgate.load.engine_users import ScenarioInputError

Emit = Callable[[dict[str, Any]], None]
Finish = Callable[[int], None]


def serve(
    reader: Any,
    first_line: bytes | None,
    emit: Emit,
    finish: Finish,
    make: Callable[[dict[str, Any]], Engine],
    connect_timeout_s: float = WORKER_CONNECT_S,
) -> int:
    """One session of the protocol: config (``first_line`` if already read), ready, steps."""
    engine: Engine | None = None
    try:
        line = first_line if first_line is not None else reader.readline()
        config = protocol.decode(line, kinds=protocol.COMMANDS)
        if config["cmd"] != protocol.CONFIG:
            raise protocol.ProtocolError("the first line must be a config")
        if config.get("version") != protocol.PROTOCOL_VERSION:
            raise protocol.ProtocolError(f"protocol version {config.get('version')} unsupported")
        setup_logging(str(config.get("log_level") or "WARNING"))
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
        _fail(emit, finish, exc, engine)
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
    emit(_ready(engine, web_url))
    return _run(engine, reader, emit, finish)


def _ready(engine: Engine, web_url: str | None) -> dict[str, Any]:
    return {
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


def _run(engine: Engine, reader: Any, emit: Emit, finish: Finish) -> int:
    """Run the background greenlets and every step command, in order, until the process ends."""
    steps: Queue = Queue()
    gevent.spawn(engine.ticker)
    gevent.spawn(engine.lag_probe)
    gevent.spawn(_read_commands, engine, reader, emit, finish, steps)
    if engine.workers or engine.external_workers:
        gevent.spawn(engine.watch_workers)
    while True:
        cmd = steps.get()
        try:
            engine.run_step(cmd)
        except Exception as exc:
            _fail(emit, finish, exc, engine)


def _read_commands(engine: Engine, reader: Any, emit: Emit, finish: Finish, steps: Queue) -> None:
    """Queue step commands; quit, a bad line or EOF end the process (never outlive the parent)."""
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


def _fail(emit: Emit, finish: Finish, exc: BaseException, engine: Engine | None) -> None:
    """Report an engine error in one line (traceback on stderr unless expected) and exit 1."""
    if not isinstance(exc, EngineFailure):
        traceback.print_exc(file=sys.stderr)
    one_line = " ".join(
        (str(exc) if isinstance(exc, EngineFailure) else f"{type(exc).__name__}: {exc}").split()
    )
    emit({"type": protocol.ERROR, "kind": "engine", "message": one_line})
    if engine is not None:
        engine.shutdown()
    finish(1)
