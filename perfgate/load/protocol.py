"""The JSON-lines protocol between ``LocustRunner`` (parent) and the engine child process.

One JSON object per line, UTF-8. Stdlib only: both sides import this module.

Parent → engine (engine's stdin)
================================

1. Exactly one config line first::

     {"cmd": "config", "version": 1, "url": "http://127.0.0.1:8080",
      "users": <UsersSpec as models.to_jsonable>, "request_timeout_s": 10.0,
      "slo": {"p95_ms": 250.0, "error_rate": 0.01}, "workers": 1, "log_level": "WARNING"}

   ``workers`` ≥ 2 runs Locust's master/worker mode inside the engine (see ``engine.py``); the
   messages below do not change.

2. Then commands, each answered before the next is sent::

     {"cmd": "step", "users": 40, "settle_s": 2.5, "min_s": 7.5, "max_s": 7.5,
      "min_samples": 0, "record": true}
     {"cmd": "quit"}

   A step sets the user count (``runner.start(users, spawn_rate=users)``; users keep running
   between steps), waits ``settle_s`` (and until every user is spawned), then measures until
   ``elapsed ≥ min_s and samples ≥ min_samples`` or ``elapsed ≥ max_s``. ``record: false`` holds
   the users for ``max_s`` seconds without recording (warm-up, cool-down). Closing stdin has the
   same effect as ``quit``: the engine never outlives its parent's pipe.

Engine → parent (engine's stdout; Locust's own logging goes to stderr)
=======================================================================

``ready``      ``{"type": "ready", "version": 1, "pid": 123, "locust": "2.47.0",
               "user_classes": ["ScenarioUser"], "workers": 1, "worker_pids": [],
               "remote": false}`` — after the config was accepted (``remote``: a master in a
               pod, whose workers are pods too). ``t`` in later messages is seconds since
               this moment (the run clock).
``error``      ``{"type": "error", "kind": "scenario" | "engine", "message": "one line"}`` —
               a bad locustfile or template (``scenario``) or an engine failure (``engine``);
               the engine exits after sending it.
``tick``       every second while users run: ``{"type": "tick", "t": 12.0, "users": 40,
               "completions": 812, "failures": 0, "p95_ms": 48.1 | null, "cpu_percent": 31.5,
               "recording": true}`` — counts of the last second; p95 of its successes.
``window``     ``{"type": "window", "t": 14.5}`` — the settle period ended and recording began.
``step_done``  the answer to ``step``: ``{"type": "step_done", "record": true, "users": 40,
               "active_users": 40, "t_start": 12.0, "t_window": 14.5, "t_end": 22.0,
               "duration_s": 7.5, "requests": 6090, "failures": 3, "latency_sum_ms": 291234.5,
               "histogram": {...}, "endpoints": [{"name": "order book", "method": "GET",
               "requests": 3000, "failures": 0, "histogram": {...}}, ...],
               "errors": [["POST place order: HTTP 500", 3], ...], "user_errors": 0,
               "per_second": [812, 809, ...], "cpu_percent": 33.0, "loop_lag_p95_ms": 0.4,
               "events": {"received": 800, "lost": 0, "errors": 0, "histogram": {...},
               "read_lag": {...}, "backlog_mean": 12.5}}`` (``events``: awaited events of
               ``users.streams``, :mod:`perfgate.load.engine_stream`; zeros without streams)
               (with workers also ``"workers": 2, "cpu_percent_each": [...]``).
               Histograms (``Histogram.to_dict``) hold successful requests only;
               ``latency_sum_ms`` sums every completion (successes and failures, for Little's
               law); ``per_second`` counts completions in each full second of the window. With
               ``record: false`` only ``type``, ``record``, ``users``, ``active_users``, ``t_start``
               and ``t_end`` are present.
``bye``        ``{"type": "bye"}`` — the answer to ``quit``, just before the engine exits.

Distributed mode (a later addition) keeps this protocol: workers send their per-step results
to the master with Locust's ``send_message``; the master combines them with
:func:`merge_step_results` (histograms merged, never percentiles averaged) and answers one
``step_done`` exactly as a single engine does.

Engines in pods (``load.placement: kubernetes``)
================================================

The same protocol reaches a master in a pod over TCP: :func:`relay_main`
(``python -m perfgate.load.protocol --relay HOST PORT``) is the process ``LocustRunner`` starts
instead of the engine; it copies its stdin to a TCP connection (a port-forward to the master's
control port) and the answers back to its stdout. The pods read their config from files
(a ConfigMap and a Secret mounted into one folder): :func:`pod_files` writes them,
:func:`read_pod_config` reads them. ``config.json`` is a config line whose secret values
(header values, ``${VAR}`` values from the environment) are replaced by markers;
``secrets.json`` (only in the Secret) maps each marker back to its value.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as _secrets
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perfgate.histogram import Histogram

PROTOCOL_VERSION = 1

# The ports of a Locust master in a pod (load.placement kubernetes), defined once for the pods'
# command lines, their Service and the engine's defaults.
MASTER_PORT = 5557  # Locust's own port, where the worker pods connect (Locust's default)
CONTROL_PORT = 5558  # this protocol, on 127.0.0.1 in the master's pod: reached by port-forward

# Message types sent by the engine.
READY = "ready"
ERROR = "error"
TICK = "tick"
WINDOW = "window"
STEP_DONE = "step_done"
BYE = "bye"
ENGINE_TYPES = frozenset((READY, ERROR, TICK, WINDOW, STEP_DONE, BYE))

# Commands sent by the parent.
CONFIG = "config"
STEP = "step"
QUIT = "quit"
COMMANDS = frozenset((CONFIG, STEP, QUIT))

MAX_LINE_CHARS = 16 * 1024 * 1024  # a step_done with many endpoints stays far below this


class ProtocolError(ValueError):
    """A line that is not a well-formed protocol message."""


def encode(message: dict[str, Any]) -> str:
    """One message as a JSON line (with the newline)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"


