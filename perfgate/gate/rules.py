"""The verdict: pass / block / inconclusive, from the saturation point, the baseline and the noise.

Rules (each a :class:`~perfgate.models.RuleResult` with its numbers and margin):

``floor``
    Block when the saturation users are below ``gate.min_users`` (skipped without a floor). A run
    that never broke at or above the floor passes it; one that never broke below the floor, or
    broke at a first level above the floor, cannot tell (inconclusive).
``generator`` (validity)
    Inconclusive when the load generator limited any level that decides the boundary (Little's
    law ``X·R/N`` well below 1, or the generator's CPU pegged): the run measured the generator.
``comparability`` (validity)
    Inconclusive when the baseline's fingerprint differs (``comparable=False``), with the note.
``noise`` (validity)
    Inconclusive when the replicates spread more than the calibrated noise allows (F-test, 99 %).
``drift`` (``gate.max_drift``; skipped when absent)
    The candidate against a reference further back — the release marked with ``perfgate
    baseline mark-reference``, else the best of the last ``gate.drift_releases`` stored releases
    — by chaining this gate's estimate against its baseline with the history's levels (each
    release's own gate estimate against its parent, :mod:`perfgate.history`; the rule is in
    :mod:`perfgate.gate.drift`, to keep this module within its size): block when the
    upper end of the 98 % interval is below ``ln(1 − max_drift)``, i.e. credibly more than that
    below the reference although each step may have passed. The reason names the releases the
    loss accumulated over.
``regression``
    On ``d = ln(X_candidate / X_baseline)``, X = throughput at the SLO boundary:

    * with **no noise information** (one run each, no calibration, no replicates) the simple rule
      of the foundation issue: block when ``d < ln(1 − max_regression)``, pass otherwise;
    * otherwise an interval ``m ± t·se`` at ``CONFIDENCE`` (98 % two-sided: 1 % per side) whose
      variance pools the replicates' own spread with the calibrated prior (``noise.json``) or, when
      there is none, the conservative default prior: **pass** when the lower end is above
      ``ln(1 − max_regression)`` (credibly not worse than allowed), else **block** when the upper
      end is below 0 and ``m ≤ ln(1 − block_min_regression)`` (credibly worse, and by more than
      the practical size), else **inconclusive**. As the noise goes to zero this reduces to the
      simple rule. Paired mode (candidate and baseline measured interleaved) judges the mean of the
      per-pair log ratios with the calibrated *pair* spread; stored-baseline mode compares the
      means of the two builds' log throughputs (Welch-like, common variance).

    A run that did not find the boundary is judged on the bound it gives (a candidate that held
    the SLO beyond the baseline's boundary is not a regression; a baseline that never broke can
    only show a regression that is credible against its lower bound); otherwise inconclusive.

Verdict: inconclusive if the generator was limited; else block if any rule failed; else
inconclusive if any rule was inconclusive; else pass. The CLI maps pass 0, block 1,
inconclusive 4. With replicates use :func:`plan_looks`: the verdict may stop at each planned look,
and the 1 %-per-side level per look keeps the family-wise false-block rate ≤ 2 % for two looks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from scipy import stats

from perfgate import fmt
from perfgate.calibration import NoiseModel, default_noise
from perfgate.models import (
    BaselineRef,
    GateResult,
    GateSpec,
    RuleResult,
    Saturation,
    StepStats,
)
from perfgate.steps import LITTLE_RATIO_MIN

__all__ = [
    "CONFIDENCE",
    "NOISE_TEST_LEVEL",
    "combine",
    "comparability_rule",
    "decide",
    "default_noise",
    "floor_rule",
    "generator_rule",
    "plan_looks",
]

CONFIDENCE = 0.98  # two-sided, per look: 1 % per side (Kayenta's judge uses 0.98 too)
NOISE_TEST_LEVEL = 0.99  # F-test quantile above which the replicates are "noisier than calibrated"


def plan_looks(repeat: int) -> tuple[int, ...]:
    """Replicate counts at which the verdict may stop early (two pre-planned looks from 4 up)."""
    if repeat < 1:
        raise ValueError(f"repeat must be ≥ 1, got {repeat}")
    if repeat <= 3:
        return (repeat,)
    return (math.ceil(repeat / 2), repeat)


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


def floor_rule(candidate: Saturation, gate: GateSpec, *, on_interval: bool = False) -> RuleResult:
    """The absolute floor. ``on_interval``: ``candidate.users_ci`` is an honest interval (from
    repeated windows, autocorrelation allowed for), and the rule decides on it rather than on
    the point: a floor inside the interval is inconclusive. A saturation point set by the event
    SLO (``users.streams``) says so in the message."""
    result = _floor_rule(candidate, gate, on_interval=on_interval)
    if candidate.broken_by == "event" and result.outcome in ("fail", "inconclusive"):
        return replace(result, message=f"{result.message} (the event SLO broke first)")
    return result


def _floor_rule(candidate: Saturation, gate: GateSpec, *, on_interval: bool) -> RuleResult:
    floor = gate.min_users
    if floor is None:
        return RuleResult(name="floor", outcome="skipped", message="floor: no gate.min_users set")
    users = candidate.users
    if users is None:
        return RuleResult(
            name="floor",
            outcome="inconclusive",
            message=f"floor: no saturation point was measured to hold against {floor} users",
            threshold=float(floor),
        )
    if candidate.censored != "no":
        return _floor_censored(candidate.censored, users, floor)
    if on_interval and candidate.users_ci:
        return _floor_on_interval(users, candidate.users_ci, floor)
    ci = (
        f" (95 % interval {candidate.users_ci[0]:.0f}–{candidate.users_ci[1]:.0f})"
        if candidate.users_ci
        else ""
    )
    if users < floor:
        return _floor(
            "fail", f"saturation {users:.0f} users{ci} < floor {floor} users", users, floor
        )
    return _floor("pass", f"saturation {users:.0f} users{ci} ≥ floor {floor} users", users, floor)


def _floor(
    outcome: str, text: str, users: float, floor: int, margin: float | None = None
) -> RuleResult:
    return RuleResult(
        name="floor",
        outcome=outcome,  # type: ignore[arg-type]
        message=f"floor: {text}",
        value=users,
        threshold=float(floor),
        margin=users - floor if margin is None else margin,
    )


def _floor_censored(censored: str, users: float, floor: int) -> RuleResult:
    """A run that never broke, or broke at once: the floor is judged on the bound it gives."""
    if censored == "above_max":
        if users >= floor:
            return _floor(
                "pass", f"the SLO held up to {users:.0f} users ≥ floor {floor}", users, floor
            )
        return _floor(
            "inconclusive",
            f"the SLO held up to {users:.0f} users, the last level measured, below the floor "
            f"{floor}: raise max_users to test the floor",
            users,
            floor,
        )
    if users <= floor:
        return _floor(
            "fail",
            f"the SLO broke at the first level ({users:.0f} users), below the floor {floor}",
            users,
            floor,
        )
    return _floor(
        "inconclusive",
        f"the SLO broke at the first level ({users:.0f} users), above the floor {floor}: lower "
        "start_users to test the floor",
        users,
        floor,
    )


def _floor_on_interval(users: float, ci: tuple[float, float], floor: int) -> RuleResult:
    lo, hi = ci
    text = f"saturation {users:.0f} users (95 % interval {lo:.0f}–{hi:.0f}, from the windows)"
    if hi < floor:
        return _floor("fail", f"{text} < floor {floor} users", users, floor, lo - floor)
    if lo >= floor:
        return _floor("pass", f"{text} ≥ floor {floor} users", users, floor, lo - floor)
    return _floor(
        "inconclusive",
        f"{text} contains the floor {floor} users: longer ramp.step_seconds give steadier steps "
        "and windows (the interval's larger part, the search point's own error); "
        "gate.budget_minutes adds windows",
        users,
        floor,
        lo - floor,
    )


def _near_boundary(candidate: Saturation, steps: Sequence[StepStats]) -> list[StepStats]:
    """The steps whose levels decide the boundary."""
    if candidate.bracket is not None:
        lo, hi = candidate.bracket
        return [s for s in steps if lo / 2 <= s.users <= hi]
    if candidate.censored == "above_max" and steps:
        top = max(s.users for s in steps)
        return [s for s in steps if s.users >= top / 2]
    return list(steps)


def _failed_by_errors(step: StepStats) -> bool:
    """A level where most requests failed: a busy generator cannot refuse connections or
    answer 5xx, so instant failures pegging its CPU say nothing against the target."""
    return not step.slo_ok and step.requests > 0 and step.failures / step.requests >= 0.5


def generator_rule(candidate: Saturation, steps: Sequence[StepStats]) -> RuleResult:
    checked = [
        s
        for s in _near_boundary(candidate, steps)
        if s.generator is not None and not _failed_by_errors(s)
    ]
    if not checked:
        return RuleResult(
            name="generator",
            outcome="skipped",
            message="generator: no generator health was recorded for the boundary levels",
        )
    bad = [s for s in checked if s.generator.limited]  # type: ignore[union-attr]
    ratios = [s.generator.little_ratio for s in checked if s.generator.little_ratio is not None]  # type: ignore[union-attr]
    worst = min(ratios) if ratios else None
    if bad:
        first = bad[0]
        why = first.generator.reason or (  # type: ignore[union-attr]
            f"CPU {first.generator.cpu_percent:.0f} %"  # type: ignore[union-attr]
        )
        levels = ", ".join(str(s.users) for s in bad)
        return RuleResult(
            name="generator",
            outcome="inconclusive",
            message=(
                f"generator: the load generator limited the load at {levels} users ({why}): "
                "the boundary measured the generator, not the service — add workers"
            ),
            value=worst,
            threshold=LITTLE_RATIO_MIN,
            margin=(worst - LITTLE_RATIO_MIN) if worst is not None else None,
        )
    return RuleResult(
        name="generator",
        outcome="pass",
        message=(
            "generator: kept the load at the boundary levels"
            + (f" (Little's law X·R/N ≥ {worst:.2f})" if worst is not None else "")
        ),
        value=worst,
        threshold=LITTLE_RATIO_MIN,
        margin=(worst - LITTLE_RATIO_MIN) if worst is not None else None,
    )


def comparability_rule(baseline: BaselineRef | None, comparable: bool, note: str) -> RuleResult:
    if baseline is None:
        return RuleResult(
            name="comparability", outcome="skipped", message="comparability: no baseline"
        )
    if comparable:
        return RuleResult(
            name="comparability",
            outcome="pass",
            message=f"comparability: same environment fingerprint as baseline {baseline.release}"
            + (f" ({note})" if note else ""),
        )
    return RuleResult(
        name="comparability",
        outcome="inconclusive",
        message=(
            f"comparability: baseline {baseline.release} was measured elsewhere"
            + (f" ({note})" if note else "")
            + ": its numbers cannot judge this run"
        ),
    )


# ---------------------------------------------------------------------------------------------
# The regression rule
# ---------------------------------------------------------------------------------------------


def _log_x(s: Saturation) -> float | None:
    x = s.throughput_rps
    return math.log(x) if x is not None and x > 0 else None


def _fmt_ratio(r: float) -> str:
    return f"{r:.3f}" if abs(r - 1) < 0.1 else f"{r:.2f}"


class _Estimate:
    """Log-ratio estimate m, its standard error and degrees of freedom (None: no noise info)."""

    def __init__(self, m: float, se: float | None, df: float | None, how: str) -> None:
        self.m, self.se, self.df, self.how = m, se, df, how

    def interval(self) -> tuple[float, float] | None:
        if self.se is None or self.df is None:
            return None
        t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, self.df))
        return self.m - t * self.se, self.m + t * self.se


@dataclass(frozen=True, slots=True)
class _Terms:
    """The replicates' own contribution to the log-ratio estimate, and the prior to pool with."""

    m: float
    own_df: int
    own_ss: float
    s0: float
    nu0: float
    factor: float  # se² = s² · factor
    how: str


