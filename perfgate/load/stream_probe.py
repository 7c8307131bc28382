"""Before any load: does ``users.streams.url`` accept a WebSocket? (one clear line if not).

Run in the CLI process (plain blocking websocket-client, no gevent) by
:meth:`perfgate.load.runner.LocustRunner.start` when the users stream events and the engine runs
here: a stream URL that refuses the upgrade, or where nothing listens, is then an infrastructure
failure named before the ramp (exit 3) instead of a ramp whose every event is lost. Failures that
start during the load are the engine's (:mod:`perfgate.load.engine_stream`).
"""

from __future__ import annotations

from perfgate import redaction
from perfgate.errors import LoadError
from perfgate.models import UsersSpec


def stream_url(host: str, url: str) -> str:
    """The WebSocket URL of ``users.streams.url``: as given, or a path on the target's host."""
    if url.startswith(("ws://", "wss://")):
        return url
    base = host.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + (url if url.startswith("/") else "/" + url)


def probe_stream(target: str, users: UsersSpec) -> None:
    """LoadError (exit 3) naming the URL unless its WebSocket upgrade succeeds in time."""
    spec = users.streams
    if spec is None:
        return
    import websocket  # here: only runs that stream pay for the import

    url = stream_url(target, spec.url)
    shown = redaction.redact_text(url, redaction.ordered(users.secret_values))
    static = {k: v for k, v in users.headers.items() if "{{" not in v}
    header = [f"{k}: {v}" for k, v in static.items()]
    try:
        ws = websocket.create_connection(url, timeout=spec.connect_timeout_s, header=header)
    except websocket.WebSocketBadStatusException as exc:
        why = f"refused the WebSocket upgrade (HTTP {exc.status_code})"
    except (OSError, websocket.WebSocketException) as exc:
        text = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        why = f"did not accept a WebSocket within {spec.connect_timeout_s:g} s ({text})"
    else:
        ws.close(timeout=1)
        return
    raise LoadError(f"users.streams.url {shown} {why}: no load was started")
