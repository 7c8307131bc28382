"""The sequential side-by-side test: alternating windows, planned looks, error spending.

The unit of evidence is a **window pair**: the candidate and the previous release measured at
the same load level ``N_w`` in two short windows back to back, in random order (randomised
multiple interleaved trials). With zero think time Little's law gives ``X · R̄ = N`` at a fixed
``N``, so the throughput ratio at ``N_w`` is exactly the inverse ratio of mean latency there, and
past the knee it is the capacity ratio: one number that moves with any slowdown. Its log,
``d_i = ln X_candidate − ln X_baseline``, is what the looks judge.

Uncertainty (each term has a reason in docs/verdict.md):

* within the gate: the pairs' spread, inflated for lag-1 autocorrelation (slow per-process drift
  makes neighbouring pairs alike; ``k_eff = k (1 − ρ) / (1 + ρ)``);
* between the two deployments: a fixed offset (node, process placement) does not shrink with more
  pairs. A **cross-over** (each build measured on both deployments, in equal shares) removes it
  and estimates it; without one the prior ``deploy_sd`` enters as ``2 · deploy_sd²``;
* stored mode (no previous release running now): the baseline's own standard error and the
  drift between sessions, ``2 · between_sd²``, which no number of candidate windows can shrink.

Decision at look ``j`` with one-sided levels ``α_j`` (block) and ``β_j`` (pass), spent from the
budgets with a Pocock-type function and split by Bonferroni (valid whatever the
correlation between looks): **block** when the upper ``1 − α_j`` bound is below 0 and the estimate
is worse than the practical size; **pass** when the lower ``1 − β_j`` bound is above
``ln(1 − max_regression)``; otherwise go on — or, at the last look or when even a perfect
measurement of the candidate could not decide (futility), **inconclusive**.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from perfgate.gate.crossover import MIN_PER_ARRANGEMENT

__all__ = [
    "ALPHA_BLOCK",
    "ALPHA_PASS",
    "EXTENSION_SHARE",
    "Estimate",
    "LookDecision",
    "budgets",
    "decide_look",
    "estimate_pairs",
    "estimate_stored",
    "spend",
]

ALPHA_BLOCK = 0.01  # one-sided false-block budget over all looks of one gate
ALPHA_PASS = 0.01  # one-sided budget for passing a regression beyond max_regression
# Share of each budget kept for one extension of an inconclusive gate (`perfgate run --extend`):
# the planned looks spend the rest, the extension's looks this share, so a gate and its extension
# stay within the budgets together (an extension is the same sequential test, not a new look).
EXTENSION_SHARE = 0.25


def budgets(extension: bool) -> tuple[float, float]:
    """(block, pass) levels to spend: the planned looks', or an extension's."""
    share = EXTENSION_SHARE if extension else 1.0 - EXTENSION_SHARE
    return ALPHA_BLOCK * share, ALPHA_PASS * share


MAX_RHO = 0.8  # lag-1 autocorrelation is clipped here: beyond it k_eff says nothing useful

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class Estimate:
    """Log-ratio estimate ``m`` (candidate vs baseline), its standard error and df."""

    m: float
    se: float
    df: float
    pairs: int
    rho: float = 0.0  # lag-1 autocorrelation of the residuals (0 when not estimable)
    offset: float | None = None  # estimated deployment offset (cross-over only), log scale
    how: str = ""
    fixed_var: float = 0.0  # the part of se² more pairs cannot remove (priors)


@dataclass(**_FROZEN)
class LookDecision:
    outcome: Literal["block", "pass", "continue", "inconclusive"]
    lo: float  # lower bound of the log ratio at this look's pass level
    hi: float  # upper bound at this look's block level
    why: str


def spend(fractions: Sequence[float], alpha: float) -> tuple[float, ...]:
    """Per-look levels from a Pocock-type spending function (Lan–DeMets).

    ``fractions`` are the looks' information fractions (increasing, the last 1.0). The level spent
    up to fraction ``t`` is ``α · ln(1 + (e − 1) · t)``: evenly spread, so a clear answer can stop
    the gate early (an O'Brien–Fleming shape keeps nearly all of it for the last look). Each look
    gets the increment; they add up to ``alpha``, and Bonferroni over looks keeps the total at or
    below it whatever the correlation between looks.
    """
    spent = [alpha * math.log1p((math.e - 1) * min(max(t, 0.0), 1.0)) for t in fractions]
    spent[-1] = alpha
    out, before = [], 0.0
    for s in spent:
        out.append(max(s - before, 1e-12))
        before = max(before, s)
    return tuple(out)


def _lag1(residuals: Sequence[float]) -> float:
    if len(residuals) < 4:
        return 0.0
    var = sum(r * r for r in residuals)
    if var <= 0:
        return 0.0
    cov = sum(a * b for a, b in itertools.pairwise(residuals))
    return min(MAX_RHO, max(0.0, cov / var))


def _within(residuals: Sequence[float], params: int) -> tuple[float, float, float]:
    """(se² of the mean, df, ρ) of residuals with ``params`` fitted parameters."""
    k = len(residuals)
    s2 = sum(r * r for r in residuals) / max(1, k - params)
    rho = _lag1(residuals)
    k_eff = k * (1 - rho) / (1 + rho)
    return s2 / max(k_eff, 1.0), max(1.0, k_eff - params), rho


def _satterthwaite(within_se2: float, within_df: float, prior_se2: float) -> float:
    """Degrees of freedom of ``within + prior`` (the prior is taken as exactly known)."""
    total = within_se2 + prior_se2
    if within_se2 <= 0:
        return 1e6
    return min(1e6, total * total / (within_se2 * within_se2 / within_df))


def estimate_pairs(
    d: Sequence[float],
    arrangement: Sequence[int],
    *,
    deploy_sd: float,
    renewed_var: float = 0.0,
    sessions: Sequence[int] | None = None,
) -> Estimate:
    """Estimate from pair log ratios ``d`` and each pair's arrangement (+1 / −1 = swapped).

    With both arrangements present (a cross-over) the deployment offset is fitted by least
    squares, ``d = Δ + δ·a``, and removed; otherwise ``2 · deploy_sd²`` is added to the variance.
    ``renewed_var`` is what offsets re-drawn at every swap add to a cross-over's variance
    (:func:`perfgate.gate.crossover.renewal_var`). ``sessions`` numbers the staging sessions the
    pairs come from (an extended gate, ``--extend``: new deployments, offsets of their own): each
    crossed session gets its own ``δ_s``; the pairs of sessions without a cross-over add their
    share of the prior, ``2 · deploy_sd² · n² / k²`` (one offset for them all: they may have run on
    the same two deployments).
    """
    k = len(d)
    if k < 3:
        raise ValueError(f"need at least 3 window pairs, got {k}")
    tags = list(sessions) if sessions is not None else [0] * k
    crossed = [s for s in sorted(set(tags)) if _fewest(arrangement, tags, s) >= MIN_PER_ARRANGEMENT]
    # sessions without a cross-over may have run on the same two deployments (fixed URLs): their
    # pairs share one offset, whatever the session
    uncrossed = sum(1 for s in tags if s not in crossed)
    fixed = 2 * deploy_sd * deploy_sd * uncrossed * uncrossed / (k * k) + renewed_var
    span = f" in {len(set(tags))} sessions" if len(set(tags)) > 1 else ""
    if not crossed:
        how = f"{k} window pairs{span}, deployment difference SD {deploy_sd:.1%} assumed"
        return _with_fixed(list(d), 0.0, fixed, how)
    x = np.array(
        [
            [1.0] + [a if s == c else 0.0 for c in crossed]
            for a, s in zip(arrangement, tags, strict=True)
        ]
    )
    y = np.array(d, dtype=float)
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    c00 = float(np.linalg.inv(x.T @ x)[0, 0])
    resid = [float(r) for r in y - x @ beta]
    se2, df, rho = _within(resid, x.shape[1])
    se2 *= k * c00  # OLS: var(Δ) = σ² (XᵀX)⁻¹₀₀; _within gave σ²/k_eff
    renewed = f", re-placed deployments SD {deploy_sd:.1%}" if renewed_var > 0 else ""
    offset = float(beta[-1])
    return Estimate(
        m=float(beta[0]),
        se=math.sqrt(se2 + fixed),
        df=_satterthwaite(se2, df, fixed) if fixed > 0 else df,
        pairs=k,
        rho=rho,
        offset=offset,
        how=f"{k} window pairs{span}, cross-over (deployment offset "
        f"{math.expm1(offset):+.1%} removed{renewed})",
        fixed_var=fixed,
    )


def _fewest(arrangement: Sequence[int], tags: Sequence[int], session: int) -> int:
    """Pairs in the less measured arrangement of one session."""
    signs = [a for a, s in zip(arrangement, tags, strict=True) if s == session]
    return min(sum(1 for a in signs if a > 0), sum(1 for a in signs if a < 0))


def _with_fixed(values: list[float], reference: float, fixed_var: float, how: str) -> Estimate:
    """The mean of ``values`` less ``reference``, its spread plus a variance no data shrinks."""
    m = statistics.fmean(values)
    se2, df, rho = _within([x - m for x in values], 1)
    return Estimate(
        m=m - reference,
        se=math.sqrt(se2 + fixed_var),
        df=_satterthwaite(se2, df, fixed_var),
        pairs=len(values),
        rho=rho,
        how=how,
        fixed_var=fixed_var,
    )


def estimate_stored(
    candidate_log_x: Sequence[float],
    baseline_log_x: float,
    baseline_se: float,
    *,
    between_sd: float,
) -> Estimate:
    """Candidate windows against a stored baseline measured in another session."""
    k = len(candidate_log_x)
    if k < 2:
        raise ValueError(f"need at least 2 windows, got {k}")
    fixed = baseline_se * baseline_se + 2 * between_sd * between_sd
    how = f"{k} candidate windows vs the stored baseline, between-session SD {between_sd:.1%}"
    return _with_fixed(list(candidate_log_x), baseline_log_x, fixed, how)


def decide_look(
    est: Estimate,
    *,
    max_regression: float,
    block_min_regression: float,
    alpha_block: float,
    alpha_pass: float,
    last: bool,
    floor_se: float = 0.0,
) -> LookDecision:
    """Block, pass, go on, or stop inconclusive at one planned look.

    ``floor_se`` is the part of ``est.se`` no further measurement can remove (the priors): when
    even that alone keeps both decisions out of reach, more windows are futile.
    """
    allowed = math.log(1.0 - max_regression)
    practical = math.log(1.0 - block_min_regression)
    t_block = float(stats.t.ppf(1 - alpha_block, est.df))
    t_pass = float(stats.t.ppf(1 - alpha_pass, est.df))
    hi, lo = est.m + t_block * est.se, est.m - t_pass * est.se
    if hi < 0 and est.m <= practical:
        return LookDecision(outcome="block", lo=lo, hi=hi, why="credibly worse")
    if lo > allowed:
        return LookDecision(outcome="pass", lo=lo, hi=hi, why="credibly within the allowance")
    if last:
        return LookDecision(outcome="inconclusive", lo=lo, hi=hi, why="the last planned look")
    # futility is judged at the whole budgets: the last look gets (nearly) all of them
    if floor_se > 0 and _futile(est, floor_se, allowed, practical, ALPHA_BLOCK, ALPHA_PASS):
        return LookDecision(outcome="inconclusive", lo=lo, hi=hi, why="the fixed part of the noise")
    return LookDecision(outcome="continue", lo=lo, hi=hi, why="not yet clear")


def _futile(
    est: Estimate, floor_se: float, allowed: float, practical: float, a_b: float, a_p: float
) -> bool:
    """True when even a perfect measurement of the rest could not reach either decision.

    With a fixed error ``floor_se`` a pass needs ``m > allowed + z·floor`` and a block
    ``m < min(practical, −z·floor)``; between the two lies a dead band. The gate gives up only
    when the estimate is inside it beyond doubt (± 2 within-gate standard errors).
    """
    z_b, z_p = float(stats.norm.ppf(1 - a_b)), float(stats.norm.ppf(1 - a_p))
    pass_above = allowed + z_p * floor_se
    block_below = min(practical, -z_b * floor_se)
    within = math.sqrt(max(est.se * est.se - floor_se * floor_se, 0.0))
    return block_below < est.m - 2 * within and est.m + 2 * within < pass_above
