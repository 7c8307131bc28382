"""How the gate gathers its evidence, and when it stops: the one loop behind every verdict.

``run_gate`` is called by the pipeline (real Locust runs against staged targets) and by the
simulator (a simulated closed queue) with the same :class:`Sides`, so every figure the simulator
publishes is a figure of the gate users run. Two designs:

``windows`` (the default)
    1. *locate*: the scenario's search (linear or adaptive) on the candidate finds its SLO
       boundary — the saturation point and the floor rule come from it. A stored baseline's
       bracket is the adaptive search's hint.
    2. *compare*: both builds at the same level ``N_w`` (the candidate's boundary) in short
       alternating windows, random order within each pair, the two deployments swapped when they
       can be (cross-over, scheduled by :mod:`perfgate.gate.crossover`); planned looks spend the
       error budgets (:mod:`perfgate.gate.sequential`); the first clear look stops the gate, the
       time budget (``gate.budget_minutes``) ends it. Against a stored baseline the candidate's
       windows are compared with the stored numbers, with the between-session drift in the
       variance.

``replicates`` (``--repeat K`` ≥ 2)
    K full searches per build (interleaved with the previous release when it runs side by side),
    judged at :func:`perfgate.gate.rules.plan_looks` by :func:`perfgate.gate.rules.decide`.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from scipy import stats

from perfgate import adaptive, analysis, search
from perfgate.calibration import NoiseModel
from perfgate.errors import LoadError
from perfgate.gate import drift, rules, sequential
from perfgate.gate.crossover import Schedule, renewal_var
from perfgate.gate.extend import Resume, prior_pairs
from perfgate.models import (
    BaselineRef,
    GateResult,
    GateSpec,
    History,
    LookRecord,
    RampSpec,
    RuleResult,
    Saturation,
    Slo,
    StepStats,
    WindowStats,
)
from perfgate.search import SearchOutcome, StepRunner

__all__ = [
    "DEFAULT_BETWEEN_SD",
    "DEFAULT_DEPLOY_SD",
    "LOOK_PAIRS",
    "GateInputs",
    "GateOutcome",
    "Priors",
    "Progress",
    "Sides",
    "priors",
    "run_gate",
]

Build = Literal["candidate", "baseline"]
Mode = Literal["side-by-side", "stored", "none"]
Interleave = Literal["simultaneous", "alternate"]

# Priors for the parts of the noise a gate cannot measure itself (docs/verdict.md, section 4):
# SD of a fixed capacity difference between two deployments (the tuning profile's own spread).
# Kept although the held-out proc-drift profile blocks more A/A gates without cross-over: at 3 %
# an A/A gate without cross-over could hardly ever pass (its fixed part alone spans the 10 %
# allowance); the remedies are the cross-over and `perfgate calibrate` (docs/verdict.md §7).
DEFAULT_DEPLOY_SD = 0.02
DEFAULT_BETWEEN_SD = 0.04  # SD of drift between sessions (a stored baseline's day and today)
LOOK_PAIRS = (6, 10, 14, 20, 26, 32)  # planned looks, in window pairs (the last: budget)
MIN_PAIRS = 6  # fewer pairs cannot estimate their own spread (and a cross-over's offset)
# The search's point counts as this many independent determinations of the boundary (the steps
# near it). Chosen on the tuning profile from 2, 3 and 4 by the floor interval's coverage
# (95 / 99 %, 93 / 97 %, 92 / 95 % of A/A / 10 %-loss gates; without the term, 80 / 86 %), and
# checked on held-out profiles (docs/verdict.md §1).
SEARCH_DETERMINATIONS = 3.0
SWITCH_S = 1.0  # allowance per window for stopping and starting users (budget planning)
WINDOW_S = 10.0  # measured seconds per window: the least variance per second of load on the
# shared-machine profile (4 s: 0.178, 6 s: 0.180, 10 s: 0.130, 20 s: 0.141 — pair variance ×
# seconds per pair, docs/verdict.md); shorter when the scenario's steps are short (tests)
WINDOW_TOGETHER_S = 10.0  # both builds at once: machine noise cancels, windows only average

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


class Sides(Protocol):
    """The builds under test, real or simulated."""

    def runner(self, build: Build) -> StepRunner: ...

    def idle(self, build: Build) -> None:
        """Stop that build's users (between its windows)."""

    def measure_together(
        self, users: int, *, settle_s: float, window_s: float
    ) -> tuple[StepStats, StepStats]:
        """Both builds at ``users`` over the same window: (candidate, baseline)."""

    def can_swap(self) -> bool:
        """Whether the two builds' deployments can be exchanged (cross-over)."""

    def swap(self) -> None:
        """Exchange the two builds' deployments: each build then runs where the other ran."""

    def swap_cost_s(self) -> float:
        """About how many seconds one swap takes (the cross-over's schedule is planned on it)."""

    def swap_renews_placement(self) -> bool:
        """Whether a swap may put the builds on other machines (new pods on Kubernetes)."""

    def elapsed_s(self) -> float:
        """Seconds of load this gate has spent so far (the budget's clock)."""


