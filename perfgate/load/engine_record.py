"""The engine's request listener: every completed request, filed into the step being measured.

Every completed request reaches :meth:`RequestListener.on_request` (an ``events.request``
listener), which counts it for the once-a-second tick and, while a step's measuring window is
open, files it by completion time into that step's :class:`StepRecorder`: per-endpoint
histograms (successes only for latency), counts and error messages. Completions during the
settle period and between steps are discarded. The overall histogram is the merge of the
endpoint histograms, built once at step end by :meth:`StepRecorder.snapshot`.

Standard library and :mod:`perfgate.histogram` only: this is the hot path of every request, and
it needs nothing from Locust but the listener's arguments.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from perfgate.histogram import Histogram
from perfgate.redaction import redact_text

MAX_ENDPOINTS = 200  # distinct (method, name) pairs per step; more go to "(other)"
MAX_ERROR_KINDS = 100  # distinct error messages per step; more go to "(other errors)"
MAX_ERROR_CHARS = 200
TOP_ERRORS = 10
TOP_ERROR_KINDS = 20  # rows of the report's errors table per step

_perf = time.perf_counter


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
        "bytes_received",
        "bytes_sent",
        "cpu0",
        "endpoints",
        "error_kinds",
        "errors",
        "ev_backlog_n",
        "ev_backlog_sum",
        "ev_errors",
        "ev_hist",
        "ev_lost",
        "ev_read_lag",
        "ev_received",
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
        # (method, name, kind) -> [count, first seen in s since window start]
        self.error_kinds: dict[tuple[str, str, str], list[float]] = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0
        self.failures = 0
        self.latency_sum_ms = 0.0
        self.per_second: list[int] = []
        self.lags_ms: list[float] = []
        self.user_errors = 0
        # users.streams (perfgate.load.engine_stream): awaited events by outcome
        self.ev_hist = Histogram()  # request sent → its event received, ms
        self.ev_received = 0
        self.ev_lost = 0
        self.ev_errors = 0
        self.ev_read_lag = Histogram()  # server sent → this generator read, ms
        self.ev_backlog_sum = 0.0  # awaited events, sampled by the engine's lag probe
        self.ev_backlog_n = 0

    def events(self) -> dict[str, Any]:
        """The window's event outcomes as protocol fields (the ``events`` of a step_done)."""
        return {
            "received": self.ev_received,
            "lost": self.ev_lost,
            "errors": self.ev_errors,
            "histogram": self.ev_hist.to_dict(),
            "read_lag": self.ev_read_lag.to_dict(),
            "backlog_mean": self.ev_backlog_sum / self.ev_backlog_n if self.ev_backlog_n else 0.0,
        }

    def endpoint(self, method: str, name: str) -> EndpointRecord:
        key = (method, name)
        if len(self.endpoints) >= MAX_ENDPOINTS:
            key = (method, "(other)")
            found = self.endpoints.get(key)
            if found is not None:
                return found
        rec = self.endpoints[key] = EndpointRecord(*key)
        return rec

    def note_error(self, method: str, name: str, kind: str) -> None:
        message = f"{method} {name}: {kind}" if method else kind
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 1] + "…"
        errors = self.errors
        key = (method, name, kind[:MAX_ERROR_CHARS])
        if message not in errors and len(errors) >= MAX_ERROR_KINDS:
            message, key = "(other errors)", ("", "", "(other errors)")
        errors[message] = errors.get(message, 0) + 1
        seen = self.error_kinds.get(key)
        if seen is None:
            self.error_kinds[key] = [1, _perf() - self.window_start]
        else:
            seen[0] += 1

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
            "error_kinds": _error_kinds(self.error_kinds, secrets),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "user_errors": self.user_errors,
            "per_second": per_second,
            "cpu_percent": 100.0 * (time.process_time() - self.cpu0) / wall,
            "loop_lag_p95_ms": lag95,
            "events": self.events(),
        }


