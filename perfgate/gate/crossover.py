"""The cross-over's schedule: when the two deployments swap builds, and which looks can judge.

A swap is cheap on the embedded provider (a process restart at the same port, about a second)
and expensive on Kubernetes (a rollout in each namespace, often a minute). The schedule swaps
after every pair when swaps are cheap — a transient on one deployment then cannot pass for a
fixed offset — and, when they are not, after as many pairs as keep the swaps' share of the
comparison's time at ``MAX_SWAP_SHARE``, but never so rarely that the plan holds fewer than two
periods.

A look judges only when both arrangements have ``MIN_PER_ARRANGEMENT`` pairs: before that the
deployment offset is not estimable and a decision would rest on the prior alone, which is
exactly what a fixed offset between two deployments defeats. So the first period is that short:
with slow swaps the first look (6 pairs) still sees both arrangements, and most gates stop there.

When a swap **renews the placement** (Kubernetes re-creates the pods, and the scheduler may put
them on other nodes), each period has offsets of its own: a random effect shared by the pairs of
one period, which the cross-over's fit cannot remove; :func:`renewal_var` adds it to the
estimate's variance (with one period per arrangement: ``deploy_sd²``, half the no-cross-over
prior; less with more periods). One slow node then weighs on one period in four at the first
look: the schedule starts with two short periods per arrangement, and no look judges before.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_SWAP_SHARE",
    "MIN_PER_ARRANGEMENT",
    "SWAP_EVERY",
    "Schedule",
    "renewal_var",
]

SWAP_EVERY = 1  # swap after every pair when swaps are cheap (measured on process-episodes)
MAX_SWAP_SHARE = 0.25  # swaps may take at most this share of the comparison's time
MIN_PER_ARRANGEMENT = 3  # fewer pairs on one side of a cross-over cannot tell offset from luck


@dataclass(slots=True)
class Schedule:
    """The swaps of one comparison (mutable: the gate records them as it goes).

    The first period is short (``MIN_PER_ARRANGEMENT`` pairs at most), so the first look can
    already judge with both arrangements measured; the later ones are ``every`` pairs long.
    """

    enabled: bool
    every: int = SWAP_EVERY  # pairs per period after the short ones
    swap_s: float = 0.0  # seconds one swap costs (the estimate it was planned on)
    renews: bool = False  # a swap re-draws the offsets: two short periods per arrangement
    periods: list[int] = field(default_factory=list)  # pairs measured in each period

    @classmethod
    def plan(
        cls, enabled: bool, swap_s: float, unit_s: float, most: int, renews: bool = False
    ) -> Schedule:
        """Pairs per period for a swap of ``swap_s`` and a pair of ``unit_s`` seconds."""
        if not enabled:
            return cls(enabled=False)
        every = SWAP_EVERY
        if unit_s > 0 and swap_s > 0:
            every = max(every, math.ceil(swap_s / (MAX_SWAP_SHARE * unit_s)))
        every = max(SWAP_EVERY, min(every, most // 2))
        return cls(enabled=True, every=every, swap_s=max(0.0, swap_s), renews=renews)

    @property
    def first(self) -> int:
        """Pairs in each short period at the start."""
        return min(self.every, MIN_PER_ARRANGEMENT)

    @property
    def short(self) -> int:
        """How many short periods start the schedule: with re-drawn offsets, two per
        arrangement, so that no look rests on one placement of each build (one slow node)."""
        return 4 if self.renews else 1

    def due(self, unit: int) -> bool:
        """Whether to swap before measuring pair ``unit`` (1-based)."""
        if not self.enabled or unit <= 1:
            return False
        done = unit - 1  # pairs before this one
        if done <= self.short * self.first:
            return done % self.first == 0
        return (done - self.short * self.first) % self.every == 0

    def cost_s(self, pairs: int, unit_s: float) -> float:
        """Seconds ``pairs`` pairs take with the swaps among them."""
        return pairs * unit_s + self.swap_s * sum(self.due(u) for u in range(2, pairs + 1))

    def fits(self, most: int, unit_s: float, left_s: float) -> int:
        """The most pairs, up to ``most``, whose time with their swaps fits in ``left_s``."""
        while most > 0 and self.cost_s(most, unit_s) > left_s:
            most -= 1
        return most

    def judgeable(self, pairs: int) -> bool:
        """Whether a look after ``pairs`` pairs has both arrangements well enough measured."""
        if not self.enabled:
            return True
        arrangement, counts, periods = 1, {1: 0, -1: 0}, {1: 1, -1: 0}
        for unit in range(1, pairs + 1):
            if self.due(unit):
                arrangement = -arrangement
                periods[arrangement] += 1
            counts[arrangement] += 1
        enough = min(periods.values()) >= (2 if self.renews else 1)
        return enough and min(counts.values()) >= MIN_PER_ARRANGEMENT

    def measured(self, arrangement_changed: bool) -> None:
        """One more pair: in a new period after a swap, else in the current one."""
        if arrangement_changed or not self.periods:
            self.periods.append(0)
        self.periods[-1] += 1


def renewal_var(arrangement: Sequence[int], sessions: Sequence[int], deploy_sd: float) -> float:
    """Variance the offsets re-drawn at every swap add to the cross-over's estimate.

    Each period (a run of one arrangement in one session) has its own difference between the two
    deployments, of variance ``2·deploy_sd²``; the fit averages the arrangements' means, so a
    period of ``n_p`` pairs weighs ``n_p / (2·n_arrangement)`` in a session, and a session
    ``n_s / k`` in the whole. Counted in full (the fit's residuals see none of it when each
    arrangement has one period), so the estimate errs on the wide side.
    """
    k = len(arrangement)
    total = 0.0
    for session in sorted(set(sessions)):
        runs = [
            (sign, len(list(group)))
            for (s, sign), group in itertools.groupby(zip(sessions, arrangement, strict=True))
            if s == session
        ]
        n = {sign: sum(size for a, size in runs if a == sign) for sign in (1, -1)}
        if min(n.values()) == 0:
            continue  # no cross-over in this session: the prior covers it
        within = sum(size * size / (4 * n[sign] ** 2) for sign, size in runs)
        total += (sum(n.values()) / k) ** 2 * within
    return 2 * deploy_sd * deploy_sd * total