def _ignore(*_: object) -> None:
    return None


@dataclass(**_FROZEN)
class Progress:
    """Callbacks as evidence arrives (a live display, and a partial report on interrupt)."""

    on_step: Callable[[StepStats, str], None] = _ignore
    on_window: Callable[[WindowStats], None] = _ignore
    on_look: Callable[[LookRecord], None] = _ignore


@dataclass(**_FROZEN)
class Priors:
    deploy_sd: float = DEFAULT_DEPLOY_SD
    between_sd: float = DEFAULT_BETWEEN_SD
    noise: NoiseModel | None = None  # calibrated noise (replicate design, stored windows)


def priors(noise: NoiseModel | None) -> Priors:
    """The gate's priors from a stored noise model: what calibration measured, else defaults.

    The one place a calibration turns into the gate's fixed variance terms (the pipeline and the
    simulator both call it).
    """
    if noise is None or noise.source != "calibrated":
        return Priors(noise=noise)
    deploy = noise.deploy_sd_log if noise.deploy_sd_log is not None else DEFAULT_DEPLOY_SD
    between = noise.between_sd_log if noise.between_sd_log is not None else noise.sd_log
    return Priors(deploy_sd=deploy, between_sd=between, noise=noise)


@dataclass(**_FROZEN)
class GateInputs:
    """Everything the decision needs besides the measurements."""

    slo: Slo
    ramp: RampSpec
    gate: GateSpec
    mode: Mode
    baseline: BaselineRef | None = None  # the previous release (stored, or its name side by side)
    baseline_windows: tuple[WindowStats, ...] = ()  # the stored baseline's own windows
    baseline_replicates: tuple[Saturation, ...] = ()  # the stored baseline's own replicates
    comparable: bool = True
    comparability_note: str = ""
    priors: Priors = field(default_factory=Priors)
    repeat: int = 1
    seed: int | None = None
    gate_enabled: bool = True  # False: `perfgate ramp` (locate only, no verdict)
    interleave: Interleave = "simultaneous"  # side by side: both builds at once, or in turns
    allow_swap: bool = True  # False: no cross-over (calibration measures the deployments' gap)
    resume: Resume | None = None  # extend this inconclusive side-by-side gate (gate.extend)
    history: History | None = None  # stored releases, for the drift rule (gate.max_drift)


@dataclass(**_FROZEN)
class GateOutcome:
    result: GateResult
    saturation: Saturation
    steps: tuple[StepStats, ...]
    baseline: BaselineRef | None
    baseline_steps: tuple[StepStats, ...] = ()
    replicates: tuple[Saturation, ...] = ()
    windows: tuple[WindowStats, ...] = ()
    looks: tuple[LookRecord, ...] = ()
    window_users: int | None = None
    floor_interval: tuple[float, float] | None = None  # what the floor rule judged (users_interval)