def _terms(
    cand: Sequence[Saturation], base: Sequence[Saturation], paired: bool, prior: NoiseModel
) -> _Terms:
    if paired:
        d = [
            lc - lb
            for c, b in zip(cand, base, strict=False)
            if (lc := _log_x(c)) is not None and (lb := _log_x(b)) is not None
        ]
        m = statistics.fmean(d)
        return _Terms(
            m=m,
            own_df=len(d) - 1,
            own_ss=sum((x - m) ** 2 for x in d),
            s0=prior.pair_sd_log,
            nu0=prior.pair_df,
            factor=1.0 / len(d),
            how=f"{len(d)} interleaved pair{'s' if len(d) > 1 else ''}",
        )
    yc = [v for c in cand if (v := _log_x(c)) is not None]
    yb = [v for b in base if (v := _log_x(b)) is not None]
    mc, mb = statistics.fmean(yc), statistics.fmean(yb)
    return _Terms(
        m=mc - mb,
        own_df=(len(yc) - 1) + (len(yb) - 1),
        own_ss=sum((v - mc) ** 2 for v in yc) + sum((v - mb) ** 2 for v in yb),
        s0=prior.sd_log,
        nu0=prior.df,
        factor=1.0 / len(yc) + 1.0 / len(yb),
        how=f"{_runs(len(yc), 'candidate')} vs {_runs(len(yb), 'baseline')}",
    )


