"""Adaptive search for the SLO boundary: guided growth, guided bisection, ascending confirmation.

The strategy (``ramp.strategy: adaptive``) has the signature of :func:`perfgate.search.linear`
and returns the same :class:`~perfgate.search.SearchOutcome`. It follows the research note's ESB
(exponential search, bisection, confirmation) with one change the simulator showed to pay: the
next level is placed with the closed-system operational laws instead of blindly.

Why that is safe. With ``N`` zero-think users Little's law gives ``R = N / X``; throughput never
falls below the knee and is flat past it, so ``R(N) / N`` never increases with ``N``. From a
*passing* level ``n`` with p95 ``p`` the SLO ``L`` therefore cannot break before ``n · L / p``
users (a lower bound), and from a *failing* level it must have broken by ``n · L / p`` (an upper
bound); the chord between a passing and a failing level is a second lower bound (latency is convex
in ``N``). The search grows to just above that lower bound (between ``1 + resolution`` and
``MAX_GROWTH`` times the last level) and probes the bracket next to the estimate rather than at its
geometric midpoint; without p95s, or after two probes on the same side, it falls back to plain
ESB (× ``GROWTH``, geometric midpoint).

Phases (``StepStats.phase``):

* ``search``: grow from ``start_users`` until the SLO breaks or ``max_users`` holds (censored
  above). A break at the very first level is re-measured once after a cool-down; if it still
  fails the outcome is "broke at the first level" (censored below).
* ``bisect``: shrink the bracket until ``hi / lo ≤ 1 + resolution`` (or ``hi − lo ≤ 1``).
* ``confirm``: hold ``lo // 2`` users for ``ramp.cooldown_seconds`` (queues and overload state
  drain), then re-measure ``lo`` and ``hi`` in ascending order and judge each level on its
  pooled measurements. If ``lo`` now fails, or ``hi`` now passes, the search goes back into the
  neighbouring bracket and confirms again (at most ``MAX_ROUNDS`` times). A passing level whose
  p95 after overload and on the fresh ascent differ beyond both confidence intervals (and by more
  than ``HYSTERESIS_MIN``) is reported as "hysteresis suspected" in ``stopped_because``.

Per-step rules, as in the linear ramp: the first ``ramp.settle_s`` seconds are discarded and a
step measures at least ``step_seconds − settle_s`` (so a step costs ``step_seconds``); it goes on
until ``ramp.min_samples`` samples, but never beyond ``max_step_seconds − settle_s`` (default
``3 × step_seconds``). Confirmation steps measure ``CONFIRM_FACTOR`` times longer (1 by default:
see docs/verdict.md for the trade-off between search time and precision).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from perfgate.histogram import Histogram
from perfgate.models import RampSpec, Saturation, Slo, StepStats
from perfgate.search import SearchOutcome, StepRunner

__all__ = [
    "CONFIRM_FACTOR",
    "GROWTH",
    "MAX_GROWTH",
    "MAX_ROUNDS",
    "REPLICATE_FACTOR",
    "WARMUP_S",
    "adaptive",
    "replicate_hint",
]

GROWTH = 2.0  # growth factor when no latency-based estimate is available
MAX_GROWTH = 10.0  # never jump further than this from the last passing level
HYSTERESIS_MIN = 0.10  # relative p95 change that counts as hysteresis (beyond disjoint CIs)
MAX_ROUNDS = 3  # confirmation may send the search back into the bracket this many times
CONFIRM_FACTOR = 1.0  # confirmation steps measure this many times longer (within the max time)
# A focused replicate measures only its bracket. Its steps last as long as a search's: under
# bursty noise a p95 over a longer window breaks earlier, and replicates must measure the same
# thing as the first run.
REPLICATE_FACTOR = 1.0
WARMUP_S = 15.0  # a focused replicate holds half its bracket this long (at least) first

StepCallback = Callable[[StepStats], None]


class _Search:
    """Mutable state of one adaptive search (levels measured, bracket, steps)."""

    def __init__(
        self, runner: StepRunner, ramp: RampSpec, slo: Slo, on_step: StepCallback | None
    ) -> None:
        self.runner = runner
        self.ramp = ramp
        self.slo = slo
        self.on_step = on_step
        self.steps: list[StepStats] = []
        self.ratio = 1.0 + ramp.resolution
        settle = ramp.settle_s
        window = ramp.step_seconds - settle
        if window <= 0:
            raise ValueError(
                f"ramp.step_seconds {ramp.step_seconds:g} must exceed the settle time {settle:g} s"
            )
        longest = (
            ramp.max_step_seconds if ramp.max_step_seconds is not None else 3 * ramp.step_seconds
        )
        self.min_s = window
        self.max_s = max(window, longest - settle)
        self.notes: list[str] = []

    # -- measurements ---------------------------------------------------------------------------

    def measure(self, users: int, phase: str) -> StepStats:
        # The bracket's levels decide the throughput at the SLO: measure them longer (MLRsearch
        # spends its long trials at the end, too); the search steps only need a pass/fail.
        factor = {"confirm": CONFIRM_FACTOR, "replicate": REPLICATE_FACTOR}.get(phase, 1.0)
        min_s = min(self.max_s, self.min_s * factor)
        s = self.runner.measure(
            users,
            settle_s=self.ramp.settle_s,
            min_s=min_s,
            max_s=self.max_s,
            min_samples=self.ramp.min_samples,
            phase=phase,
        )
        s = dataclasses.replace(s, index=len(self.steps), phase=phase)
        self.steps.append(s)
        if self.on_step is not None:
            self.on_step(s)
        return s

    def cool_down(self, users: int) -> None:
        if self.ramp.cooldown_seconds > 0:
            self.runner.hold(max(1, users // 2), self.ramp.cooldown_seconds)

    def levels(self) -> list[int]:
        return sorted({s.users for s in self.steps})

    def at(self, users: int) -> list[StepStats]:
        return [s for s in self.steps if s.users == users]

    def p95(self, users: int) -> float | None:
        """Pooled p95 of every measurement of ``users`` (merged histograms, as analysis does)."""
        have = [s for s in self.at(users) if s.p95_ms is not None]
        if not have:
            return None
        if len(have) == 1:
            return have[0].p95_ms
        if all(s.histogram for s in have):
            try:
                merged = Histogram.merged(Histogram.from_dict(s.histogram) for s in have)
            except (ValueError, KeyError, TypeError):
                merged = None
            if merged is not None and merged.count:
                return merged.percentile(95)
        pairs = [(float(max(s.requests, 1)), s.p95_ms or 0.0) for s in have]
        return sum(w * p for w, p in pairs) / sum(w for w, _ in pairs)

    def passes(self, users: int) -> bool:
        """The level's pooled verdict: pooled p95 and error rate against the SLO."""
        got = self.at(users)
        if len(got) == 1:
            return got[0].slo_ok
        p95 = self.p95(users)
        requests = sum(s.requests for s in got)
        errors = sum(s.failures for s in got) / requests if requests else 1.0
        return p95 is not None and p95 <= self.slo.p95_ms and errors <= self.slo.error_rate

    # -- estimates ------------------------------------------------------------------------------

    def bounds(self, lo: int, hi: int | None) -> tuple[float, float] | None:
        """Operational-law bounds on the crossing (users), or None when p95s are missing."""
        limit = self.slo.p95_ms
        p_lo = self.p95(lo)
        if p_lo is None or p_lo <= 0:
            return None
        lower = lo * limit / max(p_lo, 1e-9)
        upper = math.inf
        if hi is not None:
            p_hi = self.p95(hi)
            if p_hi is not None and p_hi > limit:
                upper = hi * limit / p_hi
                if p_hi > p_lo and p_lo <= limit:  # chord: a second lower bound (convexity)
                    lower = max(lower, lo + (limit - p_lo) / (p_hi - p_lo) * (hi - lo))
            elif self.passes(hi) is False:  # failed on errors: p95 says nothing about where
                upper = float(hi)
        lower = max(lower, float(lo))
        if hi is not None:
            upper = min(upper, float(hi))
        if lower > upper:  # noise made the bounds cross: trust their midpoint
            lower = upper = math.sqrt(lower * upper)
        return lower, upper