_NO_PROGRESS = Progress()


def run_gate(sides: Sides, inputs: GateInputs, progress: Progress = _NO_PROGRESS) -> GateOutcome:
    """Measure and decide: locate the candidate's boundary, then compare (see module doc);
    with ``gate.max_drift``, the drift rule against the history joins the verdict."""
    out = _run_gate(sides, inputs, progress)
    if inputs.gate.max_drift is None or not out.result.rules or out.baseline is None:
        return out
    result = drift.with_drift(
        out.result,
        gate=inputs.gate,
        history=inputs.history,
        baseline_release=out.baseline.release,
        looks=out.looks,
    )
    return replace(out, result=result)


def _run_gate(sides: Sides, inputs: GateInputs, progress: Progress) -> GateOutcome:
    if inputs.repeat > 1:
        from perfgate.gate.replicates import run_replicates  # it builds on this module

        return run_replicates(sides, inputs, progress)
    if inputs.resume is not None:  # the earlier run located the boundary
        if inputs.mode != "side-by-side" or inputs.baseline is None:
            raise ValueError("only a side-by-side gate can be extended")
        r = inputs.resume
        return _compare(sides, inputs, progress, r.saturation, r.steps)
    steps = _locate(sides, inputs, progress)
    sat = analysis.saturation(steps, inputs.slo, max_users=inputs.ramp.max_users)
    if not inputs.gate_enabled:
        result = GateResult(verdict="pass", reasons=(f"manual ramp: {sat.reason}",))
        return GateOutcome(result=result, saturation=sat, steps=steps, baseline=None)
    if inputs.mode == "none" or inputs.baseline is None:
        result = rules.decide(sat, gate=inputs.gate, baseline=None, steps=steps)
        return GateOutcome(result=result, saturation=sat, steps=steps, baseline=None)
    if inputs.mode == "stored" and not _stored_windows_usable(sat, inputs):
        return _stored_single(sat, steps, inputs)
    return _compare(sides, inputs, progress, sat, steps)


# ---------------------------------------------------------------------------------------------
# locate
# ---------------------------------------------------------------------------------------------


def search_strategy(ramp: RampSpec) -> Callable[..., SearchOutcome]:
    return adaptive.adaptive if ramp.strategy == "adaptive" else search.linear


def _locate(sides: Sides, inputs: GateInputs, progress: Progress) -> tuple[StepStats, ...]:
    base = inputs.baseline
    hint = None
    if base is not None and inputs.ramp.strategy == "adaptive":
        hint = adaptive.replicate_hint([base.saturation])
    extra = {"hint": hint} if hint is not None else {}
    got = search_strategy(inputs.ramp)(
        sides.runner("candidate"),
        inputs.ramp,
        inputs.slo,
        on_step=lambda s: progress.on_step(s, "candidate"),
        **extra,
    )
    sides.idle("candidate")
    return got.steps


def window_level(sat: Saturation) -> int | None:
    """The load level both builds are compared at: the candidate's SLO boundary."""
    if sat.users is None or sat.users <= 0:
        return None
    return max(1, round(sat.users))


# ---------------------------------------------------------------------------------------------
# compare: alternating windows and planned looks
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Windows:
    """Mutable evidence of one comparison (kept small: the records are what leaves)."""

    users: int
    settle_s: float
    window_s: float
    records: list[WindowStats] = field(default_factory=list)
    looks: list[LookRecord] = field(default_factory=list)
    d: list[float] = field(default_factory=list)  # per pair (side by side) or window (stored)
    arrangement: list[int] = field(default_factory=list)
    started: float = 0.0
    schedule: Schedule = field(default_factory=lambda: Schedule(enabled=False))
    renews: bool = False  # a swap re-draws the deployments' offsets (crossover.renewal_var)
    sessions: list[int] = field(default_factory=list)  # per pair: its staging session
    session: int = 0  # this run's (1 when it extends an earlier gate)


