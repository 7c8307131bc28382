"""The simulated target against queueing theory, its StepStats, and a harness smoke run."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from perfgate.models import Slo
from perfgate.simulate import (
    HELD_OUT,
    NOISE_PROFILES,
    PRESETS,
    NoiseProfile,
    SimulatedRunner,
    TargetModel,
    Timeline,
    clopper_pearson,
    format_result,
    format_table,
    simulate,
    simulate_table,
)
from perfgate.simulate.harness import true_users

SLO = Slo(p95_ms=500.0)


def measure(runner: SimulatedRunner, users: int, seconds: float = 60.0):
    return runner.measure(
        users, settle_s=5.0, min_s=seconds, max_s=seconds, min_samples=0, phase="t"
    )


def mva_single_server(n: int, service_s: float, delay_s: float) -> tuple[float, float]:
    """Exact mean-value analysis: one exponential FCFS server plus a pure delay (network)."""
    q = 0.0
    x = r = 0.0
    for k in range(1, n + 1):
        r = service_s * (1 + q)
        x = k / (r + delay_s)
        q = x * r
    return x, r + delay_s


@pytest.mark.parametrize("users", [1, 3, 8])
def test_exponential_single_server_matches_mean_value_analysis(users: int) -> None:
    model = TargetModel(servers=1, service_ms=10.0, service_dist="exponential", network_ms=5.0)
    runner = SimulatedRunner(model, SLO, seed=users)
    s = measure(runner, users, 120.0)
    x, latency_s = mva_single_server(users, 0.010, 0.010)
    assert s.throughput_rps == pytest.approx(x, rel=0.03)
    assert s.mean_ms == pytest.approx(latency_s * 1000, rel=0.03)


def test_deterministic_closed_network_below_and_past_the_knee() -> None:
    model = TargetModel(servers=4, service_ms=20.0, service_cv=0.0, network_ms=1.0)
    runner = SimulatedRunner(model, SLO, seed=1)
    below = measure(runner, 2, 30.0)  # fewer users than servers: no queueing
    assert below.throughput_rps == pytest.approx(2 / 0.022, rel=0.01)
    assert below.mean_ms == pytest.approx(22.0, rel=0.01)
    past = measure(runner, 80, 30.0)  # past the knee: X = c/S, R = N/X
    assert past.throughput_rps == pytest.approx(model.capacity_rps, rel=0.01)
    assert past.mean_ms == pytest.approx(80 / model.capacity_rps * 1000, rel=0.02)
    assert past.p95_ms == pytest.approx(80 / model.capacity_rps * 1000, rel=0.05)
    assert model.analytical_n_star(500.0) == pytest.approx(100.0)


def test_littles_law_holds_and_capacity_is_servers_over_service() -> None:
    model = TargetModel(servers=8, service_ms=40.0, service_cv=1.0, network_ms=5.0)
    runner = SimulatedRunner(model, SLO, seed=2)
    s = measure(runner, 64, 60.0)
    assert s.throughput_rps == pytest.approx(200.0, rel=0.04)
    assert s.generator is not None
    assert s.generator.little_ratio == pytest.approx(1.0, abs=0.03)
    assert not s.generator.limited


def test_step_stats_look_like_real_runs() -> None:
    runner = SimulatedRunner(TargetModel(), Slo(p95_ms=100.0), seed=3)
    s = runner.measure(64, settle_s=2.0, min_s=5.0, max_s=15.0, min_samples=100, phase="search")
    assert s.users == 64 and s.phase == "search"
    assert s.duration_s == pytest.approx(5.0)
    assert s.started_s == pytest.approx(2.0)
    assert s.requests > 0 and s.failures == 0
    assert s.p50_ms < s.p95_ms < s.p99_ms <= s.max_ms
    lo, hi = s.p95_ci_ms
    assert lo <= s.p95_ms <= hi
    assert sum(v for k, v in s.histogram.items() if not k.startswith("_")) == s.requests
    assert not s.slo_ok and s.slo_reason.startswith("p95 ")
    assert runner.clock_s == pytest.approx(7.0)


def test_min_samples_extends_a_step_up_to_its_maximum() -> None:
    runner = SimulatedRunner(TargetModel(), SLO, seed=4)
    s = runner.measure(1, settle_s=0.0, min_s=2.0, max_s=6.0, min_samples=10_000, phase="t")
    assert s.duration_s == pytest.approx(6.0)
    t = runner.measure(1, settle_s=0.0, min_s=2.0, max_s=60.0, min_samples=100, phase="t")
    assert 2.0 <= t.duration_s < 10.0 and t.requests >= 100


def test_hold_advances_the_clock_without_a_step() -> None:
    runner = SimulatedRunner(TargetModel(), SLO, seed=5)
    runner.hold(10, 3.0)
    assert runner.clock_s == pytest.approx(3.0)


def test_a_capped_generator_fails_littles_law() -> None:
    model = TargetModel(servers=8, service_ms=40.0, generator_ms=10.0)  # ≤ 100 requests/s
    runner = SimulatedRunner(model, SLO, seed=6)
    s = measure(runner, 32, 20.0)
    assert s.throughput_rps == pytest.approx(100.0, rel=0.05)
    assert s.generator.limited
    assert s.generator.little_ratio < 0.9
    assert "users waited on the generator" in s.generator.reason


def test_regression_scales_capacity() -> None:
    model = TargetModel(servers=4, service_ms=20.0, service_cv=0.0)
    runner = SimulatedRunner(model, SLO, seed=7, regression=0.2)
    s = measure(runner, 80, 20.0)
    assert s.throughput_rps == pytest.approx(model.capacity_rps * 0.8, rel=0.01)


def test_noise_slows_the_target_down() -> None:
    model = TargetModel(servers=4, service_ms=20.0, service_cv=0.0)
    loud = NoiseProfile(neighbour_per_s=0.5, neighbour_mean_s=1.0, neighbour_slowdown=2.0)
    quiet = measure(SimulatedRunner(model, SLO, seed=8), 80, 300.0)
    noisy = measure(SimulatedRunner(model, SLO, seed=8, noise=loud), 80, 300.0)
    # episodes (1 s on average, then 2 s on average until the next one) cover 1/3 of the time,
    # at half speed there
    busy = 1 / 3
    assert noisy.throughput_rps == pytest.approx(quiet.throughput_rps * (1 - busy / 2), rel=0.06)
    stalls = NoiseProfile(stall_per_s=1.0, stall_s=0.5)
    stalled = measure(SimulatedRunner(model, SLO, seed=8, noise=stalls), 80, 60.0)
    assert stalled.throughput_rps == pytest.approx(quiet.throughput_rps * 0.5, rel=0.12)


def test_machine_drift_has_the_documented_spread_and_memory() -> None:
    noise = NoiseProfile(drift_sd=0.04, drift_tau_s=300.0)
    line = Timeline(noise, random.Random(1))
    logs = [-math.log(line.factor(float(t))[0]) for t in range(0, 400_000, 50)]
    assert statistics.stdev(logs) == pytest.approx(0.04, rel=0.15)
    lag = statistics.correlation(logs[:-1], logs[1:])  # 50 s apart: exp(-50/300)
    assert lag == pytest.approx(math.exp(-50 / 300), abs=0.05)


def test_a_deployment_offset_scales_capacity() -> None:
    model = TargetModel(servers=4, service_ms=20.0, service_cv=0.0)
    slow = NoiseProfile(name="offset", candidate_offset=math.log(0.9))
    from perfgate.simulate import Deployment

    dep = Deployment(slow, random.Random(1), started_s=0.0, offset=slow.candidate_offset)
    s = measure(SimulatedRunner(model, SLO, seed=9, noise=slow, deployment=dep), 80, 20.0)
    assert s.throughput_rps == pytest.approx(model.capacity_rps * 0.9, rel=0.01)


def test_held_out_profiles_are_named_and_differ_from_the_tuning_profile() -> None:
    shared = NOISE_PROFILES["shared"]
    for name in HELD_OUT:
        profile = NOISE_PROFILES[name]
        assert profile.name == name and profile != shared


def test_the_exchange_preset_is_the_default_scenario() -> None:
    from perfgate.scenario import load_scenario

    scen = load_scenario("scenarios/exchange.yaml")
    pre = PRESETS["exchange"]
    assert pre.ramp == scen.ramp and pre.slo == scen.slo
    assert (pre.gate.max_regression, pre.gate.block_min_regression) == (
        scen.gate.max_regression,
        scen.gate.block_min_regression,
    )
    assert pre.gate.budget_minutes == scen.gate.budget_minutes
    knobs = scen.staging.embedded
    assert (pre.model.servers, pre.model.service_ms) == (knobs["slots"], knobs["service_ms"])


def test_clopper_pearson() -> None:
    assert clopper_pearson(0, 10)[0] == 0.0
    assert clopper_pearson(10, 10)[1] == 1.0
    lo, hi = clopper_pearson(20, 1000)
    assert lo == pytest.approx(0.01226, abs=2e-4) and hi == pytest.approx(0.03074, abs=2e-4)


def test_harness_smoke_run() -> None:
    out = simulate(0.2, trials=6, seed=3)
    for key in (
        "trials",
        "regression",
        "block",
        "pass",
        "inconclusive",
        "block_ci",
        "pass_ci",
        "inconclusive_ci",
        "seed",
        "mean_simulated_seconds",
    ):
        assert key in out
    assert out["trials"] == 6 and out["seed"] == 3 and out["regression"] == 0.2
    assert out["block"] + out["pass"] + out["inconclusive"] == pytest.approx(1.0)
    assert out["block_ci"][0] <= out["block"] <= out["block_ci"][1]
    assert out["block"] >= 0.5  # a 20 % capacity loss is obvious even to a single run
    assert 20 < out["mean_simulated_seconds"] < 600
    assert out["noise"]["name"] == "shared" and out["mode"] == "side-by-side"
    json.dumps(out, allow_nan=False)
    assert "6 simulated gates, capacity loss 20.0%" in format_result(out)
    assert "embedded staging (cross-over, 1 s a swap)" in format_result(out)
    assert "floor_interval" not in out  # only on request: it costs a minute of CPU
    # the same seed gives the same answer
    again = simulate(0.2, trials=6, seed=3)
    assert (
        again["block"] == out["block"]
        and again["mean_simulated_seconds"] == out["mean_simulated_seconds"]
    )


def test_floor_interval_coverage_is_measured_against_the_true_users() -> None:
    out = simulate(0.0, trials=4, seed=3, preset="research", noise="quiet", coverage=True)
    floor = out["floor_interval"]
    assert floor["trials"] >= 1 and 0.0 <= floor["coverage"] <= 1.0
    assert floor["coverage_ci"][0] <= floor["coverage"] <= floor["coverage_ci"][1]
    assert 0.0 < floor["median_half_width"] < 1.0
    # the truth: below the deterministic-service N* (service times vary: p95 > mean), and 10 %
    # less capacity gives 10 % fewer users at the SLO, past the knee
    model, slo = PRESETS["research"].model, PRESETS["research"].slo
    full = true_users(PRESETS["research"], 0.0, NOISE_PROFILES["quiet"])
    assert floor["true_users"] == pytest.approx(full, abs=0.1)
    assert 0.4 * model.analytical_n_star(slo.p95_ms) < full < model.analytical_n_star(slo.p95_ms)
    less = true_users(PRESETS["research"], 0.1, NOISE_PROFILES["quiet"])
    assert less == pytest.approx(0.9 * full, rel=0.05)


def test_kubernetes_staging_swaps_in_long_periods_and_pays_for_the_swaps() -> None:
    out = simulate(0.0, trials=2, seed=5, staging="kubernetes", noise="quiet")
    embedded = simulate(0.0, trials=2, seed=5, noise="quiet")
    assert out["staging"] == "kubernetes" and out["swap_seconds"] == 60.0 and out["crossover"]
    assert out["pass"] == 1.0  # the same build, quiet machine
    assert embedded["swap_seconds"] == 1.0 and embedded["staging"] == "embedded"
    target = simulate(0.0, trials=1, seed=5, crossover=False, noise="quiet")
    assert target["staging"] == "target" and not target["crossover"]


def test_table_mode() -> None:
    table = simulate_table(2, 1, regressions=(0.0, 0.2), noise="quiet")
    assert [r["regression"] for r in table["rows"]] == [0.0, 0.2]
    assert table["config"]["noise"]["name"] == "quiet"
    text = format_table(table)
    assert "| 20.0% | 2 |" in text


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        simulate(1.5, 1, 0)
    with pytest.raises(ValueError):
        simulate(0.1, 0, 0)
    with pytest.raises(ValueError):
        SimulatedRunner(TargetModel(), SLO, seed=0, regression=1.0)
    assert set(NOISE_PROFILES) >= {"none", "quiet", "shared"}
