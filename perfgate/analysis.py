"""Analysis: the saturation point (the SLO boundary) with its uncertainty, and knee diagnostics.

The saturation point of one run is where the latency SLO stops holding: linearly interpolated
between the highest passing load level below the first failing level and that failing level, in
users and in throughput. Past the knee of a closed system p95 grows linearly with users
(``R = N / X``), so linear interpolation in N is the physically right one there. Levels measured
more than once (adaptive search, confirmation) are pooled: their raw histograms are merged when
the steps carry them, otherwise their percentiles are request-weighted.

Uncertainty is reported in layers: the bracket (last passing, first failing level), the interval
obtained by pushing each bracket level's p95 confidence interval through the interpolation, and,
across replicates (:func:`combine_replicates`), a t-interval on the log scale.

:func:`diagnostics` adds Little's-law checks, a Universal Scalability Law fit and a Kneedle
knee: reported with a one-line meaning each, never gated on.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

from perfgate import fmt
from perfgate.histogram import Histogram
from perfgate.models import EventStats, Saturation, Slo, StepStats
from perfgate.steps import event_slo_check, event_stats

__all__ = [
    "Degradation",
    "Level",
    "combine_replicates",
    "degraded_first",
    "diagnostics",
    "pool_levels",
    "saturation",
]

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}
LITTLE_MIN_RATIO = 0.9  # N_eff / N below this: the generator did not keep N requests in flight


@dataclass(**_FROZEN)
class Level:
    """All measurements of one users level, pooled."""

    users: int
    steps: int  # how many measurements were pooled
    requests: int
    failures: int
    duration_s: float
    throughput_rps: float
    p95_ms: float | None
    p95_ci_ms: tuple[float, float] | None
    mean_ms: float | None
    error_rate: float
    slo_ok: bool
    generator_limited: bool
    phases: tuple[str, ...]
    events: EventStats | None = None  # pooled awaited events (users.streams)
    event_reason: str = ""  # why the events break the event SLO ("" when they do not)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


def _merged_histogram(steps: Sequence[StepStats]) -> Any | None:
    """The steps' raw histograms merged, or None when any step lacks one."""
    if not steps or any(not s.histogram for s in steps):
        return None
    try:
        from perfgate.histogram import Histogram
    except ImportError:  # analysis re-run without the load package: fall back to weighting
        return None
    try:
        return Histogram.merged(Histogram.from_dict(s.histogram) for s in steps)
    except (ValueError, KeyError, TypeError):
        return None


def _pool(users: int, steps: Sequence[StepStats], slo: Slo) -> Level:
    requests = sum(s.requests for s in steps)
    failures = sum(s.failures for s in steps)
    duration = sum(s.duration_s for s in steps)
    throughput = (
        requests / duration if duration > 0 else statistics.fmean(s.throughput_rps for s in steps)
    )
    error_rate = failures / requests if requests else max(s.error_rate for s in steps)
    means = [(s.mean_ms, s.requests) for s in steps if s.mean_ms is not None]
    mean_ms = (
        sum(m * max(n, 1) for m, n in means) / sum(max(n, 1) for _, n in means) if means else None
    )
    p95: float | None
    ci: tuple[float, float] | None
    if len(steps) == 1:
        p95, ci = steps[0].p95_ms, steps[0].p95_ci_ms
    else:
        hist = _merged_histogram(steps)
        if hist is not None and hist.count:
            p95, ci = hist.percentile(95), hist.percentile_ci(95)
        else:
            p95, ci = _weighted_p95(steps)
    ok = requests > 0 and p95 is not None and p95 <= slo.p95_ms and error_rate <= slo.error_rate
    events = _pool_events(steps)
    event_reason = event_slo_check(events, slo)
    return Level(
        users=users,
        steps=len(steps),
        requests=requests,
        failures=failures,
        duration_s=duration,
        throughput_rps=throughput,
        p95_ms=p95,
        p95_ci_ms=ci,
        mean_ms=mean_ms,
        error_rate=error_rate,
        slo_ok=bool(ok) and not event_reason,
        generator_limited=any(s.generator is not None and s.generator.limited for s in steps),
        phases=tuple(s.phase for s in steps),
        events=events,
        event_reason=event_reason,
    )


