"""Analysis: the SLO boundary from synthetic curves with known answers, pooling, uncertainty,
replicates and the knee diagnostics."""

from __future__ import annotations

import json
import math
import random

import pytest

from perfgate.analysis import (
    combine_replicates,
    diagnostics,
    pool_levels,
    saturation,
)
from perfgate.histogram import Histogram
from perfgate.models import GeneratorHealth, Saturation, Slo, StepStats

SLO = Slo(p95_ms=250.0, error_rate=0.01)


def step(
    users: int,
    p95_ms: float | None,
    throughput_rps: float,
    *,
    ci: tuple[float, float] | None = None,
    requests: int = 2000,
    failures: int = 0,
    mean_ms: float | None = None,
    histogram: dict[str, int] | None = None,
    phase: str = "ramp",
    slo: Slo = SLO,
) -> StepStats:
    error_rate = failures / requests if requests else 0.0
    ok = p95_ms is not None and p95_ms <= slo.p95_ms and error_rate <= slo.error_rate
    return StepStats(
        users=users,
        duration_s=requests / throughput_rps if throughput_rps else 10.0,
        requests=requests,
        failures=failures,
        throughput_rps=throughput_rps,
        p50_ms=None if p95_ms is None else p95_ms / 2,
        p95_ms=p95_ms,
        p99_ms=None if p95_ms is None else p95_ms * 1.2,
        error_rate=error_rate,
        slo_ok=ok,
        p95_ci_ms=ci,
        mean_ms=mean_ms,
        histogram=histogram or {},
        phase=phase,
    )


def linear_curve(levels: range, *, crossing: float, x_of_n) -> list[StepStats]:
    """p95 = SLO × N / crossing: the SLO breaks at exactly ``crossing`` users."""
    return [step(n, SLO.p95_ms * n / crossing, x_of_n(n)) for n in levels]


# ---------------------------------------------------------------------------------------------
# The SLO boundary
# ---------------------------------------------------------------------------------------------


def test_boundary_is_interpolated_to_the_known_crossing() -> None:
    steps = linear_curve(range(10, 200, 20), crossing=137.0, x_of_n=lambda n: 300 + 4 * n)
    sat = saturation(steps, SLO, max_users=600)
    assert sat.broken and sat.censored == "no"
    assert sat.users == pytest.approx(137.0, rel=1e-9)
    assert sat.throughput_rps == pytest.approx(300 + 4 * 137.0, rel=1e-9)
    assert sat.bracket == (130, 150)
    assert sat.reason.startswith("p95 274 ms > SLO 250 ms at 150 users")


def test_reason_names_the_failing_level_in_words() -> None:
    steps = [step(100, 200, 500), step(130, 312, 520)]
    sat = saturation(steps, SLO)
    assert sat.reason.startswith("p95 312 ms > SLO 250 ms at 130 users")


def test_boundary_ignores_steps_after_the_first_break() -> None:
    # a noisy pass above the first failing level does not move the boundary, and is mentioned
    steps = [step(50, 100, 400), step(100, 200, 500), step(150, 300, 500), step(200, 240, 500)]
    sat = saturation(steps, SLO)
    assert sat.bracket == (100, 150)
    assert sat.users == pytest.approx(125.0)
    assert "held again at 200" in sat.reason


def test_error_rate_break_is_interpolated_on_errors() -> None:
    steps = [
        step(100, 100, 500, failures=0),
        step(200, 120, 500, failures=60),  # 3 % errors, p95 fine
    ]
    sat = saturation(steps, SLO)
    assert sat.broken
    assert "error rate 3.0% > SLO 1.0% at 200 users" in sat.reason
    assert sat.users == pytest.approx(100 + 100 / 3, rel=1e-6)


def test_never_broke_is_censored_above_max() -> None:
    steps = linear_curve(range(100, 601, 100), crossing=5000.0, x_of_n=lambda n: n)
    sat = saturation(steps, SLO, max_users=600)
    assert not sat.broken
    assert sat.censored == "above_max"
    assert sat.users == 600
    assert "saturation ≥ 600 users" in sat.reason
    assert "max_users (600)" in sat.reason


def test_ramp_that_stopped_early_says_so() -> None:
    steps = linear_curve(range(100, 301, 100), crossing=5000.0, x_of_n=lambda n: n)
    sat = saturation(steps, SLO, max_users=600)
    assert sat.censored == "above_max"
    assert "stopped below max_users 600" in sat.reason


def test_broke_at_first_level_is_censored_below_start() -> None:
    steps = linear_curve(range(100, 301, 100), crossing=50.0, x_of_n=lambda n: n)
    sat = saturation(steps, SLO)
    assert sat.broken
    assert sat.censored == "below_start"
    assert sat.users == 100
    assert "saturation < 100 users" in sat.reason


def test_no_steps() -> None:
    sat = saturation((), SLO)
    assert sat.users is None and not sat.broken


# ---------------------------------------------------------------------------------------------
# Pooling re-measurements
# ---------------------------------------------------------------------------------------------


