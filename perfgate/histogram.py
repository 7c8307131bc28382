"""A log-bucketed, mergeable latency histogram with bounded memory.

Values are latencies in milliseconds. A value ``v`` goes to bucket

    index = floor(log(v / MIN_MS) / log(1 + RELATIVE_WIDTH))     for v > MIN_MS
    index = 0                                                    for v <= MIN_MS

with ``MIN_MS = 0.001`` (1 µs) and ``RELATIVE_WIDTH = 0.005``: bucket ``i >= 1`` covers
``[MIN_MS·g^i, MIN_MS·g^(i+1))`` with ``g = 1.005``, so every value inside a bucket is within 0.5 %
of every other. Counts are kept sparse (``{index: count}``); an hour-long latency needs index
≈ 4,400, so memory depends on the spread of the latencies, never on how many were recorded.
The exact sum, minimum and maximum are kept beside the buckets, so ``mean``/``min``/``max`` are
exact and percentiles are clamped to the observed range.

Histograms merge by adding counts (``merge``), which is how per-endpoint, per-worker and
per-process results combine into exact overall percentiles (never by averaging percentiles).
``to_dict``/``from_dict`` give a flat ``{str: int}`` form that is JSON-safe and matches
``StepStats.histogram``: bucket indexes as decimal strings, plus the reserved keys ``_sum_ns``,
``_min_ns``, ``_max_ns`` (nanoseconds, rounded once at serialisation) and ``_width_ppm``.

This module is stdlib-only: both the CLI process and the gevent-patched engine import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

MIN_MS = 0.001
RELATIVE_WIDTH = 0.005
_GROWTH = 1.0 + RELATIVE_WIDTH
_INV_LOG_GROWTH = 1.0 / math.log(_GROWTH)
_INV_MIN_MS = 1.0 / MIN_MS
_WIDTH_PPM = round(RELATIVE_WIDTH * 1_000_000)
_NS_PER_MS = 1_000_000
# Above this many samples the binomial ranks come from the normal approximation; below it the
# exact binomial distribution is summed (O(n) with lgamma, cheap at this size).
_EXACT_CI_MAX_N = 5_000


def bucket_index(value_ms: float) -> int:
    """Bucket of a latency in ms (0 for anything at or below ``MIN_MS``)."""
    if value_ms <= MIN_MS:
        return 0
    return int(math.log(value_ms * _INV_MIN_MS) * _INV_LOG_GROWTH)


def bucket_bounds(index: int) -> tuple[float, float]:
    """Lower and upper edge of a bucket in ms (bucket 0 is ``[0, MIN_MS·g)``)."""
    upper = MIN_MS * _GROWTH ** (index + 1)
    if index <= 0:
        return 0.0, upper
    return MIN_MS * _GROWTH**index, upper


class Histogram:
    """Latency histogram in ms: record, merge, percentiles with ≤ 0.5 % relative error."""

    __slots__ = ("_buckets", "_sorted", "count", "max", "min", "sum")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self._sorted: list[tuple[int, int]] | None = None
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    # -- recording (hot path: called once per request) ---------------------------------------

    def record(self, value_ms: float) -> None:
        """Add one latency in ms."""
        self.count += 1
        self.sum += value_ms
        if value_ms > self.max:
            self.max = value_ms
        if value_ms < self.min:
            self.min = value_ms
        index = int(math.log(value_ms * _INV_MIN_MS) * _INV_LOG_GROWTH) if value_ms > MIN_MS else 0
        buckets = self._buckets
        buckets[index] = buckets.get(index, 0) + 1
        self._sorted = None

    def record_many(self, values_ms: Iterable[float]) -> None:
        """Add several latencies in ms."""
        for value in values_ms:
            self.record(value)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s samples to this histogram (in place); returns self."""
        buckets = self._buckets
        for index, n in other._buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self._sorted = None
        return self

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        """A new histogram holding the samples of all ``histograms``."""
        out = cls()
        for h in histograms:
            out.merge(h)
        return out

    def copy(self) -> Histogram:
        """An independent copy."""
        return Histogram().merge(self)

    # -- statistics ---------------------------------------------------------------------------

    @property
    def mean(self) -> float | None:
        """Exact mean in ms, or None when empty."""
        return self.sum / self.count if self.count else None

    @property
    def buckets(self) -> Mapping[int, int]:
        """The sparse counts, ``{bucket index: count}`` (read-only view)."""
        return dict(self._buckets)

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        if not self.count:
            return "Histogram(count=0)"
        return (
            f"Histogram(count={self.count}, mean={self.sum / self.count:.3f} ms, "
            f"p50={self.percentile(50):.3f} ms, max={self.max:.3f} ms)"
        )

    def _cumulative(self) -> list[tuple[int, int]]:
        if self._sorted is None:
            self._sorted = sorted(self._buckets.items())
        return self._sorted

    def order_statistic(self, k: int) -> float:
        """Estimate of the k-th smallest sample (0-based) in ms, within 0.5 % of the true one.

        The sample lies in a known bucket; inside it the estimate spreads that bucket's samples
        evenly across its width, clamped to the exact observed minimum and maximum.
        """
        if not 0 <= k < self.count:
            raise IndexError(f"order statistic {k} out of range for {self.count} samples")
        if k == 0:
            return self.min
        if k == self.count - 1:
            return self.max
        seen = 0
        for index, n in self._cumulative():
            if k < seen + n:
                lo, hi = bucket_bounds(index)
                value = lo + (k - seen + 0.5) / n * (hi - lo)
                return min(max(value, self.min), self.max)
            seen += n
        return self.max  # unreachable: counts always sum to self.count

    def percentile(self, p: float) -> float | None:
        """The p-th percentile in ms (0 ≤ p ≤ 100), or None when empty.

        Same definition as numpy's default (linear interpolation between order statistics
        at rank ``p/100·(n−1)``); each order statistic is estimated within 0.5 %, so the result is
        within 0.5 % of the exact percentile of the recorded samples.
        """
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100, got {p}")
        if not self.count:
            return None
        rank = p / 100.0 * (self.count - 1)
        k = int(rank)
        frac = rank - k
        low = self.order_statistic(k)
        if frac == 0.0 or k + 1 >= self.count:
            return low
        return low + frac * (self.order_statistic(k + 1) - low)

    def percentile_ci(self, p: float, confidence: float = 0.95) -> tuple[float, float] | None:
        """Distribution-free confidence interval (ms) for the p-th percentile of the population.

        Uses order statistics: with n samples the number below the true q-quantile is
        Binomial(n, q), so ``[X_(l), X_(u)]`` covers it with probability ≥ ``confidence`` for the
        ranks chosen here (exact binomial for n ≤ 5,000, normal approximation above). Returns
        None when n is too small for a two-sided interval (e.g. fewer than 59 samples for p95).
        """
        if not 0.0 < p < 100.0:
            raise ValueError(f"percentile must be strictly between 0 and 100, got {p}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
        ranks = order_statistic_ranks(self.count, p / 100.0, confidence)
        if ranks is None:
            return None
        lo_rank, hi_rank = ranks
        return self.order_statistic(lo_rank), self.order_statistic(hi_rank)

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, int]:
        """Flat JSON-safe form (``StepStats.histogram``): see the module docstring."""
        out = {str(index): n for index, n in sorted(self._buckets.items())}
        out["_width_ppm"] = _WIDTH_PPM
        out["_sum_ns"] = round(self.sum * _NS_PER_MS)
        if self.count:
            out["_min_ns"] = round(self.min * _NS_PER_MS)
            out["_max_ns"] = round(self.max * _NS_PER_MS)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> Histogram:
        """Rebuild from :meth:`to_dict` output; raises ValueError on a foreign or broken form."""
        if not isinstance(data, Mapping):
            raise ValueError(f"histogram must be an object, got {type(data).__name__}")
        width = data.get("_width_ppm", _WIDTH_PPM)
        if width != _WIDTH_PPM:
            raise ValueError(
                f"histogram bucket width {width} ppm differs from this version's {_WIDTH_PPM} ppm"
            )
        h = cls()
        for key, n in data.items():
            if key.startswith("_"):
                continue
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"histogram bucket {key!r} has a bad count {n!r}")
            try:
                index = int(key)
            except ValueError as exc:
                raise ValueError(f"histogram key {key!r} is not a bucket index") from exc
            if n:
                h._buckets[index] = n
                h.count += n
        h.sum = data.get("_sum_ns", 0) / _NS_PER_MS
        if h.count:
            ordered = sorted(h._buckets)
            h.min = (
                data["_min_ns"] / _NS_PER_MS if "_min_ns" in data else bucket_bounds(ordered[0])[0]
            )
            h.max = (
                data["_max_ns"] / _NS_PER_MS if "_max_ns" in data else bucket_bounds(ordered[-1])[1]
            )
        return h