def _pool_events(steps: Sequence[StepStats]) -> EventStats | None:
    """The awaited events of one level's steps, pooled (None when no step streamed events)."""
    have = [s.events for s in steps if s.events is not None]
    if not have:
        return None
    if len(have) == 1:
        return have[0]
    try:
        hist = Histogram.merged(Histogram.from_dict(e.histogram) for e in have)
    except (ValueError, KeyError, TypeError):
        return have[-1]
    lags = [e.read_lag_p95_ms for e in have if e.read_lag_p95_ms is not None]
    return event_stats(
        hist,
        lost=sum(e.lost for e in have),
        stream_errors=sum(e.stream_errors for e in have),
        backlog_mean=statistics.fmean(e.backlog_mean for e in have),
        read_lag_p95_ms=max(lags) if lags else None,
    )


def _weighted_p95(steps: Sequence[StepStats]) -> tuple[float | None, tuple[float, float] | None]:
    """Request-weighted p95 and a CI whose half-widths combine like independent estimates."""
    have = [
        (float(max(s.requests, 1)), s.p95_ms, s.p95_ci_ms) for s in steps if s.p95_ms is not None
    ]
    if not have:
        return None, None
    total = sum(w for w, _, _ in have)
    p95 = sum(w * p for w, p, _ in have) / total
    cis = [(w / total, p, ci) for w, p, ci in have if ci is not None]
    if len(cis) < len(have):
        return p95, None
    lo = math.sqrt(sum((f * (p - ci[0])) ** 2 for f, p, ci in cis))
    hi = math.sqrt(sum((f * (ci[1] - p)) ** 2 for f, p, ci in cis))
    return p95, (p95 - lo, p95 + hi)


def pool_levels(steps: Sequence[StepStats], slo: Slo) -> tuple[Level, ...]:
    """One pooled :class:`Level` per distinct users count, ascending."""
    by_users: dict[int, list[StepStats]] = {}
    for s in steps:
        by_users.setdefault(int(s.users), []).append(s)
    return tuple(_pool(u, by_users[u], slo) for u in sorted(by_users))


# ---------------------------------------------------------------------------------------------
# The saturation point
# ---------------------------------------------------------------------------------------------


def _request_ok(level: Level, slo: Slo) -> bool:
    """Whether a level meets the request SLO (p95 and error rate), whatever its events do."""
    p95 = level.p95_ms
    ok = level.requests > 0 and p95 is not None and p95 <= slo.p95_ms
    return ok and level.error_rate <= slo.error_rate


def _fail_reason(level: Level, slo: Slo) -> str:
    if level.event_reason and _request_ok(level, slo):
        return f"{level.event_reason} at {level.users} users"
    if level.requests == 0 or level.p95_ms is None:
        return f"no successful responses at {level.users} users"
    if level.p95_ms > slo.p95_ms:
        return f"p95 {level.p95_ms:.0f} ms > SLO {slo.p95_ms:.0f} ms at {level.users} users"
    return f"error rate {level.error_rate:.1%} > SLO {slo.error_rate:.1%} at {level.users} users"


