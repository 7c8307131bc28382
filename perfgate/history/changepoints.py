"""Change points in a release history: E-divisive means with a permutation test.

The method of Matteson & James (2014, "A nonparametric approach for multiple change point
analysis of multivariate data"), which MongoDB's ``signal-processing-algorithms`` and Apache
Otava (formerly Hunter) run over performance histories: split the series where the energy
distance between the two sides, scaled by ``m·k/(m+k)``, is largest; keep the split when a
permutation test (the segment's observations shuffled) rarely reaches it; repeat on the
segments until a split is not significant.

A permutation test cannot be significant on a short segment: 3 + 3 releases can be split in
only C(6, 3) = 20 ways, so its smallest p-value is 2/20 = 0.1. Hunter replaced the test by a
t-test for this reason; here, where a segment has fewer than ``2 / SIGNIFICANCE`` ways to be
split, the noise test below decides alone (and says so: the split's p-value is reported).

Two additions for perfgate's series, whose points are not independent measurements: a
release's level is chained through its gate's estimate against its parent, so measurement noise
accumulates as a random walk, which a permutation test alone mistakes for change. A split is
kept only if the level difference it claims is also ``MIN_Z`` standard errors beyond the
noise the links themselves report (the variance of the difference of the two segments' means,
from each link's standard error), and at least ``MIN_CHANGE`` in size (Otava's
``min_magnitude``). Neither library is used: both pin older numpy/scipy than perfgate runs
(see the commit that added this module).

Deterministic: the permutations come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["MIN_CHANGE", "MIN_SIZE", "MIN_Z", "PERMUTATIONS", "SIGNIFICANCE", "Split", "e_divisive"]

PERMUTATIONS = 199  # per tested split: p-values down to 0.005
SIGNIFICANCE = 0.05  # permutation p-value at or below which a split is significant
MIN_SIZE = 1  # releases on each side of a split (chained levels: a release alone can be a level)
MIN_Z = 4.0  # the claimed change over its standard error from the links' own noise
MIN_CHANGE = 0.01  # smallest relative change of the level reported (1 %)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    index: int  # first point of the new segment
    change: float  # exp(mean after − mean before) − 1 of the two neighbouring final segments
    p_value: float
    z: float
    tested: bool = True  # False: too few releases for the permutation test; the noise test decided


def _q_statistic(x: FloatArray, min_size: int) -> tuple[int, float]:
    """(best split, its scaled energy statistic) of one segment; (-1, 0) when too short."""
    n = len(x)
    if n < 2 * min_size:
        return -1, 0.0
    d = np.abs(x[:, None] - x[None, :])
    # prefix sums give each block's summed distances in O(1) per split
    c = np.zeros((n + 1, n + 1))
    c[1:, 1:] = d.cumsum(0).cumsum(1)

    def block(a: int, b: int, e: int, f: int) -> float:
        return float(c[b, f] - c[a, f] - c[b, e] + c[a, e])

    best, best_q = -1, -math.inf
    for tau in range(min_size, n - min_size + 1):
        m, k = tau, n - tau
        between = block(0, tau, tau, n) / (m * k)
        left = block(0, tau, 0, tau) / (m * (m - 1)) if m > 1 else 0.0
        right = block(tau, n, tau, n) / (k * (k - 1)) if k > 1 else 0.0
        q = m * k / (m + k) * (2 * between - left - right)
        if q > best_q:
            best, best_q = tau, q
    return best, best_q


def _best(x: FloatArray, bounds: Sequence[int], min_size: int) -> tuple[int, float]:
    """The best split over every current segment: (absolute index, statistic)."""
    best, best_q = -1, -math.inf
    for a, b in itertools.pairwise(bounds):
        tau, q = _q_statistic(x[a:b], min_size)
        if tau >= 0 and q > best_q:
            best, best_q = a + tau, q
    return best, best_q


def _diff_se(a: int, tau: int, b: int, increment_var: FloatArray) -> float:
    """SD of mean(x[tau:b]) − mean(x[a:tau]) when x is the running sum of independent
    increments with variances ``increment_var`` (x[i] = Σ_{j ≤ i} inc[j])."""
    j = np.arange(len(increment_var))
    # the share of each segment's points that contain increment j
    after = np.clip(b - np.maximum(j, tau), 0, None) / (b - tau)
    before = np.clip(tau - np.maximum(j, a), 0, None) / (tau - a)
    w = after - before
    return float(math.sqrt(float(np.sum(w * w * increment_var))))


def e_divisive(
    levels: Sequence[float],
    increment_se: Sequence[float],
    *,
    seed: int = 0,
    permutations: int = PERMUTATIONS,
    significance: float = SIGNIFICANCE,
    min_size: int = MIN_SIZE,
    min_z: float = MIN_Z,
    min_change: float = MIN_CHANGE,
) -> tuple[Split, ...]:
    """Change points of ``levels`` (ln capacity per release, oldest first), in index order.

    ``increment_se[i]``: the standard error of ``levels[i] − levels[i − 1]`` (``[0]`` is
    ignored). Each accepted split passed the permutation test and the noise and size filters.
    """
    x = np.asarray(levels, dtype=float)
    var = np.asarray(increment_se, dtype=float) ** 2
    if len(var):
        var[0] = 0.0
    rng = np.random.default_rng(seed)
    bounds = [0, len(x)]
    found: list[Split] = []
    while True:
        tau, q = _best(x, bounds, min_size)
        if tau < 0:
            break
        a = max(v for v in bounds if v < tau)
        b = min(v for v in bounds if v > tau)
        p = _permutation_p(x[a:b], q, rng, permutations, min_size, significance)
        delta = float(x[tau:b].mean() - x[a:tau].mean())
        se = _diff_se(a, tau, b, var)
        z = abs(delta) / se if se > 0 else math.inf
        change = math.expm1(delta)
        testable = math.comb(b - a, tau - a) * significance >= 2
        if (testable and p > significance) or z < min_z or abs(change) < min_change:
            break
        found.append(Split(index=tau, change=change, p_value=p, z=z, tested=testable))
        bounds = sorted([*bounds, tau])
    return tuple(_final_change(x, bounds, s) for s in sorted(found, key=lambda s: s.index))


def _final_change(x: FloatArray, bounds: Sequence[int], s: Split) -> Split:
    """The split's change between its neighbouring final segments (a split found early compares
    segments that later splits divided)."""
    k = bounds.index(s.index)
    delta = float(x[s.index : bounds[k + 1]].mean() - x[bounds[k - 1] : s.index].mean())
    return Split(index=s.index, change=math.expm1(delta), p_value=s.p_value, z=s.z, tested=s.tested)


def _permutation_p(
    segment: FloatArray,
    observed: float,
    rng: np.random.Generator,
    permutations: int,
    min_size: int,
    significance: float,
) -> float:
    """Share of shuffles of ``segment`` whose best statistic reaches ``observed`` (stops as soon
    as the split cannot be significant: only significant p-values are ever reported)."""
    reached = 0
    give_up = significance * (permutations + 1)
    for _ in range(permutations):
        if _q_statistic(rng.permutation(segment), min_size)[1] >= observed - 1e-12:
            reached += 1
            if reached + 1 > give_up:
                break
    return (reached + 1) / (permutations + 1)