def hist_of(values: list[float]) -> dict[str, int]:
    h = Histogram()
    h.record_many(values)
    return h.to_dict()


def test_remeasured_levels_are_pooled_from_histograms() -> None:
    rng = random.Random(1)
    fast = [rng.uniform(100, 240) for _ in range(1000)]  # p95 ≈ 233: passes
    slow = [rng.uniform(100, 300) for _ in range(1000)]  # p95 ≈ 290: fails
    merged = Histogram()
    merged.record_many(fast + slow)
    a = step(100, 233, 500, histogram=hist_of(fast), requests=1000, phase="search")
    b = step(100, 290, 500, histogram=hist_of(slow), requests=1000, phase="confirm")
    (level,) = pool_levels([a, b], SLO)
    assert level.steps == 2
    assert level.requests == 2000
    assert level.p95_ms == pytest.approx(merged.percentile(95))
    assert level.slo_ok is (merged.percentile(95) <= SLO.p95_ms)
    assert level.phases == ("search", "confirm")


def test_pooling_without_histograms_weights_by_requests() -> None:
    a = step(100, 200, 500, requests=3000, ci=(190, 210))
    b = step(100, 300, 500, requests=1000, ci=(280, 320))
    (level,) = pool_levels([a, b], SLO)
    assert level.p95_ms == pytest.approx(225.0)
    assert level.p95_ci_ms is not None
    assert level.p95_ci_ms[0] < 225 < level.p95_ci_ms[1]
    assert level.slo_ok


def test_pooled_remeasurement_changes_the_boundary() -> None:
    # 120 users passed once and failed once on re-measurement: pooled, it fails
    steps = [
        step(80, 180, 500),
        step(120, 240, 520, requests=1000),
        step(160, 330, 520),
        step(120, 280, 520, requests=3000, phase="confirm"),
    ]
    sat = saturation(steps, SLO)
    assert sat.bracket == (80, 120)
    assert "pooled re-measurements" in sat.reason


# ---------------------------------------------------------------------------------------------
# Uncertainty
# ---------------------------------------------------------------------------------------------


def test_p95_intervals_are_pushed_through_the_interpolation() -> None:
    steps = [step(90, 230, 800, ci=(220, 240)), step(110, 270, 800, ci=(260, 280))]
    sat = saturation(steps, SLO)
    assert sat.users == pytest.approx(100.0)
    # early crossing with the upper ends: (250-240)/(280-240) = 0.25; late: (250-220)/40 = 0.75
    assert sat.users_ci == pytest.approx((95.0, 105.0))
    assert sat.throughput_ci == pytest.approx((800.0, 800.0))


def test_without_intervals_the_bracket_is_the_interval() -> None:
    steps = [step(90, 230, 700), step(110, 270, 900)]
    sat = saturation(steps, SLO)
    assert sat.users_ci == pytest.approx((90.0, 110.0))
    assert sat.throughput_ci == pytest.approx((700.0, 900.0))


def _latency_sample(rng: random.Random, users: int, n: int) -> list[float]:
    # exponential latencies whose mean grows linearly with users: p95 = mean × ln 20
    mean = users * 2.0
    return [rng.expovariate(1.0 / mean) for _ in range(n)]


def test_users_interval_covers_the_true_crossing() -> None:
    rng = random.Random(7)
    truth = SLO.p95_ms / (2.0 * math.log(20))  # p95(N) = 2 N ln 20 crosses 250 ms here (≈ 41.7)
    covered = judged = 0
    for _ in range(60):
        steps = []
        for users in (30, 55):
            h = Histogram()
            h.record_many(_latency_sample(rng, users, 1500))
            p95 = h.percentile(95)
            steps.append(step(users, p95, 20.0 * users, ci=h.percentile_ci(95), requests=h.count))
        sat = saturation(steps, SLO)
        assert sat.censored == "no"
        assert sat.users_ci is not None
        judged += 1
        covered += sat.users_ci[0] <= truth <= sat.users_ci[1]
    assert judged == 60
    assert covered / judged >= 0.9


# ---------------------------------------------------------------------------------------------
# Replicates
# ---------------------------------------------------------------------------------------------


def sat(users: float, rps: float, censored: str = "no") -> Saturation:
    return Saturation(
        users=users,
        throughput_rps=rps,
        broken=censored != "above_max",
        reason="",
        bracket=(int(users) - 5, int(users) + 5),
        censored=censored,  # type: ignore[arg-type]
    )


def test_replicates_median_and_log_t_interval() -> None:
    runs = [sat(100, 1000), sat(110, 1100), sat(90, 950)]
    c = combine_replicates(runs)
    assert c.users == 100 and c.throughput_rps == 1000
    logs = [math.log(x) for x in (1000, 1100, 950)]
    m = sum(logs) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in logs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    assert c.throughput_ci == pytest.approx((math.exp(m - half), math.exp(m + half)))
    assert c.users_ci is not None and c.users_ci[0] < 100 < c.users_ci[1]
    assert c.bracket == (85, 115)
    assert "median of 3 runs" in c.reason


