"""The verdict: every rule and branch, with hand-computable numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest
from scipy import stats

from perfgate.calibration import NoiseModel, default_noise
from perfgate.gate.rules import CONFIDENCE, decide, plan_looks
from perfgate.models import BaselineRef, GateSpec, GeneratorHealth, Saturation, StepStats

GATE = GateSpec(min_users=250, max_regression=0.10, block_min_regression=0.05)
NO_FLOOR = GateSpec(min_users=None, max_regression=0.10, block_min_regression=0.05)


def sat(users: float, rps: float, censored: str = "no", bracket=None) -> Saturation:
    return Saturation(
        users=users,
        throughput_rps=rps,
        broken=censored != "above_max",
        reason="",
        bracket=bracket if bracket is not None else (int(users) - 10, int(users) + 10),
        users_ci=(users - 5, users + 5),
        censored=censored,  # type: ignore[arg-type]
    )


def base(users: float = 300, rps: float = 1000.0, censored: str = "no") -> BaselineRef:
    return BaselineRef(release="v1", saturation=sat(users, rps, censored))


def calibrated(sd: float, df: float = 20.0, pair_sd: float | None = None) -> NoiseModel:
    return NoiseModel(
        sd_log=sd,
        df=df,
        pair_sd_log=pair_sd if pair_sd is not None else sd * math.sqrt(2),
        pair_df=df,
        runs=int(df) + 1,
        source="calibrated",
    )


def rule(result, name: str):
    return next(r for r in result.rules if r.name == name)


# ---------------------------------------------------------------------------------------------
# Floor only (no baseline)
# ---------------------------------------------------------------------------------------------


def test_no_baseline_floor_passes() -> None:
    r = decide(sat(300, 1000), gate=GATE, baseline=None)
    assert r.verdict == "pass"
    assert rule(r, "floor").outcome == "pass"
    assert rule(r, "floor").margin == pytest.approx(50)
    assert any("floor alone decides" in m for m in r.reasons)
    assert len(r.reasons) == len(r.rules)


def test_no_baseline_floor_blocks() -> None:
    r = decide(sat(200, 1000), gate=GATE, baseline=None)
    assert r.verdict == "block"
    floor = rule(r, "floor")
    assert floor.outcome == "fail" and floor.margin == pytest.approx(-50)
    assert "200 users" in floor.message and "< floor 250" in floor.message


def test_no_floor_no_baseline_passes() -> None:
    r = decide(sat(10, 100), gate=NO_FLOOR, baseline=None)
    assert r.verdict == "pass"
    assert rule(r, "floor").outcome == "skipped"


def test_censored_above_max_at_or_above_floor_passes_floor() -> None:
    r = decide(sat(600, 2000, "above_max"), gate=GATE, baseline=None)
    assert r.verdict == "pass"
    assert "held up to 600" in rule(r, "floor").message


def test_censored_above_max_below_floor_is_inconclusive() -> None:
    r = decide(sat(200, 900, "above_max"), gate=GATE, baseline=None)
    assert r.verdict == "inconclusive"
    assert "raise max_users" in rule(r, "floor").message


def test_broke_at_first_level_below_floor_blocks() -> None:
    r = decide(sat(50, 300, "below_start", bracket=(0, 50)), gate=GATE, baseline=None)
    assert r.verdict == "block"


# ---------------------------------------------------------------------------------------------
# Regression without noise information: the default prior, never a coin flip
# ---------------------------------------------------------------------------------------------


def test_no_noise_information_does_not_block_a_small_drop() -> None:
    # one run each and no calibration: a 12 % drop is inside what the default prior cannot
    # resolve, so the answer is inconclusive (the first release blocked on a coin flip here)
    r = decide(sat(280, 880), gate=GATE, baseline=base())
    assert r.verdict == "inconclusive"
    reg = rule(r, "regression")
    assert reg.outcome == "inconclusive"
    assert reg.value == pytest.approx(0.88)
    assert "880 req/s vs 1000 req/s" in reg.message
    assert "perfgate calibrate" in reg.message
    assert "default noise prior" in rule(r, "noise").message


def test_no_noise_information_blocks_a_large_drop() -> None:
    r = decide(sat(150, 400), gate=GATE, baseline=base())
    assert r.verdict == "block"
    assert rule(r, "regression").outcome == "fail"
    assert r.ratio == pytest.approx(0.40)


def test_no_noise_information_does_not_pass_a_small_drop() -> None:
    r = decide(sat(290, 920), gate=GATE, baseline=base())
    assert r.verdict == "inconclusive"


def test_fixed_sd_widens_the_interval() -> None:
    tight = decide(sat(300, 990), gate=GATE, baseline=base(), noise=calibrated(0.01))
    wide = decide(sat(300, 990), gate=GATE, baseline=base(), noise=calibrated(0.01), fixed_sd=0.05)
    assert tight.verdict == "pass" and wide.verdict == "inconclusive"
    assert wide.ratio_ci[0] < tight.ratio_ci[0]
    assert "fixed SD 5.0%" in rule(wide, "regression").message


# ---------------------------------------------------------------------------------------------
# Regression with noise information
# ---------------------------------------------------------------------------------------------


def test_calibrated_single_run_passes_when_credibly_within() -> None:
    r = decide(sat(300, 990), gate=GATE, baseline=base(), noise=calibrated(0.01))
    assert r.verdict == "pass"
    reg = rule(r, "regression")
    # se = 0.01·√2, t(0.99, 20): the interval is computable by hand
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, 20)
    m = math.log(0.99)
    lo = m - t * 0.01 * math.sqrt(2)
    assert r.ratio_ci[0] == pytest.approx(math.exp(lo))
    assert reg.margin == pytest.approx(math.exp(lo) - 0.9)
    assert "credibly within" in reg.message


def test_calibrated_single_run_blocks_credible_large_regression() -> None:
    r = decide(sat(250, 850), gate=NO_FLOOR, baseline=base(), noise=calibrated(0.01))
    assert r.verdict == "block"
    assert "credibly worse" in rule(r, "regression").message


def test_credibly_worse_but_small_is_not_blocked() -> None:
    # 3 % worse, very precisely: credible but below the practical size and within the allowance
    r = decide(sat(300, 970), gate=NO_FLOOR, baseline=base(), noise=calibrated(0.002))
    assert r.verdict == "pass"


def test_credibly_worse_within_the_allowance_passes() -> None:
    # 7 % worse, precisely measured: more than the practical size, but max_regression allows it
    r = decide(sat(300, 930), gate=NO_FLOOR, baseline=base(), noise=calibrated(0.002))
    assert r.verdict == "pass"


def test_zero_noise_reduces_to_the_simple_rule() -> None:
    tiny = calibrated(1e-6, df=1000)
    assert decide(sat(300, 920), gate=NO_FLOOR, baseline=base(), noise=tiny).verdict == "pass"
    assert decide(sat(300, 880), gate=NO_FLOOR, baseline=base(), noise=tiny).verdict == "block"


def test_inconclusive_when_noise_hides_the_answer() -> None:
    r = decide(sat(300, 930), gate=GATE, baseline=base(), noise=calibrated(0.05))
    assert r.verdict == "inconclusive"
    reg = rule(r, "regression")
    assert reg.outcome == "inconclusive"
    assert "noise hides the answer" in reg.message
    assert "--repeat" in reg.message
    assert r.ratio_ci[0] < 0.9 < 1.0 < r.ratio_ci[1]


def test_replicates_without_calibration_use_the_default_prior() -> None:
    cand = [sat(300, x) for x in (800, 810, 790)]
    basel = [sat(300, x) for x in (1000, 1010, 990)]
    r = decide(
        cand[0],
        gate=NO_FLOOR,
        baseline=base(),
        replicates=cand,
        baseline_replicates=basel,
        paired=False,
    )
    assert r.verdict == "block"
    assert "default noise prior" in rule(r, "noise").message
    # pooled variance: prior (ν0 s0²) plus the replicates' sum of squares, ν0 + 4 df
    prior = default_noise()
    ss = sum(
        (math.log(x) - sum(math.log(y) for y in (800, 810, 790)) / 3) ** 2 for x in (800, 810, 790)
    )
    ss += sum(
        (math.log(x) - sum(math.log(y) for y in (1000, 1010, 990)) / 3) ** 2
        for x in (1000, 1010, 990)
    )
    s2 = (prior.df * prior.sd_log**2 + ss) / (prior.df + 4)
    se = math.sqrt(s2 * (1 / 3 + 1 / 3))
    t = stats.t.ppf(0.99, prior.df + 4)
    assert r.ratio_ci[1] == pytest.approx(r.ratio * math.exp(t * se))


def test_noise_above_calibrated_level_is_inconclusive() -> None:
    cand = [sat(300, x) for x in (700, 1000, 1300)]
    basel = [sat(300, x) for x in (1000, 1000, 1000)]
    r = decide(
        cand[1],
        gate=NO_FLOOR,
        baseline=base(),
        replicates=cand,
        baseline_replicates=basel,
        noise=calibrated(0.01),
        paired=False,
    )
    assert r.verdict == "inconclusive"
    noise = rule(r, "noise")
    assert noise.outcome == "inconclusive"
    assert "noisier than when it was calibrated" in noise.message


def test_paired_mode_blocks_a_consistent_regression() -> None:
    cand = [sat(280, x) for x in (850, 880, 860)]
    basel = [sat(300, x) for x in (1000, 1030, 1005)]
    r = decide(
        cand[1],
        gate=NO_FLOOR,
        baseline=base(),
        replicates=cand,
        baseline_replicates=basel,
        noise=calibrated(0.02, pair_sd=0.02),
    )
    assert r.verdict == "block"
    assert "3 interleaved pairs" in rule(r, "regression").message


def test_paired_mode_passes_no_change() -> None:
    cand = [sat(300, x) for x in (1000, 1020, 990)]
    basel = [sat(300, x) for x in (1005, 1010, 1000)]
    r = decide(
        cand[0],
        gate=NO_FLOOR,
        baseline=base(),
        replicates=cand,
        baseline_replicates=basel,
        noise=calibrated(0.02, pair_sd=0.02),
    )
    assert r.verdict == "pass"
    assert rule(r, "noise").outcome == "pass"


def test_paired_mode_is_inferred_from_equal_lists() -> None:
    cand = [sat(300, x) for x in (1000, 1020)]
    basel = [sat(300, x) for x in (1005, 1010)]
    r = decide(cand[0], gate=NO_FLOOR, baseline=base(), replicates=cand, baseline_replicates=basel)
    assert "interleaved pairs" in rule(r, "regression").message


# ---------------------------------------------------------------------------------------------
# Validity gates
# ---------------------------------------------------------------------------------------------


def gen_step(users: int, *, limited: bool) -> StepStats:
    return StepStats(
        users=users,
        duration_s=10,
        requests=1000,
        failures=0,
        throughput_rps=100,
        p50_ms=10,
        p95_ms=20,
        p99_ms=30,
        error_rate=0,
        slo_ok=True,
        generator=GeneratorHealth(
            cpu_percent=99.0 if limited else 40.0,
            loop_lag_ms=5.0,
            little_ratio=0.6 if limited else 1.0,
            limited=limited,
            reason="Little's law: X·R/N = 0.60 < 0.9" if limited else "",
        ),
    )


def test_generator_limited_at_the_boundary_forces_inconclusive() -> None:
    steps = [gen_step(100, limited=False), gen_step(190, limited=True), gen_step(210, limited=True)]
    r = decide(sat(200, 900, bracket=(190, 210)), gate=GATE, baseline=None, steps=steps)
    # the floor alone would block, but the boundary measured the generator
    assert rule(r, "floor").outcome == "fail"
    assert r.verdict == "inconclusive"
    gen = rule(r, "generator")
    assert gen.outcome == "inconclusive" and "190, 210" in gen.message
    assert gen.value == pytest.approx(0.6)


def test_generator_limited_far_below_the_boundary_is_ignored() -> None:
    steps = [gen_step(10, limited=True), gen_step(290, limited=False), gen_step(310, limited=False)]
    r = decide(sat(300, 1000, bracket=(290, 310)), gate=GATE, baseline=None, steps=steps)
    assert r.verdict == "pass"
    assert rule(r, "generator").outcome == "pass"


def test_a_level_failing_by_errors_is_not_blamed_on_the_generator() -> None:
    """A dead target refuses connections instantly, which pegs the generator's CPU: that level
    is a breach of the target, not a generator limit (the floor must still block)."""
    dead = dataclasses.replace(
        gen_step(210, limited=True), failures=1000, error_rate=1.0, slo_ok=False
    )
    steps = [gen_step(100, limited=False), gen_step(190, limited=False), dead]
    r = decide(sat(200, 900, bracket=(190, 210)), gate=GATE, baseline=None, steps=steps)
    assert rule(r, "generator").outcome == "pass"
    assert r.verdict == "block"


def test_broken_at_the_first_level_without_floor_or_baseline_is_not_a_pass() -> None:
    r = decide(sat(50, 20, censored="below_start"), gate=NO_FLOOR, baseline=None)
    assert r.verdict == "inconclusive"
    assert "first level" in rule(r, "regression").message


def test_not_comparable_forces_inconclusive_with_the_note() -> None:
    r = decide(
        sat(300, 1000),
        gate=GATE,
        baseline=base(),
        comparable=False,
        comparability_note="cpu_count 2 vs 8",
    )
    assert r.verdict == "inconclusive"
    comp = rule(r, "comparability")
    assert comp.outcome == "inconclusive" and "cpu_count 2 vs 8" in comp.message


def test_floor_failure_still_blocks_when_not_comparable() -> None:
    r = decide(sat(100, 500), gate=GATE, baseline=base(), comparable=False, comparability_note="x")
    assert r.verdict == "block"


# ---------------------------------------------------------------------------------------------
# Censored saturation points
# ---------------------------------------------------------------------------------------------


def test_candidate_that_never_broke_beyond_the_baseline_is_not_a_regression() -> None:
    r = decide(sat(600, 1500, "above_max", bracket=None), gate=GATE, baseline=base(300, 1000))
    assert r.verdict == "pass"
    assert "not a regression" in rule(r, "regression").message


def test_candidate_censored_below_the_baseline_boundary_is_inconclusive() -> None:
    r = decide(sat(200, 800, "above_max", bracket=None), gate=NO_FLOOR, baseline=base(300, 1000))
    assert r.verdict == "inconclusive"
    assert "raise max_users" in rule(r, "regression").message


def test_baseline_that_never_broke_can_only_show_a_large_regression() -> None:
    b = base(600, 1500, "above_max")
    assert decide(sat(300, 1000), gate=NO_FLOOR, baseline=b).verdict == "block"
    assert decide(sat(580, 1480), gate=NO_FLOOR, baseline=b).verdict == "inconclusive"


def test_candidate_broke_at_first_level() -> None:
    r = decide(sat(50, 300, "below_start", bracket=(0, 50)), gate=NO_FLOOR, baseline=base())
    assert r.verdict == "block"
    assert "first level" in rule(r, "regression").message


def test_plan_looks() -> None:
    assert plan_looks(1) == (1,)
    assert plan_looks(3) == (3,)
    assert plan_looks(6) == (3, 6)
    assert plan_looks(5) == (3, 5)
    with pytest.raises(ValueError):
        plan_looks(0)
