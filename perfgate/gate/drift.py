"""The drift rule: the slow creep that release-to-release comparisons let through.

Five releases each 3 % slower than the one before pass "no worse than the last one" every time
and lose 14 % together. With ``gate.max_drift`` set, the gate also compares the candidate with a
reference further back — the release marked with ``perfgate baseline mark-reference``, else the
best of the last ``gate.drift_releases`` stored releases — through the history's levels
(:mod:`perfgate.history`: each release's own gate estimate against its parent, chained). The
estimate is this gate's ln ratio against its baseline plus the baseline's level minus the
reference's; its variance adds this gate's and the links' on the way. Block when the upper end of
its one-sided ``DRIFT_CONFIDENCE`` (95 %) interval is below ``ln(1 − max_drift)``: credibly more
than that below the reference. The history arrives as plain data; nothing here reads a file.

Why 95 % one-sided, not the regression rule's 99 %: the estimate carries the noise of every link
between the reference and the candidate. Side by side a link's estimate spreads about 0.3 %
(docs/verdict.md §6), so across six links and this gate the SD is about 0.8 %; at 99 % the upper
end of a true 11.5 % loss (three 4 % steps) stays above 10 % and the creep is never blocked, at
95 % it is. Each link's standard error is taken as at least ``MIN_LINK_SE``: a look's own error
from six window pairs (4 degrees of freedom) can be far below the estimate's real spread.

Choosing the best of K noisy levels favours a reference measured high; the bias is the noise of
one link (a few tenths of a percent side by side), small against a 10 % allowance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scipy import stats

from perfgate import fmt
from perfgate.gate.rules import CONFIDENCE, combine
from perfgate.models import GateResult, GateSpec, History, HistoryRow, LookRecord, RuleResult

__all__ = ["DRIFT_CONFIDENCE", "MIN_LINK_SE", "drift_rule", "with_drift"]

DRIFT_CONFIDENCE = 0.95  # one-sided: block when the upper end is below ln(1 − max_drift)
MIN_LINK_SE = 0.0027  # the default gate's A/A spread of its estimate (docs/verdict.md §6)


def _fmt_ratio(r: float) -> str:
    return f"{r:.3f}"


def _ancestors(rows: Sequence[HistoryRow], index: int) -> list[int]:
    """``index`` and the rows its level is chained from, newest first."""
    by_name = {r.release: i for i, r in enumerate(rows)}
    chain, seen = [index], {index}
    while (parent := rows[chain[-1]].parent) is not None:
        i = by_name.get(parent)
        if i is None or i in seen:
            break
        chain.append(i)
        seen.add(i)
    return chain


@dataclass(frozen=True, slots=True)
class _Reference:
    rows: tuple[int, ...]  # the reference releases (one, or a level between change points)
    how: str

    def name(self, rows: Sequence[HistoryRow]) -> str:
        names = [rows[i].release for i in sorted(self.rows)]
        return names[0] if len(names) == 1 else f"{names[0]}…{names[-1]}"


def _reference(history: History, chain: Sequence[int], gate: GateSpec) -> _Reference:
    """The marked release on the baseline's chain, else the best level among the last
    ``drift_releases`` releases: the releases between two change points are one level, their
    mean (the best single release of K noisy ones would be biased high by the noise)."""
    rows = history.rows
    if history.reference is not None:
        marked = [i for i in chain if rows[i].release == history.reference]
        if marked:
            return _Reference((marked[0],), "the marked reference")
    recent = chain[: gate.drift_releases]
    starts = sorted(p.index for p in history.change_points)
    levels: dict[int, list[int]] = {}
    for i in recent:
        levels.setdefault(sum(1 for s in starts if s <= i), []).append(i)
    best = max(levels.values(), key=lambda g: (statistics.fmean(rows[i].level_log for i in g), g))
    what = "release" if len(best) == 1 else "level, between change points,"
    return _Reference(tuple(best), f"the best {what} of the last {len(recent)} releases")


def _path_var(rows: Sequence[HistoryRow], chain: Sequence[int], ref: Sequence[int]) -> float:
    """Variance of ln(baseline) − mean ln(reference releases) from the links' errors: the link
    into chain[q] counts for the share of reference releases older than it."""
    position = {row: q for q, row in enumerate(chain)}
    older = [position[i] for i in ref]
    var = 0.0
    for q, row in enumerate(chain):
        share = sum(1 for p in older if p > q) / len(older)
        var += (share * (rows[row].change_se or 0.0)) ** 2
    return var


def _losses(rows: Sequence[HistoryRow], chain: Sequence[int], m: float) -> str:
    """The steps from the reference to the candidate that lost capacity, oldest first."""
    steps = [(rows[i].release, rows[i].change_log or 0.0) for i in reversed(chain)]
    steps.append(("this release", m))
    shown = [f"{name} {fmt.percent(100 * math.expm1(d))}" for name, d in steps if d <= -0.01]
    if len(shown) > 8:
        shown = [*shown[:3], f"… {len(shown) - 6} more …", *shown[-3:]]
    return ", ".join(shown) or "no single release lost 1 % or more"


def drift_rule(
    *,
    gate: GateSpec,
    history: History | None,
    baseline_release: str | None,
    m: float | None,
    se: float | None,
) -> RuleResult:
    """The candidate against the reference, through the history (see the module doc).

    ``m``, ``se``: ln(candidate / baseline) and its standard error from this gate.
    """
    if gate.max_drift is None:
        return RuleResult(name="drift", outcome="skipped", message="drift: no gate.max_drift set")
    rows = history.rows if history is not None else ()
    base = next((i for i, r in enumerate(rows) if r.release == baseline_release), None)
    if history is None or base is None or m is None or se is None:
        why = (
            "this gate made no estimate against its baseline"
            if base is not None
            else "the baseline is not in the stored history"
        )
        return RuleResult(name="drift", outcome="skipped", message=f"drift: not judged: {why}")
    chain = _ancestors(rows, base)
    ref = _reference(history, chain, gate)
    name = ref.name(rows)
    d = m + rows[base].level_log - statistics.fmean(rows[i].level_log for i in ref.rows)
    se = max(se, MIN_LINK_SE)
    sd = math.sqrt(se * se + _path_var(rows, chain, ref.rows))
    hi = math.exp(d + float(stats.norm.ppf(DRIFT_CONFIDENCE)) * sd)
    threshold = 1.0 - gate.max_drift
    since = chain[: min(chain.index(i) for i in ref.rows)]  # the releases after the reference
    numbers = (
        f"drift vs {name} ({ref.how}): capacity ratio {_fmt_ratio(math.exp(d))} "
        f"({DRIFT_CONFIDENCE:.0%} upper bound {_fmt_ratio(hi)}) over "
        f"{len(since) + 1} release(s); losses: {_losses(rows, since, m)}"
    )
    if hi < threshold:
        outcome, why = "fail", f"credibly more than the allowed {gate.max_drift:.0%} below {name}"
    else:
        outcome, why = "pass", f"not credibly more than {gate.max_drift:.0%} below {name}"
    return RuleResult(
        name="drift",
        outcome=outcome,  # type: ignore[arg-type]
        message=f"{numbers}: {why}",
        value=math.exp(d),
        threshold=threshold,
        margin=hi - threshold,
    )


def with_drift(
    result: GateResult,
    *,
    gate: GateSpec,
    history: History | None,
    baseline_release: str | None,
    looks: Sequence[LookRecord] = (),
) -> GateResult:
    """``result`` with the drift rule added and the verdict combined again (nothing changes
    without ``gate.max_drift``). The estimate is the last look's, else the 98 % interval's."""
    if gate.max_drift is None:
        return result
    m: float | None = None
    se: float | None = None
    if looks and looks[-1].ratio > 0 and looks[-1].se_log > 0:
        m, se = math.log(looks[-1].ratio), looks[-1].se_log
    elif result.ratio is not None and result.ratio_ci is not None and result.ratio_ci[0] > 0:
        z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))  # the regression rule's interval
        m = math.log(result.ratio)
        se = (math.log(result.ratio_ci[1]) - math.log(result.ratio_ci[0])) / (2 * z)
    rule = drift_rule(gate=gate, history=history, baseline_release=baseline_release, m=m, se=se)
    combined = combine((*result.rules, rule))
    return replace(combined, ratio=result.ratio, ratio_ci=result.ratio_ci)