def decode(line: str | bytes, *, kinds: frozenset[str] = ENGINE_TYPES) -> dict[str, Any]:
    """Parse one line; raises ProtocolError unless it is a JSON object of a known kind.

    ``kinds`` is ENGINE_TYPES for lines from the engine (checked against ``type``) or COMMANDS
    for lines from the parent (checked against ``cmd``).
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"not UTF-8: {line[:80]!r}") from exc
    if len(line) > MAX_LINE_CHARS:
        raise ProtocolError(f"line of {len(line)} characters is too long")
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {line.strip()[:80]!r}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"not a JSON object: {line.strip()[:80]!r}")
    key = "cmd" if kinds is COMMANDS else "type"
    if message.get(key) not in kinds:
        raise ProtocolError(f"unknown message {key} {message.get(key)!r}")
    return message


def config_message(
    *,
    url: str,
    users: dict[str, Any],
    request_timeout_s: float,
    slo: dict[str, Any],
    workers: int = 1,
    log_level: str = "WARNING",
    web_ui_port: int | None = None,
) -> dict[str, Any]:
    """The first line the parent sends (``web_ui_port``: serve Locust's web UI, run no steps)."""
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    return {
        "cmd": CONFIG,
        "version": PROTOCOL_VERSION,
        "url": url,
        "users": users,
        "request_timeout_s": request_timeout_s,
        "slo": slo,
        "workers": int(workers),
        "log_level": log_level,
        "web_ui_port": web_ui_port,
    }


def step_command(
    *,
    users: int,
    settle_s: float,
    min_s: float,
    max_s: float,
    min_samples: int,
    record: bool,
) -> dict[str, Any]:
    """A ``step`` command (validated here so both sides agree on the rules)."""
    if users < 0:
        raise ValueError(f"users must be ≥ 0, got {users}")
    if settle_s < 0 or min_s < 0 or max_s <= 0:
        raise ValueError(f"bad step times settle_s={settle_s} min_s={min_s} max_s={max_s}")
    if min_s > max_s:
        raise ValueError(f"min_s {min_s} exceeds max_s {max_s}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be ≥ 0, got {min_samples}")
    return {
        "cmd": STEP,
        "users": int(users),
        "settle_s": float(settle_s),
        "min_s": float(min_s),
        "max_s": float(max_s),
        "min_samples": int(min_samples),
        "record": bool(record),
    }


def quit_command() -> dict[str, Any]:
    """The ``quit`` command."""
    return {"cmd": QUIT}


def merge_step_results(
    results: Sequence[dict[str, Any]], *, top_errors: int = 10
) -> dict[str, Any]:
    """Combine recorded ``step_done`` payloads of several generator processes into one.

    Counts, latency sums and per-second completions add up; histograms (overall and per
    endpoint) merge exactly; ``duration_s`` is the longest window; ``cpu_percent`` and
    ``loop_lag_p95_ms`` are the worst process's (the one that limits), with every process's
    CPU kept in ``cpu_percent_each``. Other keys are taken from the first result.
    """
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    merged: dict[str, Any] = dict(first)
    merged["duration_s"] = max(float(r["duration_s"]) for r in results)
    for count in ("requests", "failures", "user_errors"):
        merged[count] = sum(int(r.get(count, 0)) for r in results)
    merged["latency_sum_ms"] = sum(float(r.get("latency_sum_ms", 0.0)) for r in results)
    merged["histogram"] = Histogram.merged(
        Histogram.from_dict(r["histogram"]) for r in results
    ).to_dict()
    endpoints: dict[tuple[str, str], dict[str, Any]] = {}
    ep_hists: dict[tuple[str, str], Histogram] = {}
    for r in results:
        for e in r.get("endpoints", ()):
            key = (str(e["method"]), str(e["name"]))
            into = endpoints.setdefault(
                key, {"name": key[1], "method": key[0], "requests": 0, "failures": 0}
            )
            into["requests"] += int(e["requests"])
            into["failures"] += int(e["failures"])
            ep_hists.setdefault(key, Histogram()).merge(Histogram.from_dict(e["histogram"]))
    merged["endpoints"] = [
        {**endpoints[key], "histogram": ep_hists[key].to_dict()} for key in endpoints
    ]
    errors: dict[str, int] = {}
    for r in results:
        for message, n in r.get("errors", ()):
            errors[message] = errors.get(message, 0) + int(n)
    merged["errors"] = [
        [m, n] for m, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:top_errors]
    ]
    merged["error_kinds"] = merge_error_kinds(results, top=top_errors * 2)
    for count in ("bytes_sent", "bytes_received"):
        merged[count] = sum(int(r.get(count, 0)) for r in results)
    seconds = min(len(r.get("per_second", ())) for r in results)
    merged["per_second"] = [sum(int(r["per_second"][i]) for r in results) for i in range(seconds)]
    cpus = [float(r.get("cpu_percent", 0.0)) for r in results]
    merged["cpu_percent"] = max(cpus)
    merged["cpu_percent_each"] = cpus
    merged["loop_lag_p95_ms"] = max(float(r.get("loop_lag_p95_ms", 0.0)) for r in results)
    events = [r["events"] for r in results if r.get("events")]
    if events:
        merged["events"] = merge_events(events)
    return merged


