"""Two stored baselines side by side (``perfgate baseline diff A B``): B relative to A."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from perfgate.baseline.files import StoredBaseline
from perfgate.baseline.fingerprints import comparability, slo_text
from perfgate.models import BaselineRef, StepStats

__all__ = ["BaselineDiff", "StepDiff", "diff"]

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class StepDiff:
    """Two baselines at one common user level (B relative to A)."""

    users: int
    throughput_a_rps: float
    throughput_b_rps: float
    throughput_pct: float | None
    p95_a_ms: float | None
    p95_b_ms: float | None
    p95_pct: float | None
    error_rate_a: float
    error_rate_b: float
    slo_ok_a: bool
    slo_ok_b: bool


@dataclass(**_FROZEN)
class BaselineDiff:
    """How baseline B differs from baseline A."""

    a: BaselineRef
    b: BaselineRef
    users_a: float | None
    users_b: float | None
    users_delta: float | None
    users_pct: float | None
    throughput_a_rps: float | None
    throughput_b_rps: float | None
    throughput_delta_rps: float | None
    throughput_pct: float | None
    slo_a: str
    slo_b: str
    comparable: bool
    note: str  # what differs between the fingerprints ("" when identical)
    steps: tuple[StepDiff, ...] = ()
    scenario_a: str = ""
    scenario_b: str = ""


def _pct(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return (b - a) / a * 100.0


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _by_level(steps: tuple[StepStats, ...]) -> dict[int, list[StepStats]]:
    levels: dict[int, list[StepStats]] = {}
    for step in steps:
        levels.setdefault(step.users, []).append(step)
    return levels


def _slo_of(b: StoredBaseline) -> str:
    if b.fingerprint is not None:
        return b.fingerprint.slo
    return slo_text(b.slo) if b.slo is not None else ""


def _step_diff(users: int, sa: list[StepStats], sb: list[StepStats]) -> StepDiff:
    thr_a = _mean(s.throughput_rps for s in sa) or 0.0
    thr_b = _mean(s.throughput_rps for s in sb) or 0.0
    p95_a, p95_b = _mean(s.p95_ms for s in sa), _mean(s.p95_ms for s in sb)
    return StepDiff(
        users=users,
        throughput_a_rps=thr_a,
        throughput_b_rps=thr_b,
        throughput_pct=_pct(thr_a, thr_b),
        p95_a_ms=p95_a,
        p95_b_ms=p95_b,
        p95_pct=_pct(p95_a, p95_b),
        error_rate_a=_mean(s.error_rate for s in sa) or 0.0,
        error_rate_b=_mean(s.error_rate for s in sb) or 0.0,
        slo_ok_a=all(s.slo_ok for s in sa),
        slo_ok_b=all(s.slo_ok for s in sb),
    )


def diff(a: StoredBaseline, b: StoredBaseline) -> BaselineDiff:
    """B relative to A: saturation change, fingerprint differences, steps at common user levels.

    Where a level was measured more than once (confirm/replicate steps), the values are averaged.
    """
    comparable, note = comparability(a.fingerprint, b.fingerprint)
    if a.scenario != b.scenario:
        rest = note.removeprefix("not comparable: ")
        comparable = False
        note = f"not comparable: different scenarios {a.scenario!r} → {b.scenario!r}" + (
            f"; {rest}" if rest else ""
        )
    levels_a, levels_b = _by_level(a.steps), _by_level(b.steps)
    rows = tuple(
        _step_diff(users, levels_a[users], levels_b[users])
        for users in sorted(set(levels_a) & set(levels_b))
    )
    ua, ub = a.saturation.users, b.saturation.users
    ta, tb = a.saturation.throughput_rps, b.saturation.throughput_rps
    return BaselineDiff(
        a=a.ref(),
        b=b.ref(),
        users_a=ua,
        users_b=ub,
        users_delta=_sub(ua, ub),
        users_pct=_pct(ua, ub),
        throughput_a_rps=ta,
        throughput_b_rps=tb,
        throughput_delta_rps=_sub(ta, tb),
        throughput_pct=_pct(ta, tb),
        slo_a=_slo_of(a),
        slo_b=_slo_of(b),
        comparable=comparable,
        note=note,
        steps=rows,
        scenario_a=a.scenario,
        scenario_b=b.scenario,
    )