def order_statistic_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks ``(l, u)`` with P(X_(l) ≤ ξ_q ≤ X_(u)) ≥ confidence, or None if n is too small.

    ``ξ_q`` is the population q-quantile; the count of samples below it is Binomial(n, q). Each
    tail gets at most ``(1 − confidence)/2``.
    """
    if n <= 0:
        return None
    alpha_half = (1.0 - confidence) / 2.0
    if n > _EXACT_CI_MAX_N:
        z = _normal_quantile(1.0 - alpha_half)
        centre = n * q
        spread = z * math.sqrt(n * q * (1.0 - q))
        # The exact rules below with B ≈ Normal(nq, nq(1−q)) and a continuity correction:
        # 1-based l = floor(nq − z·sd + 0.5), u = ceil(nq + z·sd + 0.5).
        lo = math.floor(centre - spread + 0.5)
        hi = math.ceil(centre + spread + 0.5)
        if lo < 1 or hi > n:
            return None
        return lo - 1, hi - 1
    # Exact: cdf[j] = P(B ≤ j). Lower 1-based rank l: the largest with P(B ≤ l−1) ≤ α/2.
    # Upper 1-based rank u: the smallest with P(B ≥ u) ≤ α/2, i.e. P(B ≤ u−1) ≥ 1 − α/2.
    log_q, log_1q = math.log(q), math.log1p(-q)
    lg_n1 = math.lgamma(n + 1)
    cdf = 0.0
    lower: int | None = None
    upper: int | None = None
    for j in range(n + 1):
        cdf += math.exp(
            lg_n1 - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_q + (n - j) * log_1q
        )
        if cdf <= alpha_half:
            lower = j + 1  # P(B ≤ (j+1) − 1) ≤ α/2
        if upper is None and cdf >= 1.0 - alpha_half:
            upper = j + 1
            break
    if lower is None or upper is None or upper > n:
        return None
    return lower - 1, upper - 1


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - low:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
