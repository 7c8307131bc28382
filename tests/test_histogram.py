"""Tests for perfgate.histogram: percentiles against exact ones, merging, bounds, CIs."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from perfgate.histogram import (
    MIN_MS,
    Histogram,
    bucket_bounds,
    bucket_index,
    order_statistic_ranks,
)

PERCENTILES = (0, 1, 5, 25, 50, 75, 90, 95, 99, 99.9, 100)


def _samples(kind: str, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return list(rng.lognormal(mean=3.0, sigma=1.0, size=n))
    if kind == "uniform":
        return list(rng.uniform(0.2, 400.0, size=n))
    if kind == "exponential":
        return list(rng.exponential(25.0, size=n) + 0.05)
    if kind == "bimodal":
        return list(np.concatenate([rng.normal(5, 0.5, n // 2), rng.normal(250, 20, n - n // 2)]))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "exponential", "bimodal"])
@pytest.mark.parametrize("n", [7, 1000, 50_000])
def test_percentiles_within_half_a_percent_of_exact(kind: str, n: int) -> None:
    values = _samples(kind, n, seed=n)
    h = Histogram()
    h.record_many(values)
    exact = np.percentile(values, PERCENTILES)
    for p, want in zip(PERCENTILES, exact, strict=True):
        got = h.percentile(p)
        assert got is not None
        assert abs(got - want) <= 0.005 * want + 1e-12, (kind, n, p, got, want)


def test_count_mean_min_max_are_exact() -> None:
    values = _samples("lognormal", 10_000, seed=1)
    h = Histogram()
    h.record_many(values)
    assert h.count == len(values) == len(h)
    assert h.mean == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert h.max == max(values)
    assert h.min == min(values)


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.count == 0
    assert h.mean is None
    assert h.percentile(95) is None
    assert h.percentile_ci(95) is None
    assert Histogram.from_dict(h.to_dict()).count == 0


def test_tiny_and_zero_values_go_to_bucket_zero() -> None:
    assert bucket_index(0.0) == 0
    assert bucket_index(MIN_MS) == 0
    assert bucket_index(MIN_MS * 1.01) == 1
    h = Histogram()
    h.record_many([0.0, 0.0005, 0.001])
    assert h.buckets == {0: 3}
    assert h.percentile(50) == pytest.approx(0.0005, abs=0.001)


@pytest.mark.parametrize("value", [0.0011, 0.37, 1.0, 12.3456, 999.9, 123_456.0])
def test_bucket_bounds_contain_the_value_and_are_half_a_percent_wide(value: float) -> None:
    lo, hi = bucket_bounds(bucket_index(value))
    assert lo <= value < hi
    assert hi / lo == pytest.approx(1.005)


def test_merge_equals_recording_everything_in_one() -> None:
    a_values = _samples("exponential", 3000, seed=2)
    b_values = _samples("bimodal", 2000, seed=3)
    a, b, both = Histogram(), Histogram(), Histogram()
    a.record_many(a_values)
    b.record_many(b_values)
    both.record_many(a_values + b_values)
    merged = Histogram.merged([a, b])
    assert merged.buckets == both.buckets
    assert merged.count == 5000
    assert merged.sum == pytest.approx(both.sum, rel=1e-12)
    assert (merged.min, merged.max) == (both.min, both.max)
    for p in PERCENTILES:
        assert merged.percentile(p) == pytest.approx(both.percentile(p), rel=1e-12)
    # merge() into an existing histogram works in place and leaves the other untouched
    before = b.to_dict()
    a.merge(b)
    assert a.buckets == both.buckets
    assert b.to_dict() == before


def test_round_trip_through_json() -> None:
    h = Histogram()
    h.record_many(_samples("lognormal", 5000, seed=4))
    data = json.loads(json.dumps(h.to_dict()))
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in data.items())
    back = Histogram.from_dict(data)
    assert back.buckets == h.buckets
    assert back.count == h.count
    assert back.sum == pytest.approx(h.sum, abs=1e-6)
    assert back.max == pytest.approx(h.max, abs=1e-6)
    assert back.min == pytest.approx(h.min, abs=1e-6)
    for p in PERCENTILES:
        # min/max travel as whole nanoseconds, so the extremes may move by < 1 ns
        assert back.percentile(p) == pytest.approx(h.percentile(p), abs=1e-6)


def test_from_dict_rejects_foreign_or_broken_data() -> None:
    h = Histogram()
    h.record(3.0)
    good = h.to_dict()
    with pytest.raises(ValueError, match="width"):
        Histogram.from_dict({**good, "_width_ppm": 10_000})
    with pytest.raises(ValueError, match="bad count"):
        Histogram.from_dict({**good, "17": -1})
    with pytest.raises(ValueError, match="not a bucket index"):
        Histogram.from_dict({**good, "p95": 3})
    with pytest.raises(ValueError, match="object"):
        Histogram.from_dict([1, 2])  # type: ignore[arg-type]


def test_memory_does_not_grow_with_the_number_of_samples() -> None:
    rng = random.Random(5)
    h = Histogram()
    # 1–1000 ms spans log(1000)/log(1.005) ≈ 1385 buckets, however many samples arrive.
    bound = math.ceil(math.log(1000) / math.log(1.005)) + 1
    for _ in range(4):
        h.record_many(rng.uniform(1.0, 1000.0) for _ in range(100_000))
        assert len(h.buckets) <= bound
    assert h.count == 400_000
    assert len(h.to_dict()) <= bound + 4
    assert len(json.dumps(h.to_dict())) < 20 * bound


def test_percentile_argument_is_checked() -> None:
    h = Histogram()
    h.record(1.0)
    with pytest.raises(ValueError):
        h.percentile(101)
    with pytest.raises(ValueError):
        h.percentile_ci(100)


def test_ci_needs_enough_samples() -> None:
    # For p95 at 95 % the upper rank needs P(all n below ξ) = 0.95^n ≤ 0.025: n ≥ 72.
    assert order_statistic_ranks(50, 0.95) is None
    assert order_statistic_ranks(100, 0.95) is not None
    ranks = order_statistic_ranks(1000, 0.5)
    assert ranks is not None
    lo, hi = ranks
    assert lo < 499 < hi


def test_normal_ranks_agree_with_exact_ranks_at_the_switch() -> None:
    # The exact binomial path is used up to n = 5000, the normal approximation above.
    exact = order_statistic_ranks(5000, 0.95)
    approx = order_statistic_ranks(5001, 0.95)
    assert exact is not None and approx is not None
    assert abs(exact[0] - approx[0]) <= 2
    assert abs(exact[1] - approx[1]) <= 2


@pytest.mark.parametrize(("n", "trials"), [(300, 300), (8000, 120)])
def test_p95_ci_covers_the_true_quantile(n: int, trials: int) -> None:
    rng = np.random.default_rng(n)
    scale = 20.0
    true_p95 = -scale * math.log(0.05)  # exponential distribution
    covered = 0
    widths = []
    for _ in range(trials):
        h = Histogram()
        h.record_many(rng.exponential(scale, size=n))
        ci = h.percentile_ci(95)
        assert ci is not None
        lo, hi = ci
        assert lo <= h.percentile(95) <= hi  # type: ignore[operator]
        covered += lo <= true_p95 <= hi
        widths.append(hi - lo)
    coverage = covered / trials
    assert 0.90 <= coverage <= 1.0, coverage
    # and it is not trivially wide: narrower with more samples
    assert float(np.median(widths)) < 0.5 * true_p95
