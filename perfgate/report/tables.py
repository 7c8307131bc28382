"""The tables every report output shares, read from the recorded steps: the errors table
(status or exception × request × level, first seen) and the response-time distribution per
level (percentiles of each step's recorded histogram). Rendering only: nothing is estimated."""

from __future__ import annotations

from dataclasses import dataclass

from perfgate import fmt
from perfgate.histogram import Histogram
from perfgate.models import StepStats
from perfgate.report.common import sorted_steps

__all__ = ["DISTRIBUTION", "Distribution", "ErrorRow", "distribution", "error_table"]

MAX_ERROR_ROWS = 30
# the distribution's columns: label and percentile (None: the maximum)
DISTRIBUTION: tuple[tuple[str, float | None], ...] = (
    ("p50", 50.0),
    ("p75", 75.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("max", None),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRow:
    """One kind of failure of one request type, with its count at each level."""

    kind: str  # "HTTP 503", "ConnectionResetError: …"
    request: str  # "GET order book" ("" for a user error outside a request)
    counts: tuple[int, ...]  # one per level of ``error_table``'s levels
    total: int
    first_users: int  # the level where it was first seen
    first_s: float  # when: seconds from the run's start


def error_table(steps: tuple[StepStats, ...]) -> tuple[tuple[int, ...], tuple[ErrorRow, ...]]:
    """The levels that had errors, and one row per (status/exception, request), most first."""
    found: dict[tuple[str, str], dict[int, int]] = {}
    first: dict[tuple[str, str], tuple[float, int]] = {}
    for s in sorted_steps(steps):
        for e in s.error_kinds:
            key = (e.kind, f"{e.method} {e.name}".strip())
            per_level = found.setdefault(key, {})
            per_level[s.users] = per_level.get(s.users, 0) + e.count
            seen = (s.started_s + e.first_s, s.users)
            first[key] = min(first.get(key, seen), seen)
    levels = tuple(sorted({u for per_level in found.values() for u in per_level}))
    rows = [
        ErrorRow(
            kind=kind,
            request=request,
            counts=tuple(found[kind, request].get(u, 0) for u in levels),
            total=sum(found[kind, request].values()),
            first_users=first[kind, request][1],
            first_s=first[kind, request][0],
        )
        for kind, request in found
    ]
    rows.sort(key=lambda r: (-r.total, r.first_s))
    return levels, tuple(rows[:MAX_ERROR_ROWS])


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """One level's response times (successes): the DISTRIBUTION columns, formatted, and traffic."""

    users: int
    phase: str
    requests: int
    cells: tuple[str, ...]  # ms, one per DISTRIBUTION column
    sent: str
    received: str


def distribution(steps: tuple[StepStats, ...]) -> tuple[Distribution, ...]:
    """Each level's percentiles from its recorded histogram (steps without one are left out)."""
    rows = []
    for s in sorted_steps(steps):
        if not s.histogram:
            continue
        try:
            hist = Histogram.from_dict(s.histogram)
        except ValueError:
            continue
        cells = tuple(
            fmt.ms(hist.max if hist.count else None) if p is None else fmt.ms(hist.percentile(p))
            for _, p in DISTRIBUTION
        )
        rows.append(
            Distribution(
                users=s.users,
                phase=s.phase,
                requests=s.requests,
                cells=cells,
                sent=fmt.size(s.bytes_sent) if s.bytes_sent else fmt.MISSING,
                received=fmt.size(s.bytes_received) if s.bytes_received else fmt.MISSING,
            )
        )
    return tuple(rows)