def _noise_rule(t: _Terms, prior: NoiseModel) -> RuleResult:
    """Are the replicates as noisy as calibrated? (F-test; without calibration: pooled only)."""
    if t.own_df < 1:
        return RuleResult(
            name="noise",
            outcome="skipped",
            message=f"noise: {prior.describe()}; too few replicates to test it",
        )
    sd_own = math.sqrt(t.own_ss / t.own_df)
    if prior.source != "calibrated" or t.s0 <= 0:
        return RuleResult(
            name="noise",
            outcome="pass",
            message=(
                f"noise: the replicates spread {sd_own:.1%}; pooled with the {prior.describe()}"
            ),
            value=sd_own,
        )
    f = sd_own**2 / t.s0**2
    limit = float(stats.f.ppf(NOISE_TEST_LEVEL, t.own_df, t.nu0))
    bound = t.s0 * math.sqrt(limit)
    if f > limit:
        message = (
            f"noise: the replicates spread {sd_own:.1%} (SD of log throughput), above the "
            f"calibrated {t.s0:.1%} (F = {f:.1f} > {limit:.1f}): this environment is noisier "
            "than when it was calibrated"
        )
    else:
        message = (
            f"noise: the replicates spread {sd_own:.1%}, consistent with the calibrated {t.s0:.1%}"
        )
    return RuleResult(
        name="noise",
        outcome="inconclusive" if f > limit else "pass",
        message=message,
        value=sd_own,
        threshold=bound,
        margin=bound - sd_own,
    )


