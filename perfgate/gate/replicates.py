"""The replicate design (``--repeat K`` ≥ 2): K full searches per build, judged at planned looks.

The builds' searches are interleaved in random order when the previous release runs side by side
(randomised multiple interleaved trials cancel drift), and judged after each planned look
(:func:`perfgate.gate.rules.plan_looks`) by :func:`perfgate.gate.rules.decide`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from perfgate import adaptive, analysis
from perfgate.gate import rules
from perfgate.gate.design import Build, GateInputs, GateOutcome, Progress, Sides, search_strategy
from perfgate.models import GateResult, Saturation, StepStats

__all__ = ["run_replicates"]


@dataclass(slots=True)
class _Replicates:
    steps: list[StepStats] = field(default_factory=list)
    base_steps: list[StepStats] = field(default_factory=list)
    cand: list[Saturation] = field(default_factory=list)
    base: list[Saturation] = field(default_factory=list)


def _one_replicate(
    sides: Sides, inputs: GateInputs, progress: Progress, build: Build, r: _Replicates
) -> None:
    into = r.steps if build == "candidate" else r.base_steps
    firsts = r.cand[:1] + r.base[:1]
    extra = {}
    if firsts and inputs.ramp.strategy == "adaptive":
        # both builds' replicates re-measure the same levels (see adaptive.replicate_hint)
        extra["hint"] = adaptive.replicate_hint(firsts)

    def on_step(step: StepStats) -> None:
        into.append(step)
        progress.on_step(step, build)

    got = search_strategy(inputs.ramp)(
        sides.runner(build), inputs.ramp, inputs.slo, on_step=on_step, **extra
    )
    sides.idle(build)
    sat = analysis.saturation(got.steps, inputs.slo, max_users=inputs.ramp.max_users)
    (r.cand if build == "candidate" else r.base).append(sat)


def run_replicates(sides: Sides, inputs: GateInputs, progress: Progress) -> GateOutcome:
    paired = inputs.mode == "side-by-side"
    looks = rules.plan_looks(inputs.repeat)
    rng = random.Random(inputs.seed)
    r = _Replicates()
    result: GateResult | None = None
    for i in range(1, looks[-1] + 1):
        order: list[Build] = ["candidate", "baseline"] if paired else ["candidate"]
        rng.shuffle(order)  # randomised interleaving (RMIT) cancels drift
        for build in order:
            _one_replicate(sides, inputs, progress, build, r)
        if i in looks:
            result = _judge_replicates(inputs, r, paired)
            if result.verdict != "inconclusive":
                break
    assert result is not None
    sat = analysis.combine_replicates(r.cand)
    base = inputs.baseline
    if paired and base is not None:
        base = replace(base, saturation=analysis.combine_replicates(r.base), mode="side-by-side")
    return GateOutcome(
        result=result,
        saturation=sat,
        steps=tuple(r.steps),
        baseline=base,
        baseline_steps=tuple(r.base_steps),
        replicates=tuple(r.cand),
    )


def _judge_replicates(inputs: GateInputs, r: _Replicates, paired: bool) -> GateResult:
    sat = analysis.combine_replicates(r.cand)
    base = inputs.baseline
    if not inputs.gate_enabled:
        return GateResult(verdict="pass", reasons=(f"manual ramp: {sat.reason}",))
    if base is None or inputs.mode == "none":
        return rules.decide(sat, gate=inputs.gate, baseline=None, steps=tuple(r.steps))
    if paired:
        base = replace(base, saturation=analysis.combine_replicates(r.base))
    base_reps = tuple(r.base) if paired else inputs.baseline_replicates
    fixed = inputs.priors.deploy_sd if paired else inputs.priors.between_sd
    return rules.decide(
        sat,
        gate=inputs.gate,
        baseline=base,
        steps=tuple(r.steps),
        replicates=tuple(r.cand),
        baseline_replicates=base_reps,
        noise=inputs.priors.noise,
        comparable=True if paired else inputs.comparable,
        comparability_note="" if paired else inputs.comparability_note,
        paired=paired,
        fixed_sd=math.sqrt(2) * fixed,
    )