def _window_s(inputs: GateInputs) -> float:
    together = inputs.mode == "side-by-side" and inputs.interleave == "simultaneous"
    return WINDOW_TOGETHER_S if together else WINDOW_S


def _plan(
    sides: Sides, inputs: GateInputs, w: _Windows, turns: int, crossover: bool
) -> tuple[int, ...]:
    """Planned looks (in pairs) that fit in what is left of the budget, swaps included.

    Sets ``w.schedule``. A look before both arrangements of a cross-over are measured is not
    planned (:func:`perfgate.gate.crossover.judgeable`); the last look always is.
    """
    left = inputs.gate.budget_minutes * 60.0 - sides.elapsed_s()
    unit_s = turns * (w.settle_s + w.window_s + SWITCH_S)
    if unit_s <= 0:
        return ()
    most = min(LOOK_PAIRS[-1], int(left // unit_s))
    swap_s = sides.swap_cost_s() if crossover else 0.0
    renews = crossover and sides.swap_renews_placement()
    w.schedule = Schedule.plan(crossover, swap_s, unit_s, most, renews)
    most = w.schedule.fits(most, unit_s, left)
    if most < MIN_PAIRS:
        return ()
    w.schedule.every = max(1, min(w.schedule.every, most // 2))
    early = [p for p in LOOK_PAIRS if p < most and w.schedule.judgeable(p)]
    return (*early, most)


def _record(
    sides: Sides,
    build: Build,
    st: StepStats,
    w: _Windows,
    pair: int,
    arrangement: int,
    started_s: float,
) -> WindowStats:
    ok = st.requests - st.failures
    record = WindowStats(
        build=build,
        pair=pair,
        users=w.users,
        duration_s=st.duration_s,
        requests=st.requests,
        failures=st.failures,
        goodput_rps=ok / st.duration_s if st.duration_s > 0 else 0.0,
        p95_ms=st.p95_ms,
        arrangement=arrangement,
        started_s=round(started_s - w.started, 3),
        generator_limited=bool(st.generator is not None and st.generator.limited),
        session=w.session,
    )
    w.records.append(record)
    return record


def measure_window(
    runner: StepRunner, users: int, *, settle_s: float, window_s: float
) -> StepStats:
    """One window: ``settle_s`` discarded, then exactly ``window_s`` measured (phase "window")."""
    return runner.measure(
        users, settle_s=settle_s, min_s=window_s, max_s=window_s, min_samples=0, phase="window"
    )


def _measure(sides: Sides, build: Build, w: _Windows, pair: int, arrangement: int) -> WindowStats:
    started = sides.elapsed_s()
    st = measure_window(sides.runner(build), w.users, settle_s=w.settle_s, window_s=w.window_s)
    sides.idle(build)
    return _record(sides, build, st, w, pair, arrangement, started)


def _measure_together(
    sides: Sides, w: _Windows, pair: int, arrangement: int
) -> tuple[WindowStats, WindowStats]:
    started = sides.elapsed_s()
    cand, base = sides.measure_together(w.users, settle_s=w.settle_s, window_s=w.window_s)
    return (
        _record(sides, "candidate", cand, w, pair, arrangement, started),
        _record(sides, "baseline", base, w, pair, arrangement, started),
    )


def _log_goodput(r: WindowStats, who: str) -> float:
    if r.goodput_rps > 0:
        return math.log(r.goodput_rps)
    if who == "baseline":
        raise LoadError(
            f"the previous release completed no request in a {r.duration_s:.0f} s window at "
            f"{r.users} users: it cannot serve as the baseline"
        )
    return math.log(0.5 / max(r.duration_s, 1e-3))  # half a request: worse than anything seen


def _compare(
    sides: Sides,
    inputs: GateInputs,
    progress: Progress,
    sat: Saturation,
    steps: tuple[StepStats, ...],
) -> GateOutcome:
    resume = inputs.resume
    users = resume.users if resume is not None else window_level(sat)
    settle = inputs.ramp.settle_s
    window_s = min(_window_s(inputs), 2 * (inputs.ramp.step_seconds - settle))
    w = _Windows(users=users or 0, settle_s=settle, window_s=window_s)
    if resume is not None:
        _take_over(w, resume)
    side_by_side = inputs.mode == "side-by-side"
    crossover = side_by_side and inputs.allow_swap and sides.can_swap()
    turns = 2 if side_by_side and inputs.interleave == "alternate" else 1
    planned = _plan(sides, inputs, w, turns, crossover) if users else ()
    w.renews = crossover and sides.swap_renews_placement()
    if not planned:
        return _no_room(inputs, sat, steps, users)
    alpha_b, alpha_p = sequential.budgets(extension=resume is not None)
    spend_b = sequential.spend([p / planned[-1] for p in planned], alpha_b)
    spend_p = sequential.spend([p / planned[-1] for p in planned], alpha_p)
    before = len(w.d)  # pairs of the run this one extends
    looks = tuple(before + p for p in planned)
    w.started = sides.elapsed_s()
    rng = random.Random(inputs.seed)
    decision: sequential.LookDecision | None = None
    est: sequential.Estimate | None = None
    arrangement = 1
    for unit in range(before + 1, looks[-1] + 1):
        swapped = w.schedule.due(unit - before)
        if swapped:
            sides.swap()
            arrangement = -arrangement
        _one_unit(sides, w, unit, arrangement, rng, inputs, progress)
        w.schedule.measured(swapped)
        if unit not in looks:
            continue
        j = looks.index(unit)
        est = _estimate(w, inputs, side_by_side)
        decision = sequential.decide_look(
            est,
            max_regression=inputs.gate.max_regression,
            block_min_regression=inputs.gate.block_min_regression,
            alpha_block=spend_b[j],
            alpha_pass=spend_p[j],
            last=unit == looks[-1],
            floor_se=_floor_se(inputs, side_by_side, est),
        )
        look = _look_record(len(w.looks) + 1, unit, est, decision, spend_b[j], spend_p[j], sides, w)
        w.looks.append(look)
        progress.on_look(look)
        if decision.outcome != "continue":
            break
    assert est is not None and decision is not None
    return _finish(inputs, sat, steps, w, est, decision, looks, crossover)


def _take_over(w: _Windows, resume: Resume) -> None:
    """An extension starts from the evidence of the run it extends."""
    w.records.extend(resume.windows)
    w.looks.extend(resume.looks)
    w.d, w.arrangement, w.sessions = prior_pairs(resume.windows)
    w.session = resume.session


def _one_unit(
    sides: Sides,
    w: _Windows,
    unit: int,
    arrangement: int,
    rng: random.Random,
    inputs: GateInputs,
    progress: Progress,
) -> None:
    """One window pair (side by side: together, or in random order), or one candidate window."""
    if inputs.mode != "side-by-side":
        records = [_measure(sides, "candidate", w, unit, arrangement)]
    elif inputs.interleave == "simultaneous":
        records = list(_measure_together(sides, w, unit, arrangement))
    else:
        order: list[Build] = ["candidate", "baseline"]
        rng.shuffle(order)
        records = [_measure(sides, build, w, unit, arrangement) for build in order]
    got: dict[str, float] = {}
    for record in records:
        progress.on_window(record)
        got[record.build] = _log_goodput(record, record.build)
    w.d.append(got["candidate"] - got.get("baseline", 0.0))
    w.arrangement.append(arrangement)
    w.sessions.append(w.session)


def _stored_log_x(inputs: GateInputs) -> tuple[float, float]:
    """The stored baseline's log goodput at its window level and its standard error."""
    wins = [r for r in inputs.baseline_windows if r.build == "candidate" and r.goodput_rps > 0]
    if len(wins) >= 2:
        logs = [math.log(r.goodput_rps) for r in wins]
        return statistics.fmean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
    base = inputs.baseline
    assert base is not None and base.saturation.throughput_rps
    noise = inputs.priors.noise
    one_run = noise.sd_log if noise is not None else rules.default_noise().sd_log
    return math.log(base.saturation.throughput_rps), one_run


def _estimate(w: _Windows, inputs: GateInputs, side_by_side: bool) -> sequential.Estimate:
    if side_by_side:
        sd = inputs.priors.deploy_sd
        renewed = renewal_var(w.arrangement, w.sessions, sd) if w.renews else 0.0
        return sequential.estimate_pairs(
            w.d, w.arrangement, deploy_sd=sd, renewed_var=renewed, sessions=w.sessions
        )
    log_b, se_b = _stored_log_x(inputs)
    return sequential.estimate_stored(w.d, log_b, se_b, between_sd=inputs.priors.between_sd)


def _floor_se(inputs: GateInputs, side_by_side: bool, est: sequential.Estimate) -> float:
    """The part of the standard error more windows cannot remove."""
    if side_by_side:
        return math.sqrt(est.fixed_var)
    _, se_b = _stored_log_x(inputs)
    return math.sqrt(se_b * se_b + 2 * inputs.priors.between_sd**2)


def _exp(x: float) -> float:
    """A log ratio back to a ratio, bounded (an early look's interval can be astronomical)."""
    return math.exp(max(-20.0, min(20.0, x)))


def _look_record(
    index: int,
    pairs: int,
    est: sequential.Estimate,
    decision: sequential.LookDecision,
    a_b: float,
    a_p: float,
    sides: Sides,
    w: _Windows,
) -> LookRecord:
    return LookRecord(
        index=index,
        pairs=pairs,
        ratio=_exp(est.m),
        ratio_lo=_exp(decision.lo),
        ratio_hi=_exp(decision.hi),
        se_log=est.se,
        df=round(est.df, 1),
        alpha_block=a_b,
        alpha_pass=a_p,
        outcome=decision.outcome,
        elapsed_s=round(sides.elapsed_s() - w.started, 1),
        session=w.session,
    )


# ---------------------------------------------------------------------------------------------
# the verdict of a comparison
# ---------------------------------------------------------------------------------------------


def _mean_goodput(w: _Windows, build: Build) -> float | None:
    values = [r.goodput_rps for r in w.records if r.build == build]
    return statistics.fmean(values) if values else None


def _regression_rule(
    inputs: GateInputs,
    w: _Windows,
    est: sequential.Estimate,
    decision: sequential.LookDecision,
    looks: tuple[int, ...],
    crossover: bool,
) -> RuleResult:
    base = inputs.baseline
    assert base is not None
    gate = inputs.gate
    ratio, lo, hi = math.exp(est.m), math.exp(decision.lo), math.exp(decision.hi)
    x_c = _mean_goodput(w, "candidate")
    x_b = (
        _mean_goodput(w, "baseline")
        if inputs.mode == "side-by-side"
        else math.exp(_stored_log_x(inputs)[0])
    )
    where = "side by side" if inputs.mode == "side-by-side" else "against the stored numbers"
    numbers = (
        f"goodput at {w.users} users {_rps(x_c)} vs {_rps(x_b)} req/s "
        f"(ratio {ratio:.3f}, bounds {lo:.3f}–{hi:.3f}; {est.how}; {_which_look(w, looks)}, "
        f"{w.looks[-1].elapsed_s / 60:.1f} min of windows)"
    )
    outcome = {"block": "fail", "pass": "pass"}.get(decision.outcome, "inconclusive")
    if decision.outcome == "block":
        text = f"credibly worse, and by more than {gate.block_min_regression:.0%}"
    elif decision.outcome == "pass":
        text = f"credibly within the allowed {gate.max_regression:.0%} regression"
    else:
        text = f"not resolved ({decision.why}); {_what_would_resolve(inputs, est, crossover)}"
    return RuleResult(
        name="regression",
        outcome=outcome,  # type: ignore[arg-type]
        message=f"regression vs {base.release} ({where}): {numbers}: {text}",
        value=ratio,
        threshold=1.0 - gate.max_regression,
        margin=lo - (1.0 - gate.max_regression),
    )


def _which_look(w: _Windows, looks: tuple[int, ...]) -> str:
    mine = [look for look in w.looks if look.session == w.session]
    if w.session == 0:
        return f"look {len(mine)} of {len(looks)}"
    return f"extension look {len(mine)} of {len(looks)}, after {len(w.looks) - len(mine)} earlier"


def _rps(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _what_would_resolve(inputs: GateInputs, est: sequential.Estimate, crossover: bool) -> str:
    """The cheapest change that could turn this inconclusive answer into a verdict."""
    if inputs.mode == "stored":
        return (
            "a stored baseline cannot resolve this against the drift between sessions: stage "
            "the previous release side by side (embedded knobs or image recorded in the "
            "baseline, or --baseline-target URL), or calibrate the between-session noise with "
            "`perfgate calibrate` on several days"
        )
    fixed = 0.0 if crossover else math.sqrt(2) * inputs.priors.deploy_sd
    if fixed > 0 and fixed > 0.8 * est.se:
        return (
            f"the assumed difference between the two deployments (SD {inputs.priors.deploy_sd:.1%})"
            " dominates: measure it with `perfgate calibrate`, or stage both builds where they can"
            " be swapped (cross-over: embedded, or Kubernetes with staging.kubernetes.image)"
        )
    if inputs.resume is None:
        return (
            "extend this gate with `perfgate run --extend <this run's result.json>` (the same "
            "sequential test, on the error budget kept for it), or raise gate.budget_minutes "
            f"(now {inputs.gate.budget_minutes:g}) for more window pairs"
        )
    return f"raise gate.budget_minutes (now {inputs.gate.budget_minutes:g}) for more window pairs"


def users_interval(
    sat: Saturation, slo: Slo, records: list[WindowStats]
) -> tuple[float, float] | None:
    """A 95 % interval of the users at the SLO from the candidate's windows at ``N_w``.

    Past the knee p95 grows in proportion to the users (``R = N / X``), so each window at ``N_w``
    says where the SLO is crossed: ``N_w · L / p95``. The interval is centred on the search's
    point (the cross-over's restarts bias the windows themselves; the proportional model is only
    the yardstick of the spread), and its variance has two parts: the windows' mean (its
    autocorrelation allowed for), and the search point's own error — the spread of one
    determination over ``SEARCH_DETERMINATIONS``, the steps near the boundary that fix the point.
    Coverage of the true users at the SLO (``perfgate simulate --coverage``): docs/verdict.md §1.
    """
    logs = [
        math.log(r.users * slo.p95_ms / r.p95_ms)
        for r in records
        if r.build == "candidate" and r.p95_ms and r.goodput_rps > 0
    ]
    if len(logs) < 3 or sat.censored != "no":
        return None
    m = statistics.fmean(logs)
    se2, df, _ = sequential._within([x - m for x in logs], 1)
    one = statistics.variance(logs)  # one determination's spread: the search point's own error
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(se2 + one / SEARCH_DETERMINATIONS)
    assert sat.users is not None
    return sat.users * math.exp(-half), sat.users * math.exp(half)


def _validity_rules(
    inputs: GateInputs,
    sat: Saturation,
    steps: tuple[StepStats, ...],
    w: _Windows | None,
    ci: tuple[float, float] | None = None,
) -> list[RuleResult]:
    """The floor (on the windows' interval ``ci`` when there is one), generator, comparability."""
    floor_sat = replace(sat, users_ci=ci) if ci is not None else sat
    found = [
        rules.floor_rule(floor_sat, inputs.gate, on_interval=ci is not None),
        rules.generator_rule(sat, steps),
    ]
    if w is not None and w.records:
        limited = [r for r in w.records if r.generator_limited]
        if len(limited) * 4 > len(w.records):
            found.append(
                RuleResult(
                    name="generator",
                    outcome="inconclusive",
                    message=(
                        f"generator: the load generator limited {len(limited)} of "
                        f"{len(w.records)} windows at {w.users} users: the comparison measured "
                        "the generator — add workers"
                    ),
                )
            )
    if inputs.mode == "stored":
        found.append(
            rules.comparability_rule(inputs.baseline, inputs.comparable, inputs.comparability_note)
        )
    return found


def _judged_against(inputs: GateInputs, w: _Windows) -> BaselineRef | None:
    base = inputs.baseline
    if base is None or inputs.mode != "side-by-side":
        return base
    if base.saturation.throughput_rps is not None:
        return replace(base, mode="side-by-side")  # its stored point stays the overlay
    x_b = _mean_goodput(w, "baseline")
    sat = Saturation(
        users=float(w.users),
        throughput_rps=x_b,
        broken=True,
        reason=f"measured now, side by side: {_rps(x_b)} req/s at {w.users} users",
    )
    return replace(base, saturation=sat, mode="side-by-side")


def _finish(
    inputs: GateInputs,
    sat: Saturation,
    steps: tuple[StepStats, ...],
    w: _Windows,
    est: sequential.Estimate,
    decision: sequential.LookDecision,
    looks: tuple[int, ...],
    crossover: bool,
) -> GateOutcome:
    ci = users_interval(sat, inputs.slo, w.records)
    found = _validity_rules(inputs, sat, steps, w, ci)
    found.append(_regression_rule(inputs, w, est, decision, looks, crossover))
    result = rules.combine(found)
    result = replace(
        result,
        ratio=math.exp(est.m),
        ratio_ci=(math.exp(decision.lo), math.exp(decision.hi)),
    )
    return GateOutcome(
        result=result,
        saturation=replace(sat, users_ci=ci) if ci is not None else sat,
        steps=steps,
        baseline=_judged_against(inputs, w),
        windows=tuple(w.records),
        looks=tuple(w.looks),
        window_users=w.users,
        floor_interval=ci,
    )


def _no_room(
    inputs: GateInputs, sat: Saturation, steps: tuple[StepStats, ...], users: int | None
) -> GateOutcome:
    why = (
        "no saturation point to compare at"
        if users is None
        else f"the search used the time budget ({inputs.gate.budget_minutes:g} min): raise "
        "gate.budget_minutes to leave room for the comparison windows"
    )
    base = inputs.baseline
    assert base is not None
    found = _validity_rules(inputs, sat, steps, None)
    found.append(
        RuleResult(
            name="regression",
            outcome="inconclusive",
            message=f"regression vs {base.release}: not compared: {why}",
        )
    )
    return GateOutcome(result=rules.combine(found), saturation=sat, steps=steps, baseline=base)


# ---------------------------------------------------------------------------------------------
# stored mode without windows: one run against a stored saturation point
# ---------------------------------------------------------------------------------------------


def _stored_windows_usable(sat: Saturation, inputs: GateInputs) -> bool:
    base = inputs.baseline
    return (
        base is not None
        and sat.censored == "no"
        and base.saturation.censored == "no"
        and bool(base.saturation.throughput_rps)
    )


def _stored_single(
    sat: Saturation, steps: tuple[StepStats, ...], inputs: GateInputs
) -> GateOutcome:
    """Censored runs against a stored baseline: judged on the bounds they give."""
    result = rules.decide(
        sat,
        gate=inputs.gate,
        baseline=inputs.baseline,
        steps=steps,
        baseline_replicates=inputs.baseline_replicates,
        noise=inputs.priors.noise,
        comparable=inputs.comparable,
        comparability_note=inputs.comparability_note,
        fixed_sd=math.sqrt(2) * inputs.priors.between_sd,
    )
    return GateOutcome(result=result, saturation=sat, steps=steps, baseline=inputs.baseline)