def _estimate(
    cand: Sequence[Saturation],
    base: Sequence[Saturation],
    *,
    paired: bool,
    noise: NoiseModel | None,
    fixed_sd: float = 0.0,
) -> tuple[_Estimate, RuleResult]:
    """The log-ratio estimate (moderated variance plus the fixed part) and the noise rule."""
    prior = noise if noise is not None else default_noise()
    t = _terms(cand, base, paired, prior)
    df = t.nu0 + t.own_df
    within = (t.nu0 * t.s0 * t.s0 + t.own_ss) / df * t.factor
    fixed = fixed_sd * fixed_sd
    # Welch–Satterthwaite: the fixed part (a prior, taken as known) adds variance, not df
    df_total = df * (within + fixed) ** 2 / (within * within) if within > 0 else 1e6
    how = t.how + (f", fixed SD {fixed_sd:.1%} between the two sides" if fixed > 0 else "")
    estimate = _Estimate(t.m, math.sqrt(within + fixed), min(df_total, 1e6), how)
    return estimate, _noise_rule(t, prior)


def _usable(
    cand_runs: list[Saturation], base_runs: list[Saturation], paired: bool
) -> tuple[list[Saturation], list[Saturation]]:
    """The replicates that found the boundary (pairs in which both did, when paired)."""
    if paired:
        pairs = [
            (c, b)
            for c, b in zip(cand_runs, base_runs, strict=False)
            if c.censored == b.censored == "no"
        ]
        return [c for c, _ in pairs], [b for _, b in pairs]
    return [c for c in cand_runs if c.censored == "no"], [
        b for b in base_runs if b.censored == "no"
    ]