class RequestListener:
    """Locust's ``request`` and ``user_error`` listeners for one engine process.

    ``expects`` maps (METHOD, name) to the statuses a generated request must answer with (a
    locustfile's requests: empty, the request event's exception decides). ``rec`` is the open
    measuring window, None between windows; the ``tick_*`` counters cover the current second.
    """

    __slots__ = ("expects", "rec", "tick_fail", "tick_lat", "tick_n")

    def __init__(self, expects: dict[tuple[str, str], frozenset[int]]) -> None:
        self.expects = expects
        self.rec: StepRecorder | None = None
        self.tick_n = 0
        self.tick_fail = 0
        self.tick_lat: list[float] = []

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
        if self.expects:
            expected = self.expects.get((request_type, name))
            if expected is not None:
                ok = (getattr(response, "status_code", 0) or 0) in expected
        self.tick_n += 1
        if ok:
            self.tick_lat.append(response_time)
        else:
            self.tick_fail += 1
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
        rec.bytes_received += response_length or 0
        if response is not None:
            rec.bytes_sent += sent_bytes(response)
        if ok:
            ep.hist.record(response_time)
        else:
            ep.failures += 1
            rec.failures += 1
            rec.note_error(request_type, name, failure_kind(response, exception, expected))
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
        rec.note_error("", "", f"user error: {type(exception).__name__}: {text}")

    def take_tick(self) -> tuple[int, int, list[float]]:
        """(completions, failures, latencies of successes) of the second that just ended."""
        lat, self.tick_lat = self.tick_lat, []
        n, fail = self.tick_n, self.tick_fail
        self.tick_n = self.tick_fail = 0
        return n, fail, lat


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret value in ``text`` with ``***`` (:mod:`perfgate.redaction`)."""
    return redact_text(text, secrets)


def failure_kind(response: Any, exception: BaseException | None, expected: Any) -> str:
    """The status or exception of a failed request, without ids: equal failures are one kind."""
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
    return detail


def sent_bytes(response: Any) -> int:
    """Bytes of a request as sent: the request line and headers, and the body.

    FastHttpUser's responses keep the head as it went on the wire (``_sent_request``); for
    HttpUser (requests) the head is rebuilt from the prepared request, close to the wire's size.
    """
    request = getattr(response, "request", None)
    head = getattr(response, "_sent_request", None)
    if isinstance(head, str | bytes):
        n = len(head)
    elif request is not None and getattr(request, "headers", None) is not None:
        n = len(f"{request.method} {request.url} HTTP/1.1\r\n") + sum(
            len(f"{k}: {v}\r\n") for k, v in request.headers.items()
        )
    else:
        return 0
    body = getattr(request, "body", None)
    return n + (len(body) if isinstance(body, str | bytes) else 0)


def _error_kinds(
    kinds: dict[tuple[str, str, str], list[float]], secrets: tuple[str, ...]
) -> list[list[Any]]:
    """The step's error kinds, redacted (then merged), most frequent first, as protocol rows."""
    merged: dict[tuple[str, str, str], list[float]] = {}
    for (method, name, kind), (count, first) in kinds.items():
        key = (method, redact(name, secrets), redact(kind, secrets))
        into = merged.setdefault(key, [0, first])
        into[0] += count
        into[1] = min(into[1], first)
    rows = sorted(merged.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[:TOP_ERROR_KINDS]
    return [[m, n, k, int(c), round(f, 3)] for (m, n, k), (c, f) in rows]


_URL = re.compile(r"https?://[^\s,'\"]+")


def _url_placeholder(match: re.Match[str]) -> str:
    return "<url>:" if match.group(0).endswith(":") else "<url>"


# Exception types Locust's clients raise for a bad status (FastHttpUser, HttpUser).
_STATUS_ERRORS = frozenset(("LocustBadStatusCode", "HTTPError"))
