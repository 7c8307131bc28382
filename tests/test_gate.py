"""The gate (perfgate.gate): the sequential statistics, and run_gate driving scripted sides."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from perfgate import gate
from perfgate.errors import LoadError
from perfgate.gate import sequential
from perfgate.gate.crossover import Schedule, renewal_var
from perfgate.gate.design import GateInputs, run_gate
from perfgate.gate.extend import Resume
from perfgate.gate.extend import problem as extend_problem
from perfgate.models import (
    BaselineRef,
    GateSpec,
    RampSpec,
    Saturation,
    Slo,
    StepStats,
    WindowStats,
)

# ---------------------------------------------------------------------------------------------
# sequential statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fractions", [(1.0,), (0.25, 0.5, 1.0), (0.1, 0.3, 0.6, 0.8, 1.0)])
def test_spending_adds_up_to_the_budget_and_is_spread(fractions: tuple[float, ...]) -> None:
    levels = sequential.spend(fractions, 0.01)
    assert sum(levels) == pytest.approx(0.01)
    assert all(a > 1e-4 for a in levels)  # Pocock-like: every look can stop the gate


def test_crossover_removes_a_fixed_deployment_offset() -> None:
    rng = random.Random(1)
    arrangement = [1, 1, -1, -1] * 4
    offset = math.log(0.95)  # the candidate's first place is 5 % slower
    d = [offset * a + rng.gauss(0, 0.005) for a in arrangement]
    est = sequential.estimate_pairs(d, arrangement, deploy_sd=0.02)
    assert est.m == pytest.approx(0.0, abs=0.005)
    assert est.offset == pytest.approx(offset, abs=0.005)
    assert "cross-over" in est.how
    # without the cross-over the same offset is a (wrong) regression estimate, widened by the prior
    plain = sequential.estimate_pairs(
        [offset + x - offset * a for x, a in zip(d, arrangement, strict=True)],
        [1] * 16,
        deploy_sd=0.02,
    )
    assert plain.m == pytest.approx(offset, abs=0.005)
    assert plain.se > 0.02 * math.sqrt(2)


def test_autocorrelated_pairs_get_a_wider_interval() -> None:
    rng = random.Random(2)
    independent = [rng.gauss(0, 0.02) for _ in range(30)]
    drift, z = [], 0.0
    for _ in range(30):
        z = 0.9 * z + rng.gauss(0, 0.02 * math.sqrt(1 - 0.81))
        drift.append(z)
    a = sequential.estimate_pairs(independent, [1] * 30, deploy_sd=0.0)
    b = sequential.estimate_pairs(drift, [1] * 30, deploy_sd=0.0)
    assert b.rho > 0.4 and a.rho < 0.3
    assert b.df < a.df


def _est(m: float, se: float, df: float = 30.0) -> sequential.Estimate:
    return sequential.Estimate(m=m, se=se, df=df, pairs=8)


def _look(est: sequential.Estimate, **kw: object) -> sequential.LookDecision:
    args = {
        "max_regression": 0.10,
        "block_min_regression": 0.05,
        "alpha_block": 0.01,
        "alpha_pass": 0.01,
        "last": False,
    }
    args.update(kw)
    return sequential.decide_look(est, **args)  # type: ignore[arg-type]


def test_decide_look_blocks_passes_and_goes_on() -> None:
    assert _look(_est(math.log(0.88), 0.01)).outcome == "block"
    assert _look(_est(0.0, 0.01)).outcome == "pass"
    assert _look(_est(math.log(0.97), 0.01)).outcome == "pass"  # a small loss within allowance
    assert _look(_est(math.log(0.96), 0.03)).outcome == "continue"  # not yet either way
    assert _look(_est(math.log(0.96), 0.03), last=True).outcome == "inconclusive"


def test_futility_stops_when_the_fixed_noise_alone_hides_the_answer() -> None:
    # stored mode on the default between-session prior: even a perfect candidate measurement
    # cannot tell a 5 % loss from none
    fixed = math.sqrt(2) * 0.04
    est = _est(math.log(0.97), math.hypot(fixed, 0.002))
    got = _look(est, floor_se=fixed)
    assert got.outcome == "inconclusive" and "fixed" in got.why
    # the same estimate with a small fixed part goes on
    assert _look(_est(math.log(0.96), 0.03), floor_se=0.005).outcome == "continue"


# ---------------------------------------------------------------------------------------------
# run_gate on scripted sides: each build has a capacity; a window measures it (± noise)
# ---------------------------------------------------------------------------------------------

SLO = Slo(p95_ms=500.0)
RAMP = RampSpec(strategy="linear", start_users=100, step_users=100, max_users=800, step_seconds=4)
GATE = GateSpec(min_users=None, max_regression=0.10, block_min_regression=0.05, budget_minutes=8)


def _step(users: int, capacity: float, seconds: float) -> StepStats:
    x = min(capacity, users / 0.05)  # R0 = 50 ms, flat past the knee
    p95 = max(50.0, users / capacity * 1000.0 * 1.1)
    return StepStats(
        users=users,
        duration_s=seconds,
        requests=int(x * seconds),
        failures=0,
        throughput_rps=x,
        p50_ms=p95 / 1.2,
        p95_ms=p95,
        p99_ms=p95 * 1.1,
        error_rate=0.0,
        slo_ok=p95 <= SLO.p95_ms,
    )


@dataclass
class _Runner:
    sides: ScriptedSides
    build: str

    def measure(
        self,
        users: int,
        *,
        settle_s: float,
        min_s: float,
        max_s: float,
        min_samples: int,
        phase: str,
    ) -> StepStats:
        self.sides.clock += settle_s + max_s
        cap = self.sides.capacity[self.build] * math.exp(self.sides.rng.gauss(0, self.sides.sd))
        self.sides.calls.append((self.build, users, phase))
        return _step(users, cap, max_s)

    def hold(self, users: int, seconds: float) -> None:
        self.sides.clock += seconds


@dataclass
class ScriptedSides:
    capacity: dict[str, float]
    sd: float = 0.01
    swappable: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(3))
    clock: float = 0.0
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    swaps: int = 0
    swap_s: float = 0.0
    renews: bool = False

    def runner(self, build: str) -> _Runner:
        return _Runner(self, build)

    def idle(self, build: str) -> None:
        return None

    def measure_together(self, users: int, *, settle_s: float, window_s: float):
        a = self.runner("candidate").measure(
            users, settle_s=settle_s, min_s=window_s, max_s=window_s, min_samples=0, phase="window"
        )
        self.clock -= settle_s + window_s
        b = self.runner("baseline").measure(
            users, settle_s=settle_s, min_s=window_s, max_s=window_s, min_samples=0, phase="window"
        )
        return a, b

    def can_swap(self) -> bool:
        return self.swappable

    def swap(self) -> None:
        self.swaps += 1
        self.clock += self.swap_s

    def swap_cost_s(self) -> float:
        return self.swap_s

    def swap_renews_placement(self) -> bool:
        return self.renews

    def elapsed_s(self) -> float:
        return self.clock


def _previous(x: float = 1000.0) -> BaselineRef:
    sat = Saturation(users=x * 0.5 / 1.1, throughput_rps=x, broken=True, reason="stored")
    return BaselineRef(release="v1", saturation=sat)


def _inputs(mode: str = "side-by-side", **kw: object) -> GateInputs:
    args: dict[str, object] = {
        "slo": SLO,
        "ramp": RAMP,
        "gate": GATE,
        "mode": mode,
        "baseline": _previous(),
        "seed": 1,
    }
    args.update(kw)
    return GateInputs(**args)  # type: ignore[arg-type]


def test_side_by_side_blocks_a_slower_candidate_and_says_why() -> None:
    sides = ScriptedSides({"candidate": 800.0, "baseline": 1000.0})
    out = run_gate(sides, _inputs())
    assert out.result.verdict == "block"
    reg = next(r for r in out.result.rules if r.name == "regression")
    assert "side by side" in reg.message and "credibly worse" in reg.message
    assert out.result.ratio == pytest.approx(0.8, abs=0.02)
    assert out.baseline is not None and out.baseline.mode == "side-by-side"
    assert out.looks and out.looks[-1].outcome == "block"
    # both builds were measured at the candidate's boundary, in windows
    levels = {u for b, u, phase in sides.calls if phase == "window"}
    assert levels == {out.window_users}
    assert {w.build for w in out.windows} == {"candidate", "baseline"}


def test_side_by_side_passes_the_same_build_early() -> None:
    out = run_gate(ScriptedSides({"candidate": 1000.0, "baseline": 1000.0}), _inputs())
    assert out.result.verdict == "pass"
    assert len(out.looks) == 1  # a clear answer stops at the first look


def test_alternate_interleave_measures_one_build_at_a_time() -> None:
    sides = ScriptedSides({"candidate": 1000.0, "baseline": 1000.0})
    out = run_gate(sides, _inputs(interleave="alternate"))
    assert out.result.verdict == "pass"
    windows = [c for c in sides.calls if c[2] == "window"]
    assert len(windows) == 2 * out.looks[-1].pairs


def test_crossover_swaps_when_the_sides_can() -> None:
    sides = ScriptedSides({"candidate": 1000.0, "baseline": 1000.0}, swappable=True, sd=0.03)
    out = run_gate(sides, _inputs())
    assert sides.swaps >= 2
    assert {w.arrangement for w in out.windows} == {1, -1}
    assert "cross-over" in out.result.reasons[-1]


def test_slow_swaps_are_spread_out_and_no_look_judges_one_arrangement_alone() -> None:
    budget = dataclasses.replace(GATE, budget_minutes=30.0)
    sides = ScriptedSides(  # 7 % slower with noisy windows: no early answer
        {"candidate": 930.0, "baseline": 1000.0}, swappable=True, sd=0.08, swap_s=60.0
    )
    out = run_gate(sides, _inputs(gate=budget))
    assert len(out.looks) > 1, out.result.reasons
    arrangements = [w.arrangement for w in out.windows if w.build == "candidate"]
    runs = [len(list(g)) for _, g in itertools.groupby(arrangements)]
    assert runs[0] == 3 and max(runs) > 3  # a short first period, then long ones
    assert sides.swaps == len(runs) - 1
    for look in out.looks:  # every look saw both arrangements, ≥ 3 pairs each
        seen = arrangements[: look.pairs]
        assert min(seen.count(1), seen.count(-1)) >= 3
    # the swaps' time was planned: the gate stays within its budget
    assert sides.clock <= budget.budget_minutes * 60 + 60


def test_renewed_placement_adds_the_offsets_of_each_period() -> None:
    one = [0] * 16
    two_periods = [1] * 8 + [-1] * 8  # one period per arrangement: each offset weighs 1/2
    assert renewal_var(two_periods, one, 0.02) == pytest.approx(0.02**2)
    alternating = [1, -1] * 8  # 16 periods of one pair: 2σ²/16
    assert renewal_var(alternating, one, 0.02) == pytest.approx(2 * 0.02**2 / 16)
    assert renewal_var([1] * 16, one, 0.02) == 0.0  # no cross-over: the prior's business
    d, arrangement = [0.01, -0.01] * 8, two_periods
    kept = sequential.estimate_pairs(d, arrangement, deploy_sd=0.02)
    renewed = sequential.estimate_pairs(
        d, arrangement, deploy_sd=0.02, renewed_var=renewal_var(two_periods, one, 0.02)
    )
    assert renewed.se > kept.se and renewed.fixed_var > 0 and kept.fixed_var == 0
    assert "re-placed" in renewed.how


def test_schedule_swaps_every_pair_when_swaps_are_cheap() -> None:
    cheap = Schedule.plan(True, 1.0, 13.0, 32)
    assert cheap.every == 1 and cheap.due(2) and cheap.due(3)
    assert all(cheap.judgeable(p) for p in (6, 10, 32))
    slow = Schedule.plan(True, 60.0, 11.0, 32)
    assert slow.every == 16  # at most half the plan, never one period only
    # a short first period (3 pairs), so that the first look already sees both arrangements
    assert [u for u in range(1, 33) if slow.due(u)] == [4, 20]
    assert slow.judgeable(6) and not slow.judgeable(5)
    assert slow.cost_s(32, 11.0) == 32 * 11.0 + 2 * 60.0
    assert slow.fits(32, 11.0, 400.0) == 25  # 25 pairs and their 2 swaps fit in 400 s
    # re-created pods (Kubernetes): two short periods per arrangement before any look judges
    renewing = Schedule.plan(True, 60.0, 11.0, 32, renews=True)
    assert [u for u in range(1, 33) if renewing.due(u)] == [4, 7, 10, 13, 29]
    assert not renewing.judgeable(9) and renewing.judgeable(10)  # 2 periods each, ≥ 3 pairs


def test_stored_baseline_on_the_default_prior_is_inconclusive_fast_and_says_what_would_help() -> (
    None
):
    sides = ScriptedSides({"candidate": 970.0, "baseline": 1000.0})
    out = run_gate(sides, _inputs(mode="stored"))
    assert out.result.verdict == "inconclusive"
    reg = next(r for r in out.result.rules if r.name == "regression")
    assert "side by side" in reg.message and "--baseline-target" in reg.message
    assert len(out.looks) == 1  # futile at once: no minutes spent on windows that cannot help


def test_stored_baseline_still_blocks_a_large_loss() -> None:
    out = run_gate(ScriptedSides({"candidate": 600.0, "baseline": 1000.0}), _inputs(mode="stored"))
    assert out.result.verdict == "block"


def test_no_budget_left_for_windows_is_inconclusive_with_the_fix() -> None:
    tight = GateSpec(
        min_users=None, max_regression=0.1, block_min_regression=0.05, budget_minutes=0.5
    )
    out = run_gate(ScriptedSides({"candidate": 1000.0, "baseline": 1000.0}), _inputs(gate=tight))
    assert out.result.verdict == "inconclusive"
    assert "gate.budget_minutes" in out.result.reasons[-1]


def test_an_inconclusive_gate_is_extended_as_the_same_sequential_test() -> None:
    short = dataclasses.replace(GATE, budget_minutes=2.0)
    noisy = {"candidate": 920.0, "baseline": 1000.0}
    first = run_gate(ScriptedSides(noisy, sd=0.06, swappable=True), _inputs(gate=short))
    assert first.result.verdict == "inconclusive", first.result.reasons
    assert "perfgate run --extend" in first.result.reasons[-1]
    spent = sum(look.alpha_block for look in first.looks)
    assert spent == pytest.approx(0.75 * sequential.ALPHA_BLOCK)  # a quarter kept back
    resume = Resume(
        saturation=first.saturation, steps=first.steps, windows=first.windows, looks=first.looks
    )
    assert extend_problem(resume) is None
    sides = ScriptedSides(noisy, sd=0.06, swappable=True, rng=random.Random(11))
    more = run_gate(
        sides, _inputs(gate=dataclasses.replace(GATE, budget_minutes=6.0), resume=resume)
    )
    assert not [c for c in sides.calls if c[2] != "window"]  # no new search: the same N_w
    assert more.windows[: len(first.windows)] == first.windows
    assert {w.session for w in more.windows} == {0, 1} and more.window_users == first.window_users
    new_looks = [look for look in more.looks if look.session == 1]
    assert more.looks[: len(first.looks)] == first.looks and new_looks
    assert new_looks[0].pairs > first.looks[-1].pairs  # pairs count on from the earlier run
    # the extension spends the kept quarter: together within the budget
    total = spent + sum(look.alpha_block for look in new_looks)
    assert total <= sequential.ALPHA_BLOCK + 1e-12
    reg = next(r for r in more.result.rules if r.name == "regression")
    assert "2 sessions" in reg.message and "extension look" in reg.message
    assert more.result.verdict in ("block", "inconclusive")
    again = Resume(
        saturation=more.saturation, steps=more.steps, windows=more.windows, looks=more.looks
    )
    assert extend_problem(again) is not None  # extended once at most


def test_a_previous_release_that_answers_nothing_is_an_infrastructure_failure() -> None:
    with pytest.raises(LoadError, match="previous release completed no request"):
        run_gate(ScriptedSides({"candidate": 1000.0, "baseline": 1e-9}), _inputs())


def test_no_baseline_means_the_floor_alone() -> None:
    floor = GateSpec(min_users=600, max_regression=0.1, block_min_regression=0.05)
    out = run_gate(
        ScriptedSides({"candidate": 1000.0, "baseline": 0.0}),
        _inputs(mode="none", baseline=None, gate=floor),
    )
    assert out.result.verdict == "block"
    assert not out.windows


def test_the_decision_is_a_function_of_the_measurements() -> None:
    # the simulator and the pipeline both hand their measurements to this one function: the same
    # measurements give the same verdict and the same looks, whoever measured them
    a = run_gate(ScriptedSides({"candidate": 930.0, "baseline": 1000.0}, sd=0.03), _inputs())
    b = run_gate(ScriptedSides({"candidate": 930.0, "baseline": 1000.0}, sd=0.03), _inputs())
    assert a.result == b.result and a.looks == b.looks


def test_simulator_and_pipeline_call_the_same_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    import perfgate.pipeline.run as pipeline_run
    from perfgate.simulate import harness

    calls: list[str] = []
    real = gate.run_gate

    def spy(sides: object, inputs: GateInputs, *rest: object) -> gate.GateOutcome:
        calls.append(type(sides).__name__)
        return real(sides, inputs, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(gate, "run_gate", spy)
    harness.simulate(0.0, 1, 5, noise="quiet")
    assert calls == ["SimSides"]
    assert pipeline_run.gate is gate  # the pipeline reaches it through the same attribute
    source = Path(pipeline_run.__file__).read_text(encoding="utf-8")
    assert "gate.run_gate(" in source


def test_the_floor_decides_on_the_windows_interval() -> None:
    # N* ≈ 500 users (1000 req/s × 0.5 s / 1.1): a floor far below passes, far above fails,
    # and a floor inside the windows' interval is not decided on the bare point
    def floor_of(min_users: int, sd: float) -> str:
        spec = GateSpec(min_users=min_users, max_regression=0.1, block_min_regression=0.05)
        sides = ScriptedSides({"candidate": 1000.0, "baseline": 1000.0}, sd=sd)
        out = run_gate(sides, _inputs(gate=spec))
        assert out.saturation.users_ci is not None
        return next(r for r in out.result.rules if r.name == "floor").outcome

    assert floor_of(300, 0.01) == "pass"
    assert floor_of(700, 0.01) == "fail"
    assert floor_of(450, 0.08) == "inconclusive"


# ---------------------------------------------------------------------------------------------
# the floor rule's interval: the windows' mean and the search point's own error
# ---------------------------------------------------------------------------------------------


def _window(users: int, p95_ms: float) -> WindowStats:
    return WindowStats(
        build="candidate",
        pair=1,
        users=users,
        duration_s=5.0,
        requests=1000,
        failures=0,
        goodput_rps=200.0,
        p95_ms=p95_ms,
    )


def test_the_floor_interval_carries_the_search_points_own_error() -> None:
    """Many steady windows shrink the mean's part; the point's own error stays."""
    from scipy import stats

    from perfgate.gate.design import SEARCH_DETERMINATIONS, users_interval

    slo = Slo(p95_ms=250.0)
    rng = random.Random(11)
    p95s = [250.0 * math.exp(rng.gauss(0.0, 0.10)) for _ in range(40)]
    records = [_window(100, p) for p in p95s]
    point = Saturation(users=100.0, throughput_rps=400.0, broken=True, reason="", censored="no")
    lo, hi = users_interval(point, slo, records)
    logs = [math.log(100 * 250.0 / p) for p in p95s]
    one = math.sqrt(statistics.variance(logs) / SEARCH_DETERMINATIONS)
    assert math.log(hi / 100.0) >= stats.norm.ppf(0.975) * one  # not the mean's ±3 % alone
    assert math.log(hi / 100.0) == pytest.approx(math.log(100.0 / lo))  # centred on the point
    assert users_interval(point, slo, records[:2]) is None  # too few windows to say


def test_the_simulator_measures_the_interval_the_floor_rule_judged() -> None:
    from perfgate.simulate import simulate

    out = simulate(0.0, trials=2, seed=4, noise="quiet", coverage=True)
    assert out["floor_interval"]["trials"] == 2
    assert 0.05 < out["floor_interval"]["median_half_width"] < 0.6