def _wilson(failures: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = failures / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _crossing(lo_value: float, hi_value: float, limit: float) -> float | None:
    """Fraction of the way from lo to hi where a linear metric reaches ``limit``."""
    if hi_value <= limit or hi_value == lo_value:
        return None
    return (limit - lo_value) / (hi_value - lo_value)


# How far an interval end may extrapolate beyond the bracket, in bracket widths: a p95 CI that
# reaches past the SLO at the passing level moves the crossing below it, but only a line's worth.
_EXTRAPOLATE = 1.0


def saturation(steps: Sequence[StepStats], slo: Slo, *, max_users: int | None = None) -> Saturation:
    """The SLO boundary of one run (users and req/s), its bracket and interval, and why."""
    levels = pool_levels(steps, slo)
    if not levels:
        return Saturation(
            users=None, throughput_rps=None, broken=False, reason="no load levels were measured"
        )
    first_fail = next((lv for lv in levels if not lv.slo_ok), None)
    if first_fail is None:
        return _never_broke(levels[-1], slo, max_users)
    fail_reason = _fail_reason(first_fail, slo)
    by_event = bool(first_fail.event_reason) and _request_ok(first_fail, slo)
    broken_by: Literal["request", "event"] = "event" if by_event else "request"
    below = [lv for lv in levels if lv.users < first_fail.users and lv.slo_ok]
    if not below:
        return Saturation(
            users=float(first_fail.users),
            throughput_rps=first_fail.throughput_rps,
            broken=True,
            reason=(
                f"{fail_reason}: the SLO broke at the first level; "
                f"saturation < {first_fail.users} users"
            ),
            bracket=(0, first_fail.users),
            users_ci=(0.0, float(first_fail.users)),
            throughput_ci=(0.0, first_fail.throughput_rps),
            censored="below_start",
            broken_by=broken_by,
        )
    lo, hi = below[-1], first_fail
    f, f_lo, f_hi = _interpolation(lo, hi, slo)
    width = hi.users - lo.users
    x_slope = hi.throughput_rps - lo.throughput_rps

    def users_at(frac: float) -> float:
        return lo.users + frac * width

    def rps_at(frac: float) -> float:
        return max(0.0, lo.throughput_rps + frac * x_slope)

    users = users_at(f)
    rps = rps_at(f)
    ends_x = (rps_at(f_lo), rps_at(f_hi))
    skipped = [lv.users for lv in levels if lv.users > hi.users and lv.slo_ok]
    note = (
        f"; the SLO held again at {', '.join(map(str, skipped))} users (noise or hysteresis)"
        if skipped
        else ""
    )
    pooled = " (pooled re-measurements)" if lo.steps > 1 or hi.steps > 1 else ""
    return Saturation(
        users=users,
        throughput_rps=rps,
        broken=True,
        reason=(
            f"{fail_reason}; SLO boundary ≈ {users:.0f} users at {rps:.0f} req/s, "
            f"between {lo.users} and {hi.users} users{pooled}{note}"
        ),
        bracket=(lo.users, hi.users),
        users_ci=(max(0.0, users_at(f_lo)), users_at(f_hi)),
        throughput_ci=(min(ends_x), max(ends_x)),
        censored="no",
        broken_by=broken_by,
    )


def _never_broke(top: Level, slo: Slo, max_users: int | None) -> Saturation:
    """The SLO held at every level: saturation is at least the top one (censored above)."""
    limit = max_users if max_users is not None else top.users
    why = (
        f"max_users ({limit})"
        if top.users >= limit
        else f"{top.users} users (the ramp stopped below max_users {limit})"
    )
    p95 = f"p95 {top.p95_ms:.0f} ms" if top.p95_ms is not None else "p95 n/a"
    held = f"{p95} ≤ SLO {slo.p95_ms:.0f} ms"
    ev = top.events
    if ev is not None and ev.p95_ms is not None and slo.event_p95_ms is not None:
        held += f", event p95 {ev.p95_ms:.0f} ms ≤ SLO {slo.event_p95_ms:.0f} ms"
    return Saturation(
        users=float(top.users),
        throughput_rps=top.throughput_rps,
        broken=False,
        reason=f"SLO held up to {why}: {held} at {top.users} users; saturation ≥ {top.users} users",
        bracket=None,
        censored="above_max",
    )


def _interpolation(lo: Level, hi: Level, slo: Slo) -> tuple[float, float, float]:
    """Crossing fraction in the bracket, and its lower/upper ends from the CIs at both levels."""
    candidates: list[tuple[float, float, float]] = []
    request = _p95_crossing(lo.p95_ms, lo.p95_ci_ms, hi.p95_ms, hi.p95_ci_ms, slo.p95_ms)
    if request is not None:
        candidates.append(request)
    candidates.extend(_event_crossings(lo, hi, slo))
    if hi.error_rate > slo.error_rate or hi.requests == 0:
        f = _crossing(lo.error_rate, hi.error_rate, slo.error_rate)
        if f is None:
            f = 1.0
        e_lo = _wilson(lo.failures, lo.requests)
        e_hi = _wilson(hi.failures, hi.requests)
        early = _line_crossing(e_lo[1], e_hi[1], slo.error_rate, default=-_EXTRAPOLATE)
        late = _line_crossing(e_lo[0], e_hi[0], slo.error_rate, default=1 + _EXTRAPOLATE)
        candidates.append((f, early, late))
    if not candidates:  # the failing level failed for want of responses
        return 1.0, 0.0, 1.0
    f, early, late = min(candidates)
    f = min(max(f, 0.0), 1.0)
    early = min(max(early, -_EXTRAPOLATE), f)
    late = max(min(late, 1 + _EXTRAPOLATE), f)
    return f, early, late


def _p95_crossing(
    lo_p95: float | None,
    lo_ci: tuple[float, float] | None,
    hi_p95: float | None,
    hi_ci: tuple[float, float] | None,
    limit: float,
) -> tuple[float, float, float] | None:
    """Where a p95 crosses ``limit`` in the bracket, with the ends its CIs allow."""
    if hi_p95 is None or lo_p95 is None or hi_p95 <= limit:
        return None
    f = _crossing(lo_p95, hi_p95, limit)
    if f is None:
        return None
    if lo_ci is None or hi_ci is None:
        return f, 0.0, 1.0  # no CIs: all we know is the bracket
    # higher latencies → earlier crossing; lower latencies → later crossing
    early = _line_crossing(lo_ci[1], hi_ci[1], limit, default=-_EXTRAPOLATE)
    late = _line_crossing(lo_ci[0], hi_ci[0], limit, default=1 + _EXTRAPOLATE)
    return f, early, late


def _event_crossings(lo: Level, hi: Level, slo: Slo) -> list[tuple[float, float, float]]:
    """Crossings of the event SLO (p95 and loss rate) in the bracket, when it breaks there."""
    le, he = lo.events, hi.events
    if le is None or he is None or not hi.event_reason:
        return []
    out: list[tuple[float, float, float]] = []
    if slo.event_p95_ms is not None:
        got = _p95_crossing(le.p95_ms, le.p95_ci_ms, he.p95_ms, he.p95_ci_ms, slo.event_p95_ms)
        out.extend([got] if got is not None else [])
    limit = slo.event_loss_rate
    if limit is not None and he.loss_rate > limit:
        f = _crossing(le.loss_rate, he.loss_rate, limit)
        w_lo, w_hi = _wilson(le.lost, le.expected), _wilson(he.lost, he.expected)
        early = _line_crossing(w_lo[1], w_hi[1], limit, default=-_EXTRAPOLATE)
        late = _line_crossing(w_lo[0], w_hi[0], limit, default=1 + _EXTRAPOLATE)
        out.append((1.0 if f is None else f, early, late))
    return out or [(1.0, 0.0, 1.0)]


def _line_crossing(lo_value: float, hi_value: float, limit: float, *, default: float) -> float:
    """Where the line through (0, lo) and (1, hi) reaches ``limit`` (may extrapolate)."""
    if hi_value <= lo_value:
        return default
    return (limit - lo_value) / (hi_value - lo_value)


# ---------------------------------------------------------------------------------------------
# Replicates
# ---------------------------------------------------------------------------------------------


def _t_interval_log(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float] | None:
    logs = [math.log(v) for v in values if v is not None and v > 0]
    if len(logs) < 2:
        return None
    m = statistics.fmean(logs)
    sd = statistics.stdev(logs)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(logs) - 1)) * sd / math.sqrt(len(logs))
    return math.exp(m - half), math.exp(m + half)