def test_replicates_even_count_takes_the_middle() -> None:
    c = combine_replicates([sat(100, 1000), sat(120, 1200), sat(80, 800), sat(110, 1100)])
    assert c.users == pytest.approx(105.0)
    assert c.throughput_rps == pytest.approx(1050.0)


def test_replicates_with_a_censored_run() -> None:
    c = combine_replicates([sat(100, 1000), sat(600, 2000, "above_max"), sat(90, 900)])
    assert c.censored == "no" and c.users == 100
    assert c.users_ci is None  # a censored run leaves no honest interval
    assert "≥ 600" in c.reason
    c2 = combine_replicates(
        [sat(600, 2000, "above_max"), sat(600, 2100, "above_max"), sat(90, 900)]
    )
    assert c2.censored == "above_max"


def test_single_replicate_is_returned_as_is() -> None:
    one = sat(100, 1000)
    assert combine_replicates([one]) is one
    with pytest.raises(ValueError):
        combine_replicates([])


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------


def usl(n: float, lam: float, sigma: float, kappa: float) -> float:
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def test_usl_fit_recovers_known_parameters() -> None:
    rng = random.Random(3)
    lam, sigma, kappa = 50.0, 0.05, 0.002
    steps = [
        step(n, 100, usl(n, lam, sigma, kappa) * (1 + rng.gauss(0, 0.005)), mean_ms=50)
        for n in (1, 2, 4, 8, 12, 16, 24, 32, 48)
    ]
    d = diagnostics(steps, SLO)["usl"]
    assert d["sigma"] == pytest.approx(sigma, rel=0.25)
    assert d["kappa"] == pytest.approx(kappa, rel=0.25)
    assert d["lambda"] == pytest.approx(lam, rel=0.05)
    n_max = math.sqrt((1 - sigma) / kappa)
    assert d["n_max"] == pytest.approx(n_max, rel=0.15)
    assert d["n_max_ci"][0] <= n_max <= d["n_max_ci"][1]
    assert "retrograde" in d["meaning"]


def test_usl_needs_enough_levels() -> None:
    d = diagnostics([step(10, 100, 100), step(20, 120, 180)], SLO)
    assert d["usl"]["sigma"] is None
    assert "not enough levels" in d["usl"]["meaning"]
    assert "not enough levels" in d["kneedle"]["meaning"]


def test_kneedle_finds_a_known_knee() -> None:
    # throughput grows linearly to 40 users, then stays flat: the knee is at 40
    levels = (5, 10, 20, 30, 40, 60, 80, 120, 160)
    steps = [step(n, 100, 10.0 * min(n, 40)) for n in levels]
    k = diagnostics(steps, SLO)["kneedle"]
    assert k["users"] == 40
    assert "40 users" in k["meaning"]


def test_kneedle_when_already_past_the_knee() -> None:
    steps = [step(n, 100, 1000.0) for n in (50, 100, 200, 400)]
    k = diagnostics(steps, SLO)["kneedle"]
    assert k["users"] is None
    assert "at or below the first level" in k["meaning"]


def test_little_ratio_per_level() -> None:
    steps = [
        step(5, 100, 100.0, mean_ms=50.0),  # X·R = 100 × 0.05 = 5 of 5
        step(10, 100, 100.0, mean_ms=50.0),  # 5 of 10: generator-limited
    ]
    little = diagnostics(steps, SLO)["little"]
    assert [x["users"] for x in little] == [5, 10]
    assert little[0]["ratio"] == pytest.approx(1.0)
    assert little[0]["ok"] is True
    assert little[1]["ratio"] == pytest.approx(0.5)
    assert little[1]["ok"] is False
    assert "generator" in little[1]["meaning"]


def test_closed_system_knee() -> None:
    steps = [step(1, 20, 50.0, mean_ms=20.0), step(40, 400, 400.0, mean_ms=100.0)]
    knee = diagnostics(steps, SLO)["knee"]
    assert knee["users"] == pytest.approx(0.020 * 400.0)


def test_diagnostics_are_json_safe() -> None:
    steps = [
        StepStats(
            users=n,
            duration_s=10,
            requests=1000,
            failures=0,
            throughput_rps=min(n * 10.0, 300.0),
            p50_ms=10.0,
            p95_ms=20.0 + n,
            p99_ms=30.0 + n,
            error_rate=0.0,
            slo_ok=True,
            mean_ms=15.0 + n,
            generator=GeneratorHealth(
                cpu_percent=30, loop_lag_ms=0.1, little_ratio=1.0, limited=False
            ),
        )
        for n in (1, 2, 4, 8, 16, 32, 64)
    ]
    d = diagnostics(steps, SLO)
    text = json.dumps(d, allow_nan=False)
    assert set(d) == {"little", "usl", "kneedle", "knee"}
    for key in ("usl", "kneedle", "knee"):
        assert d[key]["meaning"]
    assert "meaning" in text
