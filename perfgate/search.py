"""Search strategies: which load levels to measure, driving any :class:`StepRunner`.

A strategy only sees the ``StepRunner`` protocol (docs/ARCHITECTURE.md), so the real Locust
runner (:class:`perfgate.load.LocustRunner`), the simulator and a test's tiny fake all exercise
the same code. Each strategy is a function ``strategy(runner, ramp, slo, *, on_step=None) ->
SearchOutcome``; ``linear`` is the step ramp, ``adaptive`` sits beside it.

Linear ramp (``linear``):

- Levels ``start_users, start_users + step_users, …`` up to and including ``max_users`` when
  it falls on the grid (never above it).
- Every step lasts ``step_seconds`` in total: the first ``ramp.settle_s`` seconds are discarded,
  the remaining ``step_seconds − settle_s`` are measured (``min_s = max_s``, no sample minimum),
  so the wall time of a ramp is predictable. Extending steps until enough samples arrive is the
  adaptive strategy's business.
- Stop once the SLO has broken and the next step confirmed it (two consecutive failing steps).
  A failing step followed by a passing one is treated as noise and the ramp goes on.
- Stop at ``max_users`` otherwise.
- Step ``index`` is the position in ``SearchOutcome.steps`` (0, 1, 2, …); ``started_s`` is what
  the runner reported (the measuring window's offset from the run's start).

Interrupting a search (KeyboardInterrupt, a LoadError) propagates; steps measured so far have
already been passed to ``on_step``, which is how a caller keeps a partial result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from perfgate.models import RampSpec, Slo, StepStats

StepCallback = Callable[[StepStats], None]


class StepRunner(Protocol):
    """Measures one load level at a time (implemented by LocustRunner and SimulatedRunner)."""

    def measure(
        self,
        users: int,
        *,
        settle_s: float,
        min_s: float,
        max_s: float,
        min_samples: int,
        phase: str,
    ) -> StepStats: ...

    def hold(self, users: int, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchOutcome:
    """The steps a strategy measured, in order, and why it stopped (in words)."""

    steps: tuple[StepStats, ...]
    stopped_because: str


def linear_levels(ramp: RampSpec) -> tuple[int, ...]:
    """The user counts a linear ramp visits (all of them, if the SLO never breaks)."""
    if ramp.start_users < 1:
        raise ValueError(f"ramp.start_users must be ≥ 1, got {ramp.start_users}")
    if ramp.step_users < 1:
        raise ValueError(f"ramp.step_users must be ≥ 1, got {ramp.step_users}")
    if ramp.max_users < ramp.start_users:
        raise ValueError(
            f"ramp.max_users {ramp.max_users} is below ramp.start_users {ramp.start_users}"
        )
    return tuple(range(ramp.start_users, ramp.max_users + 1, ramp.step_users))


def _describe_slo(slo: Slo) -> str:
    return f"p95 ≤ {slo.p95_ms:g} ms, errors ≤ {slo.error_rate * 100:g}%"


def linear(
    runner: StepRunner,
    ramp: RampSpec,
    slo: Slo,
    *,
    on_step: StepCallback | None = None,
) -> SearchOutcome:
    """Step ramp: measure each level until the SLO breaks twice in a row or max_users."""
    levels = linear_levels(ramp)
    settle_s = ramp.settle_s
    window_s = ramp.step_seconds - settle_s
    if window_s <= 0:
        raise ValueError(
            f"ramp.step_seconds {ramp.step_seconds:g} must exceed the settle time {settle_s:g} s"
        )
    steps: list[StepStats] = []
    for users in levels:
        stats = runner.measure(
            users,
            settle_s=settle_s,
            min_s=window_s,
            max_s=window_s,
            min_samples=0,
            phase="ramp",
        )
        stats = dataclasses.replace(stats, index=len(steps), phase="ramp")
        steps.append(stats)
        if on_step is not None:
            on_step(stats)
        if not stats.slo_ok and len(steps) >= 2 and not steps[-2].slo_ok:
            first = steps[-2]
            return SearchOutcome(
                steps=tuple(steps),
                stopped_because=(
                    f"SLO ({_describe_slo(slo)}) broke at {first.users} users "
                    f"({first.slo_reason or 'SLO not met'}) and stayed broken at "
                    f"{stats.users} users ({stats.slo_reason or 'SLO not met'})"
                ),
            )
    last = steps[-1]
    top = (
        f"reached max_users ({ramp.max_users})"
        if last.users == ramp.max_users
        else (f"reached the last level ({last.users} users) below max_users ({ramp.max_users})")
    )
    if not last.slo_ok:
        why = f"{top}; the SLO broke at the last step ({last.slo_reason}), unconfirmed"
    elif any(not s.slo_ok for s in steps):
        broke = ", ".join(str(s.users) for s in steps if not s.slo_ok)
        why = f"{top}; the SLO broke only at isolated steps ({broke} users) and held after"
    else:
        why = f"{top} without breaking the SLO ({_describe_slo(slo)})"
    return SearchOutcome(steps=tuple(steps), stopped_because=why)


STRATEGIES: dict[str, Callable[..., SearchOutcome]] = {"linear": linear}
