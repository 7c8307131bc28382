"""Adaptive search against fake runners with known answers, and against the simulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from perfgate.adaptive import adaptive
from perfgate.analysis import saturation
from perfgate.models import RampSpec, Slo, StepStats
from perfgate.search import SearchOutcome, linear
from perfgate.simulate import NOISE_PROFILES, SimulatedRunner, TargetModel, compare_search

SLO = Slo(p95_ms=250.0, error_rate=0.01)


class FakeRunner:
    """p95 is a known function of users; records every call and the seconds it would take."""

    def __init__(self, p95_of: Callable[[int, int], float], rps_of=lambda n: 10.0 * n) -> None:
        self.p95_of = p95_of  # (users, call number) -> p95
        self.rps_of = rps_of
        self.calls: list[tuple[str, int, dict]] = []
        self.clock_s = 0.0

    def measure(self, users, *, settle_s, min_s, max_s, min_samples, phase) -> StepStats:
        n = len([c for c in self.calls if c[0] == "measure"])
        self.calls.append(
            (
                "measure",
                users,
                {
                    "settle_s": settle_s,
                    "min_s": min_s,
                    "max_s": max_s,
                    "min_samples": min_samples,
                    "phase": phase,
                },
            )
        )
        self.clock_s += settle_s + min_s
        p95 = self.p95_of(users, n)
        ok = p95 <= SLO.p95_ms
        return StepStats(
            users=users,
            duration_s=min_s,
            requests=int(self.rps_of(users) * min_s),
            failures=0,
            throughput_rps=self.rps_of(users),
            p50_ms=p95 / 2,
            p95_ms=p95,
            p99_ms=p95 * 1.2,
            error_rate=0.0,
            slo_ok=ok,
            slo_reason="" if ok else f"p95 {p95:.0f} ms > SLO {SLO.p95_ms:.0f} ms at {users} users",
            p95_ci_ms=(p95 * 0.98, p95 * 1.02),
            phase="whatever",
            index=99,
        )

    def hold(self, users, seconds) -> None:
        self.calls.append(("hold", users, {"seconds": seconds}))
        self.clock_s += seconds

    def measured(self) -> list[int]:
        return [c[1] for c in self.calls if c[0] == "measure"]


def proportional(crossing: float) -> Callable[[int, int], float]:
    """Past the knee of a closed system: p95 ∝ users, crossing the SLO at ``crossing``."""
    return lambda users, _n: SLO.p95_ms * users / crossing + 0.0


RAMP = RampSpec(
    strategy="adaptive",
    start_users=10,
    step_users=10,
    max_users=2000,
    step_seconds=10.0,
    resolution=0.05,
    min_samples=400,
    cooldown_seconds=3.0,
)


@pytest.mark.parametrize("crossing", [37.3, 137.5, 612.4])
def test_finds_the_boundary_within_resolution(crossing: float) -> None:
    runner = FakeRunner(proportional(crossing))
    out = adaptive(runner, RAMP, SLO)
    assert isinstance(out, SearchOutcome)
    sat = saturation(out.steps, SLO, max_users=RAMP.max_users)
    lo, hi = sat.bracket
    assert lo <= crossing <= hi
    assert hi / lo <= 1 + RAMP.resolution or hi - lo <= 1
    assert sat.users == pytest.approx(crossing, rel=0.01)
    assert "confirmed the SLO boundary" in out.stopped_because


def test_uses_fewer_steps_than_a_linear_ramp_of_equal_resolution() -> None:
    crossing = 412.7
    a = FakeRunner(proportional(crossing))
    adaptive(a, RAMP, SLO)
    lin_ramp = RampSpec(start_users=10, step_users=round(0.05 * crossing), max_users=2000)
    b = FakeRunner(proportional(crossing))
    linear(b, lin_ramp, SLO)
    assert len(a.measured()) < len(b.measured()) / 2
    assert a.clock_s < 0.5 * b.clock_s


def test_phases_and_ascending_confirmation_after_a_cool_down() -> None:
    runner = FakeRunner(proportional(137.5))
    out = adaptive(runner, RAMP, SLO)
    phases = [s.phase for s in out.steps]
    assert phases[0] == "search"
    assert {"search", "confirm"} <= set(phases)
    assert [s.index for s in out.steps] == list(range(len(out.steps)))
    # the confirmation: a hold at lo // 2 for the cool-down, then lo, then hi
    sat = saturation(out.steps, SLO)
    lo, hi = sat.bracket
    kinds = [(c[0], c[1]) for c in runner.calls]
    i = kinds.index(("hold", lo // 2))
    assert runner.calls[i][2]["seconds"] == RAMP.cooldown_seconds
    assert kinds[i + 1] == ("measure", lo) and kinds[i + 2] == ("measure", hi)
    assert [s.phase for s in out.steps[-2:]] == ["confirm", "confirm"]


def test_per_step_rules_are_passed_to_the_runner() -> None:
    runner = FakeRunner(proportional(137.5))
    adaptive(runner, RAMP, SLO)
    args = [c[2] for c in runner.calls if c[0] == "measure"]
    settle = RAMP.settle_s
    assert all(a["settle_s"] == settle for a in args)
    assert all(a["min_s"] == pytest.approx(RAMP.step_seconds - settle) for a in args)
    assert all(a["max_s"] == pytest.approx(3 * RAMP.step_seconds - settle) for a in args)
    assert all(a["min_samples"] == RAMP.min_samples for a in args)


def test_never_broke_is_censored_above_max() -> None:
    ramp = RampSpec(start_users=10, max_users=300, step_seconds=10.0, resolution=0.05)
    runner = FakeRunner(lambda users, n: 50.0)
    out = adaptive(runner, ramp, SLO)
    assert runner.measured()[-1] == 300
    assert "censored above max" in out.stopped_because
    sat = saturation(out.steps, SLO, max_users=300)
    assert sat.censored == "above_max" and sat.users == 300


def test_broke_at_the_first_level_is_reported_after_one_recheck() -> None:
    runner = FakeRunner(lambda users, n: 900.0)
    out = adaptive(runner, RAMP, SLO)
    assert runner.measured() == [10, 10]
    assert [c[0] for c in runner.calls] == ["measure", "hold", "measure"]
    assert "censored below start" in out.stopped_because
    assert saturation(out.steps, SLO).censored == "below_start"


def test_a_noisy_failure_at_the_first_level_is_survived() -> None:
    crossing = 137.5
    # the first step is a little over the SLO by chance; its re-measurement is normal
    runner = FakeRunner(lambda users, n: 270.0 if n == 0 else proportional(crossing)(users, n))
    out = adaptive(runner, RAMP, SLO)
    sat = saturation(out.steps, SLO)
    assert sat.censored == "no"
    assert sat.bracket[0] <= crossing <= sat.bracket[1]
    assert [s.phase for s in out.steps[:2]] == ["search", "confirm"]


def test_a_break_that_does_not_reproduce_moves_the_bracket_up() -> None:
    crossing = 137.5
    spiked: set[int] = set()

    def p95(users: int, n: int) -> float:
        # the first passing level near the boundary is measured once just over the SLO
        if 0.8 * crossing < users < crossing and not spiked:
            spiked.add(users)
            return SLO.p95_ms * 1.01
        return proportional(crossing)(users, n)

    runner = FakeRunner(p95)
    out = adaptive(runner, RAMP, SLO)
    assert spiked
    sat = saturation(out.steps, SLO)
    assert sat.bracket[0] <= crossing <= sat.bracket[1]
    assert "passed on re-measurement" in out.stopped_because


class MemoryRunner(FakeRunner):
    """After an overload step, latencies stay 30 % higher until the load drops below half."""

    def __init__(self, crossing: float) -> None:
        self.crossing = crossing
        self.overloaded = False
        super().__init__(self._p95)

    def _p95(self, users: int, n: int) -> float:
        base = proportional(self.crossing)(users, n)
        value = base * (1.3 if self.overloaded else 1.0)
        if base > SLO.p95_ms:
            self.overloaded = True
        return value

    def hold(self, users, seconds) -> None:
        if users < self.crossing / 2:
            self.overloaded = False
        super().hold(users, seconds)


def test_hysteresis_is_flagged_and_the_fresh_ascent_wins() -> None:
    runner = MemoryRunner(137.5)
    out = adaptive(runner, RAMP, SLO)
    assert "hysteresis suspected" in out.stopped_because
    sat = saturation(out.steps, SLO)
    # the bracket found after overload (≈ 106 users) is abandoned for the real boundary
    assert sat.users > 120


def test_focused_replicate_measures_around_the_hinted_bracket() -> None:
    crossing = 137.5
    runner = FakeRunner(proportional(crossing))
    out = adaptive(runner, RAMP, SLO, hint=(134, 140))
    # a warm-up at half the bracket, then one resolution wider than the hint, ascending
    assert runner.calls[0][0] == "hold" and runner.calls[0][1] == 127 // 2
    assert runner.calls[0][2]["seconds"] >= 15.0
    assert runner.measured() == [127, 147]
    assert [s.phase for s in out.steps] == ["replicate", "replicate"]
    assert "focused replicate" in out.stopped_because
    sat = saturation(out.steps, SLO)
    assert sat.bracket == (127, 147)
    assert sat.users == pytest.approx(crossing, rel=0.01)


def test_focused_replicate_follows_a_moved_boundary() -> None:
    runner = FakeRunner(proportional(100.0))  # the hint is stale: the boundary is far lower
    out = adaptive(runner, RAMP, SLO, hint=(134, 140))
    sat = saturation(out.steps, SLO)
    assert sat.censored == "no"
    assert sat.bracket[0] <= 100.0 <= sat.bracket[1]
    assert sat.bracket[1] / sat.bracket[0] <= 1 + RAMP.resolution + 0.01


def test_replicate_hint_is_the_union_of_the_first_runs_brackets() -> None:
    from perfgate.adaptive import replicate_hint
    from perfgate.models import Saturation

    def sat(bracket, censored="no"):
        return Saturation(
            users=1.0,
            throughput_rps=1.0,
            broken=True,
            reason="",
            bracket=bracket,
            censored=censored,
        )

    assert replicate_hint([sat((100, 105)), sat((90, 94))]) == (90, 105)
    assert replicate_hint([sat((100, 105)), sat(None, "above_max")]) == (100, 105)
    assert replicate_hint([sat((0, 50), "below_start")]) is None
    assert replicate_hint([]) is None


def test_bad_ramps_are_refused() -> None:
    with pytest.raises(ValueError, match="start_users"):
        adaptive(FakeRunner(proportional(10)), RampSpec(start_users=0), SLO)
    with pytest.raises(ValueError, match="max_users"):
        adaptive(FakeRunner(proportional(10)), RampSpec(start_users=50, max_users=10), SLO)


def test_on_step_sees_every_step() -> None:
    seen: list[StepStats] = []
    out = adaptive(FakeRunner(proportional(137.5)), RAMP, SLO, on_step=seen.append)
    assert tuple(seen) == out.steps


# ---------------------------------------------------------------------------------------------
# Against the simulator: analytical N*, and the time ratio target of issue 4
# ---------------------------------------------------------------------------------------------


def test_simulated_reference_exchange_within_5_percent_of_analytical_n_star() -> None:
    model = TargetModel(servers=16, service_ms=15.2, service_cv=0.0, network_ms=1.0)
    slo = Slo(p95_ms=500.0)
    n_star = model.analytical_n_star(500.0)
    ramp = RampSpec(strategy="adaptive", start_users=50, max_users=1400, step_seconds=8.0)
    runner = SimulatedRunner(model, slo, seed=1, noise=NOISE_PROFILES["quiet"])
    out = adaptive(runner, ramp, slo)
    sat = saturation(out.steps, slo, max_users=1400)
    assert sat.users == pytest.approx(n_star, rel=0.05)
    assert sat.throughput_rps == pytest.approx(model.capacity_rps, rel=0.05)


def test_adaptive_takes_at_most_0_4_of_linear_time_from_a_distant_first_level() -> None:
    out = compare_search(
        settings=((16, 15.2, 500.0), (8, 10.0, 245.0)), start_users=10, noise="none", seeds=1
    )
    for row in out["rows"]:
        assert row["max_abs_error"] <= 0.05
        assert row["time_ratio"] <= 0.4
