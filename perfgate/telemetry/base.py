"""The one small protocol every telemetry source implements, and the window arithmetic they share.

A :class:`Sampler` does I/O in :meth:`Sampler.sample` (one raw snapshot, or
:class:`Unavailable` saying why not) and is pure in :meth:`Sampler.summarise` (snapshots → the
readings of one measuring window). Counters become rates over the window (interpolated at its
edges), gauges its mean.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from perfgate.models import ResourceReading

__all__ = [
    "Points",
    "Sampler",
    "Snapshots",
    "Summary",
    "Unavailable",
    "mean_in",
    "rate_in",
    "series",
]

Snapshots = Sequence[tuple[float, Any]]  # (monotonic seconds, what sample() returned), in order
Points = Sequence[tuple[float, float]]


class Unavailable(Exception):
    """A source cannot be measured now; the message says what and why, in words."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """One source's part of a window's :class:`~perfgate.models.StepResources`."""

    readings: tuple[ResourceReading, ...] = ()
    cpu_cores: float | None = None  # CPU of the system under test this source saw
    events: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


class Sampler(Protocol):
    """A telemetry source of the system under test (exchange, process, pods, Prometheus)."""

    label: str  # in words, for "could not measure …" ("the Kubernetes metrics API")

    def sample(self) -> Any: ...  # one snapshot; raises Unavailable

    def summarise(self, snaps: Snapshots, t0: float, t1: float) -> Summary: ...


def series(snaps: Snapshots, key: Any) -> list[tuple[float, float]]:
    """The points of one key of dict snapshots (snapshots without it skipped)."""
    out = []
    for t, snap in snaps:
        value = snap.get(key) if isinstance(snap, dict) else None
        if isinstance(value, int | float):
            out.append((t, float(value)))
    return out


def _at(points: Points, t: float) -> float:
    """Linear interpolation at ``t`` (held constant beyond the first and last points)."""
    if t <= points[0][0]:
        return points[0][1]
    for (ta, va), (tb, vb) in itertools.pairwise(points):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return points[-1][1]


def rate_in(points: Points, t0: float, t1: float) -> float | None:
    """Per-second increase of a counter over [t0, t1]; None when unknown (or it was reset).

    The window must be covered: a counter seen only after ``t0`` or only before ``t1`` cannot
    say what happened at the edge (within a quarter of the window is close enough).
    """
    if len(points) < 2 or t1 <= t0:
        return None
    slack = (t1 - t0) / 4
    if points[0][0] > t0 + slack or points[-1][0] < t1 - slack:
        return None
    inside = [v for t, v in points if t0 - slack <= t <= t1 + slack]
    if any(b < a for a, b in itertools.pairwise(inside)):
        return None  # the process restarted: its counters began again
    lo = max(t0, points[0][0])
    hi = min(t1, points[-1][0])
    if hi <= lo:
        return None
    return (_at(points, hi) - _at(points, lo)) / (hi - lo)


def mean_in(points: Points, t0: float, t1: float) -> float | None:
    """Mean of a gauge's points within [t0, t1] (the nearest point when none falls inside)."""
    inside = [v for t, v in points if t0 <= t <= t1]
    if inside:
        return sum(inside) / len(inside)
    if not points:
        return None
    mid = (t0 + t1) / 2
    t, v = min(points, key=lambda p: abs(p[0] - mid))
    return v if abs(t - mid) <= (t1 - t0) else None