Make = Callable[[str, str, float | None, float | None], RuleResult]


def _regression(
    candidate: Saturation,
    baseline: BaselineRef,
    gate: GateSpec,
    replicates: Sequence[Saturation],
    baseline_replicates: Sequence[Saturation],
    noise: NoiseModel | None,
    paired: bool,
    fixed_sd: float = 0.0,
) -> tuple[RuleResult, RuleResult, float | None, tuple[float, float] | None]:
    """(regression rule, noise rule, ratio, ratio CI)."""
    base = baseline.saturation
    usable_c, usable_b = _usable(
        list(replicates) or [candidate], list(baseline_replicates) or [base], paired
    )
    threshold = 1.0 - gate.max_regression
    name = f"regression vs {baseline.release}"

    def rule(outcome: str, message: str, ratio: float | None, lo: float | None) -> RuleResult:
        return RuleResult(
            name="regression",
            outcome=outcome,  # type: ignore[arg-type]
            message=f"{name}: {message}",
            value=ratio,
            threshold=threshold,
            margin=(lo - threshold) if lo is not None else None,
        )

    if candidate.censored != "no" or base.censored != "no" or not usable_c or not usable_b:
        reg_rule, noise_rule = _censored(candidate, base, gate, rule)
        return reg_rule, noise_rule, None, None
    est, noise_rule = _estimate(usable_c, usable_b, paired=paired, noise=noise, fixed_sd=fixed_sd)
    interval = est.interval()
    assert interval is not None  # a prior is always pooled: no coin flips
    ratio, ci = math.exp(est.m), (math.exp(interval[0]), math.exp(interval[1]))
    numbers = (
        f"throughput at the SLO {candidate.throughput_rps:.0f} req/s vs "
        f"{base.throughput_rps:.0f} req/s (ratio {_fmt_ratio(ratio)}, {CONFIDENCE:.0%} CI "
        f"{_fmt_ratio(ci[0])}–{_fmt_ratio(ci[1])}, {est.how})"
    )
    outcome, why = _interval_outcome(est.m, interval, gate, noise)
    return rule(outcome, f"{numbers}: {why}", ratio, ci[0]), noise_rule, ratio, ci


