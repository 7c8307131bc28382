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
               "user_classes": ["ScenarioUser"], "workers": 1, "worker_pids": []}`` — after
               the config was accepted. ``t`` in later messages is seconds since this moment
               (the run clock).
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
               "per_second": [812, 809, ...], "cpu_percent": 33.0, "loop_lag_p95_ms": 0.4}``
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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from perfgate.load.histogram import Histogram

PROTOCOL_VERSION = 1

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
    seconds = min(len(r.get("per_second", ())) for r in results)
    merged["per_second"] = [sum(int(r["per_second"][i]) for r in results) for i in range(seconds)]
    cpus = [float(r.get("cpu_percent", 0.0)) for r in results]
    merged["cpu_percent"] = max(cpus)
    merged["cpu_percent_each"] = cpus
    merged["loop_lag_p95_ms"] = max(float(r.get("loop_lag_p95_ms", 0.0)) for r in results)
    return merged