def combine_replicates(runs: Sequence[Saturation]) -> Saturation:
    """Median of replicate runs, with a 95 % t-interval on the log scale across them.

    Censored runs count as +∞ (never broke) or 0 (broke at the first level) for the median; the
    interval uses the runs that found the boundary and is omitted when any run was censored.
    """
    if not runs:
        raise ValueError("combine_replicates needs at least one run")
    if len(runs) == 1:
        return runs[0]
    measured = [r for r in runs if r.users is not None]
    if not measured:
        return Saturation(
            users=None, throughput_rps=None, broken=False, reason="no replicate measured a level"
        )

    def key(r: Saturation) -> float:
        if r.censored == "above_max":
            return math.inf
        if r.censored == "below_start":
            return -math.inf
        return float(r.throughput_rps or 0.0)

    ordered = sorted(measured, key=key)
    k = len(ordered)
    mid = ordered[(k - 1) // 2] if k % 2 else None
    if mid is None:
        a, b = ordered[k // 2 - 1], ordered[k // 2]
        if a.censored == b.censored == "no":
            users = statistics.fmean([a.users or 0.0, b.users or 0.0])
            rps = statistics.fmean([a.throughput_rps or 0.0, b.throughput_rps or 0.0])
            mid = Saturation(
                users=users,
                throughput_rps=rps,
                broken=True,
                reason="",
                bracket=a.bracket,
                censored="no",
            )
        else:  # the median falls on a censored run: report the conservative neighbour
            mid = a if a.censored != "no" else b
    broken_runs = [r for r in measured if r.censored == "no"]
    censored = [r for r in measured if r.censored != "no"]
    users_ci = throughput_ci = None
    if not censored:
        users_ci = _t_interval_log([r.users for r in broken_runs])  # type: ignore[misc]
        throughput_ci = _t_interval_log([r.throughput_rps for r in broken_runs])  # type: ignore[misc]
    listing = ", ".join(_short(r) for r in runs)
    if mid.censored == "no":
        reason = (
            f"median of {len(runs)} runs: SLO boundary ≈ {mid.users:.0f} users at "
            f"{mid.throughput_rps:.0f} req/s (runs: {listing})"
        )
    else:
        reason = f"median of {len(runs)} runs is censored: {mid.reason} (runs: {listing})"
    brackets = [r.bracket for r in broken_runs if r.bracket is not None]
    bracket = (
        (min(b[0] for b in brackets), max(b[1] for b in brackets)) if brackets else mid.bracket
    )
    return Saturation(
        users=mid.users,
        throughput_rps=mid.throughput_rps,
        broken=mid.broken if mid.censored != "no" else True,
        reason=reason,
        bracket=bracket,
        users_ci=users_ci,
        throughput_ci=throughput_ci,
        censored=mid.censored,
    )


def _short(r: Saturation) -> str:
    return fmt.saturation_users(r)


# ---------------------------------------------------------------------------------------------
# Diagnostics (reported, never gated)
# ---------------------------------------------------------------------------------------------


def diagnostics(steps: Sequence[StepStats], slo: Slo) -> dict[str, Any]:
    """Little's-law check per level, USL fit, Kneedle and closed-system knees (JSON-safe)."""
    levels = pool_levels(steps, slo)
    return {
        "little": _little(levels),
        "usl": _usl(levels),
        "kneedle": _kneedle(levels),
        "knee": _knee(levels),
    }


def _finite(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def _little(levels: Sequence[Level]) -> list[dict[str, Any]]:
    out = []
    for lv in levels:
        if lv.mean_ms is None or lv.users <= 0:
            continue
        n_eff = lv.throughput_rps * lv.mean_ms / 1000.0
        ratio = n_eff / lv.users
        ok = ratio >= LITTLE_MIN_RATIO
        out.append(
            {
                "users": lv.users,
                "n_eff": _finite(n_eff, 2),
                "ratio": _finite(ratio, 3),
                "ok": ok,
                "meaning": (
                    f"X·R = {n_eff:.1f} of {lv.users} users in flight: the generator kept the load"
                    if ok
                    else f"X·R = {n_eff:.1f} of {lv.users} users in flight: the generator, not "
                    "the service, limited this level"
                ),
            }
        )
    return out


def _usl_model(n: np.ndarray, lam: float, sigma: float, kappa: float) -> np.ndarray:
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


USL_MIN_LEVELS = 4


def _usl(levels: Sequence[Level]) -> dict[str, Any]:
    pts = [(lv.users, lv.throughput_rps) for lv in levels if lv.throughput_rps > 0 and lv.users > 0]
    if len(pts) < USL_MIN_LEVELS:
        return {
            "sigma": None,
            "kappa": None,
            "lambda": None,
            "n_max": None,
            "meaning": f"not enough levels for a USL fit ({len(pts)} < {USL_MIN_LEVELS})",
        }
    n = np.array([p[0] for p in pts], dtype=float)
    x = np.array([p[1] for p in pts], dtype=float)
    lam0 = float(np.max(x / n))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning when the covariance is singular
            params, cov = optimize.curve_fit(
                _usl_model,
                n,
                x,
                p0=(lam0, 0.05, 1e-4),
                bounds=([0.0, 0.0, 0.0], [np.inf, 1.0, 1.0]),
                maxfev=5000,
            )
    except (RuntimeError, ValueError) as exc:
        return {
            "sigma": None,
            "kappa": None,
            "lambda": None,
            "n_max": None,
            "meaning": f"USL fit did not converge ({exc.__class__.__name__})",
        }
    lam, sigma, kappa = (float(v) for v in params)
    se = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else None
    n_max = math.sqrt((1 - sigma) / kappa) if kappa > 1e-12 else math.inf
    n_max_ci: list[float | None] = [None, None]
    if se is not None:
        rng = np.random.default_rng(0)  # fixed: the report must not change between renders
        try:
            draws = rng.multivariate_normal(params, cov, size=2000, check_valid="ignore")
        except (ValueError, np.linalg.LinAlgError):
            draws = None
        if draws is not None:
            s_d = np.clip(draws[:, 1], 0, 1)
            k_d = np.clip(draws[:, 2], 0, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                nm = np.where(k_d > 1e-12, np.sqrt((1 - s_d) / k_d), np.inf)
            ordered = np.sort(nm)  # +inf (no peak) sorts last; a quantile there means "none"
            lo_q = float(ordered[int(0.025 * (len(ordered) - 1))])
            hi_q = float(ordered[math.ceil(0.975 * (len(ordered) - 1))])
            n_max_ci = [_finite(lo_q, 1), _finite(hi_q, 1)]

    def ci(i: int, value: float) -> list[float | None]:
        if se is None or not math.isfinite(se[i]):
            return [None, None]
        return [_finite(max(0.0, value - 1.96 * se[i]), 6), _finite(value + 1.96 * se[i], 6)]

    if math.isfinite(n_max):
        shape = f"throughput peaks near N_max ≈ {n_max:.0f} users and falls beyond it (retrograde)"
    else:
        roof = lam / max(sigma, 1e-9)
        shape = f"no retrograde peak: throughput levels off towards λ/σ ≈ {roof:.0f} req/s"
    return {
        "sigma": _finite(sigma, 6),
        "kappa": _finite(kappa, 8),
        "lambda": _finite(lam, 4),
        "n_max": _finite(n_max, 1),
        "sigma_ci": ci(1, sigma),
        "kappa_ci": ci(2, kappa),
        "lambda_ci": ci(0, lam),
        "n_max_ci": n_max_ci,
        "levels": len(pts),
        "meaning": (
            f"contention σ = {sigma:.3f} ({sigma:.0%} of the work serialised), coherency "
            f"κ = {kappa:.2g}: {shape}"
        ),
    }


def _kneedle(levels: Sequence[Level]) -> dict[str, Any]:
    pts = [(lv.users, lv.throughput_rps) for lv in levels if lv.users > 0]
    if len(pts) < 3:
        return {"users": None, "meaning": f"not enough levels for Kneedle ({len(pts)} < 3)"}
    n = np.array([p[0] for p in pts], dtype=float)
    x = np.array([p[1] for p in pts], dtype=float)
    if x[0] >= 0.9 * x.max():
        return {
            "users": None,
            "meaning": f"throughput was already ≥ 90 % of its peak at {int(n[0])} users: "
            "the knee lies at or below the first level",
        }
    # Satopää et al.: normalise to the unit square; the knee of a concave increasing curve is the
    # point farthest above the diagonal. Geometric spacing is evened out by working in log N.
    ln = np.log(n)
    xn = (ln - ln[0]) / (ln[-1] - ln[0]) if ln[-1] > ln[0] else ln * 0
    yn = (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else x * 0
    diff = yn - xn
    i = int(np.argmax(diff))
    if diff[i] <= 0.05 or i == len(n) - 1:
        return {
            "users": None,
            "meaning": "no knee: throughput still grows across the measured levels",
        }
    return {
        "users": int(n[i]),
        "difference": _finite(float(diff[i]), 3),
        "meaning": (
            f"throughput stops growing in proportion to users near {int(n[i])} users (Kneedle)"
        ),
    }


def _knee(levels: Sequence[Level]) -> dict[str, Any]:
    with_mean = [(lv.mean_ms, lv.throughput_rps) for lv in levels if lv.mean_ms and lv.requests]
    if not with_mean:
        return {"users": None, "meaning": "not enough levels with latencies"}
    r0_ms = min(m for m, _ in with_mean)
    x_max = max(x for _, x in with_mean)
    n_star = r0_ms / 1000.0 * x_max
    return {
        "users": _finite(n_star, 1),
        "r0_ms": _finite(r0_ms, 2),
        "x_max_rps": _finite(x_max, 2),
        "meaning": (
            f"queueing starts near N* = R0 × X_max = {r0_ms:.0f} ms × {x_max:.0f} req/s ≈ "
            f"{n_star:.0f} users (closed system, zero think time)"
        ),
    }


# ---------------------------------------------------------------------------------------------
# Which request type degraded first (reported, never gated)
# ---------------------------------------------------------------------------------------------


DISTINCT_GROWTH = 1.15  # the top growth must beat the runner-up by 15 % to be named


@dataclass(**_FROZEN)
class Degradation:
    """The request type that degraded first, and why it was picked (JSON-safe via to_jsonable)."""

    method: str  # "" with name "": no single request type stands out
    name: str
    users: int | None  # first load level whose p95 crossed the SLO (None: none crossed)
    growth: float | None  # p95 at the highest level / p95 at the lowest level
    text: str


def _label(method: str, name: str) -> str:
    """``GET order book``; a name that already starts with its method (the default) once."""
    return name if name.startswith(f"{method} ") else f"{method} {name}"


_Series = dict[tuple[str, str], list[tuple[int, float]]]


def degraded_first(steps: Sequence[StepStats], slo_p95_ms: float) -> Degradation | None:
    """First endpoint whose p95 crosses the SLO; else the one whose p95 grew most.

    Points engineers at the request type to profile first. None without per-endpoint data.
    """
    series: _Series = {}
    for step in sorted(steps, key=lambda s: (s.users, s.index)):
        for ep in step.endpoints:
            if ep.p95_ms is not None and ep.requests > 0:
                series.setdefault((ep.method, ep.name), []).append((step.users, ep.p95_ms))
    if not series:
        return None
    return _first_crossing(series, slo_p95_ms) or _largest_growth(series)


def _first_crossing(series: _Series, slo_p95_ms: float) -> Degradation | None:
    crossings = []
    for key, points in series.items():
        for users, p95 in points:
            if p95 > slo_p95_ms:
                crossings.append((users, -p95 / slo_p95_ms, key, p95))
                break
    if not crossings:
        return None
    users, _, (method, name), p95 = min(crossings)
    others = sum(1 for c in crossings if c[0] == users) - 1
    tie = f" (with {others} other request type(s) at the same level)" if others else ""
    return Degradation(
        method=method,
        name=name,
        users=users,
        growth=None,
        text=(
            f"{_label(method, name)} degraded first: p95 {fmt.ms(p95)} ms > SLO "
            f"{fmt.ms(slo_p95_ms)} ms at {users} users{tie}"
        ),
    )


def _largest_growth(series: _Series) -> Degradation | None:
    growths = []
    for key, points in series.items():
        first, last = points[0], points[-1]
        if len(points) >= 2 and first[1] > 0:
            growths.append((last[1] / first[1], key, first, last))
    if not growths:
        return None
    growths.sort(reverse=True)
    growth, (method, name), first, last = growths[0]
    if len(growths) > 1 and growth < growths[1][0] * DISTINCT_GROWTH:
        # Every request type slowed alike: naming one would point engineers at noise.
        return Degradation(
            method="",
            name="",
            users=None,
            growth=growth,
            text=(
                f"No request type's p95 crossed the SLO; p95 grew alike for all of them "
                f"(up to ×{growth:.1f} from {first[0]} to {last[0]} users)"
            ),
        )
    return Degradation(
        method=method,
        name=name,
        users=None,
        growth=growth,
        text=(
            f"No request type's p95 crossed the SLO; {_label(method, name)} grew most: p95 "
            f"{fmt.ms(first[1])} → {fmt.ms(last[1])} ms (×{growth:.1f}) from {first[0]} to "
            f"{last[0]} users"
        ),
    )