def _interval_outcome(
    m: float, interval: tuple[float, float], gate: GateSpec, noise: NoiseModel | None
) -> tuple[str, str]:
    """Pass when credibly within the allowance, block when credibly and practically worse."""
    lo, hi = interval
    if lo > math.log(1.0 - gate.max_regression):
        return "pass", f"credibly within the allowed {gate.max_regression:.0%} regression"
    if hi < 0 and m <= math.log(1.0 - gate.block_min_regression):
        return "fail", f"credibly worse, and by more than {gate.block_min_regression:.0%}"
    if hi < 0:
        why = (
            f"credibly worse but by less than the practical size {gate.block_min_regression:.0%}, "
            f"and not credibly within the allowed {gate.max_regression:.0%}"
        )
    else:
        why = (
            f"the interval spans both no change and a regression beyond "
            f"{gate.max_regression:.0%}: the noise hides the answer"
        )
    hint = (
        "run `perfgate calibrate` for a measured noise prior, use --repeat, or stage the "
        "previous release side by side"
        if noise is None or noise.source != "calibrated"
        else "use --repeat (more replicates) or stage the previous release side by side"
    )
    return "inconclusive", f"{why}; {hint}"


def _censored(
    candidate: Saturation, base: Saturation, gate: GateSpec, make: Make
) -> tuple[RuleResult, RuleResult]:
    """Regression judged from bounds when a boundary was not found (or only censored runs)."""
    noise = RuleResult(name="noise", outcome="skipped", message="noise: not tested (censored runs)")
    cu, bu = candidate.users, base.users
    xc, xb = candidate.throughput_rps, base.throughput_rps
    if cu is None or bu is None or xc is None or xb is None or xb <= 0:
        return make("inconclusive", "a saturation point is missing on one side", None, None), noise
    ratio = xc / xb
    worse = ratio < 1.0 - gate.max_regression and ratio < 1.0 - gate.block_min_regression
    if candidate.censored != "no":
        outcome, text = _candidate_censored(candidate, base, worse, ratio)
    else:
        outcome, text = _baseline_censored(candidate, base, gate, worse, ratio)
    return make(outcome, text, ratio, None), noise


def _candidate_censored(
    candidate: Saturation, base: Saturation, worse: bool, ratio: float
) -> tuple[str, str]:
    cu, xc, xb = candidate.users or 0.0, candidate.throughput_rps or 0.0, base.throughput_rps
    if candidate.censored == "above_max":
        if cu >= (base.users or 0.0):
            return "pass", (
                f"the candidate held the SLO up to {cu:.0f} users, at or beyond the baseline's "
                f"boundary ({_users(base)}): not a regression"
            )
        return "inconclusive", (
            f"the candidate held the SLO up to {cu:.0f} users (its max_users) but the baseline "
            f"reached {_users(base)}: the break was not found — raise max_users"
        )
    # broke at its first level: its throughput at the SLO is at most that level's
    if base.censored != "below_start" and worse:
        return "fail", (
            f"the candidate broke the SLO at its first level ({cu:.0f} users, ≤ {xc:.0f} "
            f"req/s) while the baseline held to {_users(base)} ({xb:.0f} req/s): at least "
            f"{1 - ratio:.0%} worse"
        )
    return "inconclusive", (
        f"the candidate broke the SLO at its first level ({cu:.0f} users): lower start_users to "
        "measure its boundary"
    )


def _baseline_censored(
    candidate: Saturation, base: Saturation, gate: GateSpec, worse: bool, ratio: float
) -> tuple[str, str]:
    """The candidate found its boundary; the baseline did not."""
    xc, xb, bu = candidate.throughput_rps or 0.0, base.throughput_rps or 0.0, base.users or 0.0
    if base.censored == "above_max":
        # the baseline's throughput at the SLO is at least what it reached: an upper bound
        if worse:
            return "fail", (
                f"throughput at the SLO {xc:.0f} req/s, while the baseline held the SLO up to "
                f"{bu:.0f} users at ≥ {xb:.0f} req/s: at least {1 - ratio:.0%} worse"
            )
        return "inconclusive", (
            f"the baseline never broke the SLO (≥ {bu:.0f} users, ≥ {xb:.0f} req/s): the "
            f"candidate's {xc:.0f} req/s cannot be compared with a lower bound"
        )
    if base.censored == "below_start" and ratio >= 1.0 - gate.max_regression:
        # the baseline's throughput at the SLO is at most xb: a lower bound
        return "pass", (
            f"the baseline broke the SLO at its first level (≤ {xb:.0f} req/s); the candidate "
            f"reached {xc:.0f} req/s: not a regression"
        )
    return "inconclusive", "replicates that did not find the boundary leave too few to compare"


