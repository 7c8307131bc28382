"""The cross-over's schedule: when the two deployments swap builds, and which looks can judge.

A swap is cheap on the embedded provider (a process restart at the same port, about a second)
and expensive on Kubernetes (a rollout in each namespace, often a minute). The schedule swaps
after every pair when swaps are cheap — a transient on one deployment then cannot pass for a
fixed offset — and, when they are not, after as many pairs as keep the swaps' share of the
comparison's time at ``MAX_SWAP_SHARE``, but never so rarely that the plan holds fewer than two
periods.

A look judges only when both arrangements have ``MIN_PER_ARRANGEMENT`` pairs: before that the
deployment offset is not estimable and a decision would rest on the prior alone, which is
exactly what a fixed offset between two deployments defeats.

When a swap **renews the placement** (Kubernetes re-creates the pods, and the scheduler may put
them on other nodes), each period has offsets of its own: a random effect shared by the pairs of
one period. The pairs' spread only sees it between periods, so the estimate adds
``2·deploy_sd²·(Σ n_p² − k) / k²`` for periods of ``n_p`` pairs (``k`` in all): nothing with
a swap after every pair, the whole prior with one period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_SWAP_SHARE",
    "MIN_PER_ARRANGEMENT",
    "SWAP_EVERY",
    "Schedule",
    "judgeable",
    "renewal_var",
]

SWAP_EVERY = 1  # swap after every pair when swaps are cheap (measured on process-episodes)
MAX_SWAP_SHARE = 0.25  # swaps may take at most this share of the comparison's time
MIN_PER_ARRANGEMENT = 3  # fewer pairs on one side of a cross-over cannot tell offset from luck


@dataclass(slots=True)
class Schedule:
    """The swaps of one comparison (mutable: the gate records them as it goes)."""

    enabled: bool
    every: int = SWAP_EVERY  # pairs per period
    swap_s: float = 0.0  # seconds one swap costs (estimate, then the slowest measured)
    periods: list[int] = field(default_factory=list)  # pairs measured in each period

    @classmethod
    def plan(cls, enabled: bool, swap_s: float, unit_s: float, most: int) -> Schedule:
        """Pairs per period for a swap of ``swap_s`` and a pair of ``unit_s`` seconds."""
        if not enabled:
            return cls(enabled=False)
        every = SWAP_EVERY
        if unit_s > 0 and swap_s > 0:
            every = max(every, math.ceil(swap_s / (MAX_SWAP_SHARE * unit_s)))
        every = max(SWAP_EVERY, min(every, most // 2))
        return cls(enabled=True, every=every, swap_s=max(0.0, swap_s))

    def unit_cost_s(self, unit_s: float) -> float:
        """Seconds per pair with the swaps spread over their periods."""
        return unit_s + (self.swap_s / self.every if self.enabled else 0.0)

    def due(self, unit: int) -> bool:
        """Whether to swap before measuring pair ``unit`` (1-based)."""
        return self.enabled and unit > 1 and (unit - 1) % self.every == 0

    def measured(self, arrangement_changed: bool) -> None:
        """One more pair: in a new period after a swap, else in the current one."""
        if arrangement_changed or not self.periods:
            self.periods.append(0)
        self.periods[-1] += 1


def judgeable(pairs: int, every: int, crossover: bool) -> bool:
    """Whether a look after ``pairs`` pairs has both arrangements well enough measured."""
    if not crossover:
        return True
    first = sum(min(every, pairs - start) for start in range(0, pairs, 2 * every))
    return min(first, pairs - first) >= MIN_PER_ARRANGEMENT


def renewal_var(periods: Sequence[int], deploy_sd: float) -> float:
    """Variance of the mean pair difference from offsets re-drawn in every period."""
    k = sum(periods)
    if k <= 0:
        return 0.0
    return 2 * deploy_sd * deploy_sd * (sum(n * n for n in periods) - k) / (k * k)