def merge_events(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``events`` of several processes: counts and backlogs add up, histograms merge."""
    out: dict[str, Any] = {
        key: sum(int(e.get(key, 0)) for e in events) for key in ("received", "lost", "errors")
    }
    for key in ("histogram", "read_lag"):
        out[key] = Histogram.merged(Histogram.from_dict(e.get(key) or {}) for e in events).to_dict()
    out["backlog_mean"] = sum(float(e.get("backlog_mean", 0.0)) for e in events)
    return out


def merge_error_kinds(results: Sequence[dict[str, Any]], *, top: int) -> list[list[Any]]:
    """Error-kind rows ``[method, name, kind, count, first_s]`` of several processes: counts
    add up, the earliest first sighting wins; most frequent first."""
    kinds: dict[tuple[str, str, str], list[Any]] = {}
    for r in results:
        for method, name, kind, count, first in r.get("error_kinds", ()):
            into = kinds.setdefault((method, name, kind), [0, float(first)])
            into[0] += int(count)
            into[1] = min(into[1], float(first))
    rows = sorted(kinds.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[:top]
    return [[m, n, k, c, f] for (m, n, k), (c, f) in rows]


# ---------------------------------------------------------------------------------------------
# Engines in pods: config files and the stdin/stdout relay
# ---------------------------------------------------------------------------------------------

POD_CONFIG_FILE = "config.json"
POD_SECRETS_FILE = "secrets.json"
POD_LOCUSTFILE = "locustfile.py"
# `-m perfgate.load.engine --check-locustfile PATH` prints its answer after this marker
CHECK_MARKER = "@@perfgate-locustfile-check@@ "
MAX_POD_FILES_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB
_MARKER = re.compile(r"@@perfgate-secret-([0-9a-f]{12})-(\d+)@@")


class _Masker:
    """Replaces secret values with markers ``@@perfgate-secret-<nonce>-<n>@@`` (one per value)."""

    def __init__(self, text: str, secrets: Sequence[str]) -> None:
        nonce = _secrets.token_hex(6)
        while nonce in text:  # a marker must never match text that was there already
            nonce = _secrets.token_hex(6)
        self.nonce = nonce
        self.values: dict[str, str] = {}  # value -> marker
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        # one pass, longest first: a marker is never rescanned, so a short secret that happens
        # to occur inside a marker cannot corrupt it
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def marker(self, value: str) -> str:
        found = self.values.get(value)
        if found is None:
            found = self.values[value] = f"@@perfgate-secret-{self.nonce}-{len(self.values)}@@"
        return found

    def text(self, value: str) -> str:
        if self._pattern is None or value in self.values.values():
            return value
        return self._pattern.sub(lambda m: self.marker(m.group(0)), value)

    def walk(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, list):
            return [self.walk(v) for v in data]
        if isinstance(data, dict):
            return {self.text(str(k)): self.walk(v) for k, v in data.items()}
        return data


def _unmask(data: Any, values: Mapping[str, str], where: str) -> Any:
    def text(value: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(0) not in values:
                raise ProtocolError(f"{where}: secret {m.group(0)} is missing")
            return values[m.group(0)]

        return _MARKER.sub(one, value) if "@@perfgate-secret-" in value else value

    if isinstance(data, str):
        return text(data)
    if isinstance(data, list):
        return [_unmask(v, values, where) for v in data]
    if isinstance(data, dict):
        return {text(str(k)): _unmask(v, values, where) for k, v in data.items()}
    return data


def pod_files(
    config: dict[str, Any], *, secrets: Sequence[str], locustfile_text: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(ConfigMap data, Secret data) for engines in pods; no secret value is in the first.

    ``config`` is the engines' :func:`config_message`. Every header value (``users.headers`` and
    each request's ``headers``) is replaced whole by a marker, and every value in ``secrets``
    wherever it occurs (URL, paths, bodies, ``secret_values``). The Secret data is empty when
    nothing was masked. A locustfile is shipped as ``locustfile.py`` next to the config (only
    that one file: its imports of sibling modules do not travel).
    """
    config = json.loads(json.dumps(config))  # a private copy, plain JSON types
    users = config["users"]
    if locustfile_text is not None:
        users["locustfile"] = POD_LOCUSTFILE  # relative: resolved against the config's folder
    masker = _Masker(json.dumps(config) + (locustfile_text or ""), secrets)
    header_maps = [users.get("headers")]
    header_maps += [r.get("headers") for r in users.get("requests") or () if isinstance(r, dict)]
    for headers in header_maps:
        if isinstance(headers, dict):
            for name, value in headers.items():
                if isinstance(value, str) and value:
                    headers[name] = masker.marker(value)
    masked = masker.walk(config)
    files = {POD_CONFIG_FILE: json.dumps(masked, indent=1, sort_keys=True) + "\n"}
    if locustfile_text is not None:
        files[POD_LOCUSTFILE] = locustfile_text
    secret_files: dict[str, str] = {}
    if masker.values:
        markers = {marker: value for value, marker in masker.values.items()}
        secret_files[POD_SECRETS_FILE] = json.dumps({"markers": markers}, sort_keys=True)
    size = sum(len(v.encode("utf-8")) for v in files.values())
    if size > MAX_POD_FILES_BYTES:
        raise ValueError(
            f"the scenario's users take {size >> 10} KiB, more than a ConfigMap holds "
            f"({MAX_POD_FILES_BYTES >> 10} KiB)"
        )
    return files, secret_files


def read_pod_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config line of an engine in a pod: ``config.json``, with ``secrets.json`` beside it.

    Raises ProtocolError naming the file (never a secret value) when either is unusable.
    """
    config_path = Path(path)
    folder = config_path.parent
    try:
        # declared: the JSON walk _unmask below returns Any
        config: dict[str, Any] = decode(config_path.read_text(encoding="utf-8"), kinds=COMMANDS)
    except OSError as exc:
        raise ProtocolError(f"{config_path}: cannot read: {exc.strerror or exc}") from exc
    except (ProtocolError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{config_path}: {exc}") from exc
    if config.get("cmd") != CONFIG:
        raise ProtocolError(f"{config_path}: not a config")
    if config.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(f"{config_path}: protocol version {config.get('version')} unsupported")
    secrets_path = folder / POD_SECRETS_FILE
    values: dict[str, str] = {}
    if secrets_path.exists():
        try:
            loaded = json.loads(secrets_path.read_text(encoding="utf-8"))
            values = {str(k): str(v) for k, v in dict(loaded["markers"]).items()}
        except OSError as exc:
            raise ProtocolError(f"{secrets_path}: cannot read: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            # the message of a JSON error may quote the file: say only what kind of error
            raise ProtocolError(f"{secrets_path}: malformed ({type(exc).__name__})") from None
    config = _unmask(config, values, str(config_path))
    users = config.get("users")
    if isinstance(users, dict) and users.get("locustfile"):
        users["locustfile"] = str(folder / str(users["locustfile"]))
    return config


def relay_main(host: str, port: int) -> int:
    """Copy stdin to a TCP connection and the connection to stdout (an engine in a pod)."""
    try:
        sock = socket.create_connection((host, port), timeout=10.0)
    except OSError as exc:
        print(
            f"perfgate relay: cannot connect to the load master at {host}:{port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    sock.settimeout(None)
    stdin_done = threading.Event()

    def upstream() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        stdin_done.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # the master sees EOF: the parent has gone

    threading.Thread(target=upstream, name="perfgate-relay", daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except OSError as exc:
        print(f"perfgate relay: connection to the load master lost: {exc}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    if not stdin_done.is_set():
        print("perfgate relay: the load master closed the connection", file=sys.stderr)
        return 1
    return 0


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 3 and argv[0] == "--relay" and argv[2].isdigit():
        return relay_main(argv[1], int(argv[2]))
    print("usage: python -m perfgate.load.protocol --relay HOST PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