def _runs(k: int, what: str) -> str:
    return f"{k} {what} run{'s' if k > 1 else ''}"


def _users(s: Saturation) -> str:
    return f"{fmt.saturation_users(s)} users"


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------


def decide(
    candidate: Saturation,
    *,
    gate: GateSpec,
    baseline: BaselineRef | None,
    steps: Sequence[StepStats] = (),
    replicates: Sequence[Saturation] = (),
    baseline_replicates: Sequence[Saturation] = (),
    noise: NoiseModel | None = None,
    comparable: bool = True,
    comparability_note: str = "",
    paired: bool | None = None,
    fixed_sd: float = 0.0,
) -> GateResult:
    """Apply every gate rule; ``paired`` None infers it from equally long replicate lists.

    ``fixed_sd``: SD of the log ratio that more replicates cannot shrink (two deployments side
    by side, or two sessions against a stored baseline); added to the interval's variance.
    """
    if paired is None:
        paired = bool(baseline_replicates) and len(baseline_replicates) == len(replicates)
    rules: list[RuleResult] = [floor_rule(candidate, gate), generator_rule(candidate, steps)]
    ratio: float | None = None
    ratio_ci: tuple[float, float] | None = None
    if baseline is None:
        if candidate.censored == "below_start" and gate.min_users is None:
            # nothing to hold the run against: a service broken from the first level must not
            # pass (and be promoted as the next baseline) just because no rule applies
            rules.append(
                RuleResult(
                    name="regression",
                    outcome="inconclusive",
                    message=(
                        "regression: the SLO broke at the first level and there is neither a "
                        "baseline nor gate.min_users to judge it: lower ramp.start_users or set "
                        "gate.min_users"
                    ),
                )
            )
        else:
            rules.append(
                RuleResult(
                    name="regression",
                    outcome="skipped",
                    message=(
                        "regression: no baseline for this scenario yet — the floor alone decides"
                    ),
                )
            )
    else:
        rules.append(comparability_rule(baseline, comparable, comparability_note))
        reg, noise_rule, ratio, ratio_ci = _regression(
            candidate, baseline, gate, replicates, baseline_replicates, noise, paired, fixed_sd
        )
        rules.extend((noise_rule, reg))
    return replace(combine(rules), ratio=ratio, ratio_ci=ratio_ci)


def combine(rules: Sequence[RuleResult]) -> GateResult:
    """The verdict from evaluated rules (one place for the order of precedence).

    Inconclusive when the generator limited the load (nothing measured the service); else block
    on a failed floor; else inconclusive when the comparison is invalid (another environment,
    noisier than calibrated); else block on any failed rule; else inconclusive on any
    inconclusive rule; else pass.
    """
    outcomes: dict[str, list[str]] = {}
    for r in rules:
        outcomes.setdefault(r.name, []).append(r.outcome)

    def has(name: str, outcome: str) -> bool:
        return outcome in outcomes.get(name, ())

    verdict: str
    if has("generator", "inconclusive"):
        verdict = "inconclusive"
    elif has("floor", "fail"):
        verdict = "block"
    elif has("comparability", "inconclusive") or has("noise", "inconclusive"):
        verdict = "inconclusive"
    elif any(r.outcome == "fail" for r in rules):
        verdict = "block"
    elif any(r.outcome == "inconclusive" for r in rules):
        verdict = "inconclusive"
    else:
        verdict = "pass"
    return GateResult(
        verdict=verdict,  # type: ignore[arg-type]
        reasons=tuple(r.message for r in rules),
        rules=tuple(rules),
    )