def _round(x: float) -> int:
    return max(1, round(x))


def adaptive(
    runner: StepRunner,
    ramp: RampSpec,
    slo: Slo,
    *,
    on_step: StepCallback | None = None,
    hint: tuple[int, int] | None = None,
) -> SearchOutcome:
    """Find the SLO boundary: guided growth, bisection to ``ramp.resolution``, confirmation.

    ``hint``: the bracket a previous run of the same build found (``Saturation.bracket``). The
    run is then a focused replicate: warm up at half the bracket, measure its two levels in
    ascending order (longer, phase ``replicate``), and move only if they no longer bracket.
    """
    if ramp.start_users < 1:
        raise ValueError(f"ramp.start_users must be ≥ 1, got {ramp.start_users}")
    if ramp.max_users < ramp.start_users:
        raise ValueError(
            f"ramp.max_users {ramp.max_users} is below ramp.start_users {ramp.start_users}"
        )
    if ramp.resolution <= 0:
        raise ValueError(f"ramp.resolution must be > 0, got {ramp.resolution}")
    st = _Search(runner, ramp, slo, on_step)
    if hint is not None and 1 <= hint[0] < hint[1]:
        # One resolution wider on each side than the hinted bracket: its levels sat right at
        # the boundary, where a re-measurement flips a coin and would send the search looking.
        lo = max(1, min(hint[0] - 1, math.floor(hint[0] / st.ratio)))
        hi = min(ramp.max_users, max(hint[1] + 1, math.ceil(hint[1] * st.ratio)))
        if lo < hi:
            # a fresh target warms up (JIT, caches, pools) before the bracket is measured
            runner.hold(max(1, lo // 2), max(WARMUP_S, 2 * ramp.step_seconds))
            return _finish(st, *_confirm(st, lo, hi, "replicate"), focused=True)

    # -- search: grow until the SLO breaks ----------------------------------------------------
    users = ramp.start_users
    first = st.measure(users, "search")
    if not first.slo_ok:
        # a single failing step at the first level may be noise: look again after a cool-down
        st.cool_down(users)
        st.measure(users, "confirm")
        if not st.passes(users):
            reason = first.slo_reason or "SLO not met"
            return SearchOutcome(
                steps=tuple(st.steps),
                stopped_because=(
                    f"the SLO broke at the first level ({users} users: {reason}) and stayed "
                    f"broken after a cool-down; saturation < {users} users (censored below start)"
                ),
            )
    lo = users
    while True:
        if lo >= ramp.max_users:
            return _censored_above(st)
        b = st.bounds(lo, None)
        growth = GROWTH if b is None else b[0] * math.sqrt(st.ratio) / lo
        growth = min(max(growth, st.ratio), MAX_GROWTH)
        nxt = min(max(_round(lo * growth), lo + 1), ramp.max_users)
        s = st.measure(nxt, "search")
        if s.slo_ok:
            lo = nxt
        else:
            hi = nxt
            break

    # -- bisect: shrink the bracket to the resolution -------------------------------------------
    lo, hi = _bisect(st, lo, hi)

    # -- confirm: cool down, re-measure the bracket ascending ----------------------------------
    return _finish(st, *_confirm(st, lo, hi, "confirm"))


def replicate_hint(first_runs: Sequence[Saturation]) -> tuple[int, int] | None:
    """The bracket later replicates should re-measure: the union of the first runs' brackets.

    In paired mode pass both builds' first runs: measuring both builds at the same levels makes
    whatever the levels do to the throughput estimate (a bracket placed where only noisy windows
    fail selects windows with less throughput) the same for both, so it cancels in their ratio.
    Measured in the simulator: with a bracket per build the pairs' log ratios correlated
    (SD of the mean of 8 pairs 3.3 % instead of 2.5 %) and the A/A false-block rate tripled.
    """
    brackets = [
        r.bracket for r in first_runs if r.censored == "no" and r.bracket and r.bracket[0] >= 1
    ]
    if not brackets:
        return None
    return min(b[0] for b in brackets), max(b[1] for b in brackets)


def _censored_above(st: _Search) -> SearchOutcome:
    top = st.ramp.max_users
    return SearchOutcome(
        steps=tuple(st.steps),
        stopped_because=(
            f"the SLO held up to max_users ({top}): saturation ≥ {top} users (censored above max)"
        ),
    )


def _confirm(st: _Search, lo: int, hi: int, phase: str) -> tuple[int, int, int]:
    """Re-measure [lo, hi] ascending after a cool-down until it brackets; (lo, hi, rounds)."""
    ramp = st.ramp
    rounds = 0
    while True:
        rounds += 1
        before = [s for s in st.at(lo) if s.phase not in ("confirm", "replicate")]
        if phase == "confirm" or rounds > 1:
            st.cool_down(lo)
        fresh = st.measure(lo, phase)
        _check_hysteresis(st, lo, before, fresh)
        if not st.passes(lo):
            if rounds > MAX_ROUNDS:
                break
            below = [u for u in st.levels() if u < lo and st.passes(u)]
            if not below:
                # nothing measured below (a focused replicate): step down until the SLO holds
                u = lo
                for _ in range(MAX_ROUNDS + 1):
                    if u <= 1:
                        break
                    u = max(1, min(u - 1, _round(u / st.ratio**2)))
                    st.measure(u, "bisect")
                    if st.passes(u):
                        below = [u]
                        break
                if not below:
                    break
            # the boundary is lower than thought: bisect again below
            st.notes.append(f"{lo} users failed on re-measurement: searching below it again")
            lo, hi = _bisect(st, max(below), lo)
            continue
        if not any(s.phase in ("confirm", "replicate") for s in st.at(hi)):
            st.measure(hi, phase)
        if st.passes(hi) and rounds <= MAX_ROUNDS and hi < ramp.max_users:
            # the break did not reproduce: search above it again
            st.notes.append(f"{hi} users passed on re-measurement: searching above it again")
            above = [u for u in st.levels() if u > hi and not st.passes(u)]
            if not above:
                u = hi
                while st.passes(u) and u < ramp.max_users:
                    u = min(ramp.max_users, max(u + 1, _round(u * st.ratio)))
                    st.measure(u, "bisect")
                if st.passes(u):
                    break  # held up to max_users after all
                above = [u]
            lo, hi = _bisect(st, hi, min(above))
            continue
        break
    return lo, hi, rounds


def _finish(st: _Search, lo: int, hi: int, rounds: int, *, focused: bool = False) -> SearchOutcome:
    if all(st.passes(u) for u in st.levels()) and max(st.levels()) >= st.ramp.max_users:
        return _censored_above(st)
    lo_ok, hi_ok = st.passes(lo), st.passes(hi)
    what = "focused replicate: " if focused else ""
    if lo_ok and not hi_ok:
        verdict = f"{what}confirmed the SLO boundary between {lo} and {hi} users"
    elif lo_ok:
        verdict = (
            f"{what}the SLO held at {hi} users on re-measurement and the confirmation limit "
            f"({MAX_ROUNDS} rounds) or max_users was reached: the boundary is noisy here"
        )
    else:
        verdict = (
            f"{what}{lo} users failed on re-measurement after {rounds - 1} extra round(s): the "
            "boundary is noisy here or the service degrades with time"
        )
    notes = "; ".join(st.notes)
    return SearchOutcome(
        steps=tuple(st.steps),
        stopped_because=f"{verdict}{'; ' + notes if notes else ''}",
    )


def _bisect(st: _Search, lo: int, hi: int) -> tuple[int, int]:
    """Shrink [lo, hi] until hi/lo ≤ ratio or hi − lo ≤ 1; returns the final bracket."""
    r = st.ratio
    same_side = 0
    last_side: bool | None = None
    while True:
        # levels already measured inside the bracket decide without a new step
        for u in st.levels():
            if lo < u < hi:
                if st.passes(u):
                    lo = u
                else:
                    hi = u
                    break
        if hi / lo <= r or hi - lo <= 1:
            break
        b = st.bounds(lo, hi)
        if b is None or same_side >= 2:
            target = math.sqrt(lo * hi)  # plain geometric bisection
            same_side = 0
        else:
            est = math.sqrt(b[0] * b[1])
            if hi / lo <= r * r:
                # one probe can close the bracket: stay within [hi/r, lo·r], near the estimate
                target = min(max(est, hi / r), lo * r)
            elif lo < est / math.sqrt(r):
                target = est / math.sqrt(r)  # aim just below the estimate: expect a pass
            else:
                target = est * math.sqrt(r)  # aim just above: expect a fail
        m = min(max(_round(target), lo + 1), hi - 1)
        st.measure(m, "bisect")
        side = st.passes(m)
        same_side = same_side + 1 if side == last_side else 0
        last_side = side
        if side:
            lo = m
        else:
            hi = m
    return lo, hi


def _check_hysteresis(st: _Search, users: int, before: list[StepStats], after: StepStats) -> None:
    """Flag a level whose p95 moved beyond both CIs between the search and the fresh ascent."""
    for s in before:
        if s.p95_ci_ms is None or after.p95_ci_ms is None:
            continue
        overloaded_before = any(not p.slo_ok and p.users > users for p in st.steps[: s.index])
        disjoint = s.p95_ci_ms[0] > after.p95_ci_ms[1] or after.p95_ci_ms[0] > s.p95_ci_ms[1]
        # a few per cent is within the noise of a p95 even when the iid intervals are disjoint
        material = abs(s.p95_ms - after.p95_ms) > HYSTERESIS_MIN * after.p95_ms  # type: ignore[operator]
        if overloaded_before and disjoint and material:
            st.notes.append(
                f"hysteresis suspected at {users} users: p95 {s.p95_ms:.0f} ms after overload vs "
                f"{after.p95_ms:.0f} ms on a fresh ascent"
            )
            return
