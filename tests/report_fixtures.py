"""Realistic RunResult fixtures for the report tests (a closed queue with a known knee)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from perfgate.analysis import degraded_first
from perfgate.models import (
    BaselineRef,
    ChangePoint,
    EndpointStats,
    Fingerprint,
    GateSpec,
    GeneratorHealth,
    History,
    HistoryRow,
    RuleResult,
    RunResult,
    Saturation,
    Slo,
    StepStats,
    TimelinePoint,
    to_jsonable,
)

ENDPOINTS = (
    ("GET", "order book", 5, 1.35),
    ("POST", "place order", 3, 1.0),
    ("DELETE", "cancel order", 1, 0.85),
    ("GET", "balances", 2, 0.6),
)
STEP_SECONDS = 10.0
SETTLE_SECONDS = 2.5


def _histogram(rng: random.Random, center_ms: float, count: int) -> dict[str, int]:
    """A log-bucketed (1 %) latency histogram around ``center_ms``, keyed by bucket index."""
    buckets: dict[str, int] = {}
    samples = min(count, 3000)
    scale = count / samples
    for _ in range(samples):
        ms = center_ms * math.exp(rng.gauss(0.0, 0.28))
        key = str(round(math.log(max(ms, 0.01)) / math.log(1.01)))
        buckets[key] = buckets.get(key, 0) + 1
    return {k: round(v * scale) for k, v in sorted(buckets.items(), key=lambda kv: int(kv[0]))}


def make_steps(
    *,
    slots: int,
    service_ms: float,
    users: tuple[int, ...],
    slo: Slo,
    seed: int = 1,
    endpoints: tuple[tuple[str, str, int, float], ...] = ENDPOINTS,
    with_histograms: bool = True,
    limited_above_users: int | None = None,
    error_above_users: int | None = None,
) -> tuple[tuple[StepStats, ...], tuple[TimelinePoint, ...]]:
    """Steps and a 1-s timeline of a closed queue: latency N·S/K past the knee N = K."""
    rng = random.Random(seed)
    steps = []
    timeline = []
    weight_total = sum(e[2] for e in endpoints)
    for i, n in enumerate(users):
        mean_ms = max(service_ms, n * service_ms / slots) * (1 + rng.uniform(-0.02, 0.02))
        rps = n / mean_ms * 1000
        p50, p95, p99 = mean_ms * 0.95, mean_ms * 1.3, mean_ms * 1.65
        duration = STEP_SECONDS - SETTLE_SECONDS
        requests = round(rps * duration)
        error_rate = 0.0
        if error_above_users is not None and n > error_above_users:
            error_rate = min(0.2, 0.004 * (n - error_above_users))
        failures = round(requests * error_rate)
        eps = []
        for method, name, weight, factor in endpoints:
            share = weight / weight_total
            ep_requests = round(requests * share)
            eps.append(
                EndpointStats(
                    name=name,
                    method=method,
                    requests=ep_requests,
                    failures=round(ep_requests * error_rate),
                    throughput_rps=rps * share,
                    p50_ms=p50 * factor,
                    p95_ms=p95 * factor,
                    p99_ms=p99 * factor,
                    mean_ms=mean_ms * factor,
                    error_rate=error_rate,
                )
            )
        slo_ok = p95 <= slo.p95_ms and error_rate <= slo.error_rate
        reason = ""
        if p95 > slo.p95_ms:
            reason = f"p95 {p95:.0f} ms > SLO {slo.p95_ms:g} ms"
        elif error_rate > slo.error_rate:
            reason = f"errors {error_rate * 100:.1f} % > SLO {slo.error_rate * 100:g} %"
        cpu = 15 + n * 0.35
        limited = limited_above_users is not None and n > limited_above_users
        start = i * STEP_SECONDS + SETTLE_SECONDS
        steps.append(
            StepStats(
                users=n,
                duration_s=duration,
                requests=requests,
                failures=failures,
                throughput_rps=rps,
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
                error_rate=error_rate,
                slo_ok=slo_ok,
                index=i,
                started_s=start,
                mean_ms=mean_ms,
                max_ms=mean_ms * 2.4,
                p95_ci_ms=(p95 * 0.97, p95 * 1.03),
                phase="ramp",
                slo_reason=reason,
                endpoints=tuple(eps),
                generator=GeneratorHealth(
                    cpu_percent=cpu,
                    loop_lag_ms=0.4 + n * 0.002,
                    little_ratio=0.7 if limited else 0.99,
                    limited=limited,
                    reason="generator CPU above 80 % of a core" if limited else "",
                ),
                errors=(("HTTPError 503: slot queue full", failures),) if failures else (),
                histogram=_histogram(rng, mean_ms, requests) if with_histograms else {},
                stalls=0,
            )
        )
        for k in range(int(STEP_SECONDS)):
            t = i * STEP_SECONDS + k
            warm = 0.55 if k == 0 else 1.0  # throughput lags one second after each step change
            timeline.append(
                TimelinePoint(
                    t_s=t,
                    users=n,
                    throughput_rps=rps * warm * (1 + rng.uniform(-0.03, 0.03)),
                    p95_ms=p95 * (1 + rng.uniform(-0.05, 0.05)),
                    error_rate=error_rate,
                )
            )
    return tuple(steps), tuple(timeline)


def _saturation(steps: tuple[StepStats, ...], slo: Slo, max_users: int) -> Saturation:
    ordered = sorted(steps, key=lambda s: s.users)
    failing = next((s for s in ordered if not s.slo_ok), None)
    if failing is None:
        last = ordered[-1]
        return Saturation(
            users=float(max_users),
            throughput_rps=last.throughput_rps,
            broken=False,
            reason=f"SLO held up to max_users {max_users}",
            censored="above_max",
        )
    passing = [s for s in ordered if s.slo_ok and s.users < failing.users]
    if not passing:
        return Saturation(
            users=float(failing.users),
            throughput_rps=failing.throughput_rps,
            broken=True,
            reason=f"{failing.slo_reason} at {failing.users} users (the first step)",
            bracket=None,
            censored="below_start",
        )
    ok = passing[-1]
    assert ok.p95_ms is not None and failing.p95_ms is not None
    frac = (slo.p95_ms - ok.p95_ms) / (failing.p95_ms - ok.p95_ms)
    frac = min(1.0, max(0.0, frac))
    users = ok.users + frac * (failing.users - ok.users)
    rps = ok.throughput_rps + frac * (failing.throughput_rps - ok.throughput_rps)
    return Saturation(
        users=round(users, 1),
        throughput_rps=round(rps, 1),
        broken=True,
        reason=f"{failing.slo_reason} at {failing.users} users",
        bracket=(ok.users, failing.users),
        users_ci=(round(users * 0.96, 1), round(users * 1.04, 1)),
        throughput_ci=(round(rps * 0.97, 1), round(rps * 1.03, 1)),
    )


def fingerprint(**changes: object) -> Fingerprint:
    fp = Fingerprint(
        scenario_hash="sha256:1f3a9c0d",
        slo="p95<=250ms,errors<=1%",
        perfgate_version="0.1.0",
        cpu_count=2,
        provider="embedded",
        target="http://127.0.0.1:41234",
        python="3.11.7",
        machine="x86_64",
    )
    return replace(fp, **changes)  # type: ignore[arg-type]


def make_result(
    *,
    verdict: str = "block",
    with_baseline: bool = True,
    censored: bool = False,
    aborted: bool = False,
    n_steps: int = 14,
    step_users: int = 15,
    slots: int = 16,
    service_ms: float = 20.0,
    endpoints: tuple[tuple[str, str, int, float], ...] = ENDPOINTS,
    with_histograms: bool = True,
    baseline_fingerprint: Fingerprint | None = None,
    limited_above_users: int | None = None,
) -> RunResult:
    """A realistic RunResult: blocked against a better baseline unless told otherwise."""
    slo = Slo(p95_ms=250.0, error_rate=0.01)
    gate = GateSpec(min_users=100, max_regression=0.10)
    if censored:
        slots = 80  # knee far beyond the ramp: the SLO never breaks
    users = tuple(max(4, step_users * i) for i in range(n_steps))
    max_users = users[-1]
    steps, timeline = make_steps(
        slots=slots,
        service_ms=service_ms,
        users=users,
        slo=slo,
        endpoints=endpoints,
        with_histograms=with_histograms,
        limited_above_users=limited_above_users,
        error_above_users=None if censored else int(users[-1] * 0.85),
    )
    if aborted:
        steps = steps[: max(2, n_steps // 3)]
        timeline = tuple(p for p in timeline if p.t_s < len(steps) * STEP_SECONDS)
    sat = _saturation(steps, slo, max_users)
    baseline = None
    baseline_steps: tuple[StepStats, ...] = ()
    if with_baseline:
        baseline_steps, _ = make_steps(
            slots=slots + 2 if verdict == "block" else slots,
            service_ms=service_ms,
            users=users,
            slo=slo,
            seed=2,
            endpoints=endpoints,
            with_histograms=False,
        )
        base_sat = _saturation(baseline_steps, slo, max_users)
        baseline = BaselineRef(
            release="v1.4.0",
            saturation=base_sat,
            created_at="2024-05-01T10:00:00+00:00",
            path="baselines/exchange/v1.4.0.json",
            fingerprint=baseline_fingerprint or fingerprint(),
        )
    rules = [
        RuleResult(
            name="floor",
            outcome="pass" if (sat.users or 0) >= 100 else "fail",
            message=f"saturation {sat.users:g} users vs floor 100 users",
            value=sat.users,
            threshold=100.0,
            margin=(sat.users or 0) - 100.0,
        )
    ]
    reasons = [rules[0].message]
    if baseline is not None and baseline.saturation.throughput_rps and sat.throughput_rps:
        ratio = sat.throughput_rps / baseline.saturation.throughput_rps
        outcome = (
            "fail"
            if verdict == "block"
            else ("inconclusive" if verdict == "inconclusive" else "pass")
        )
        rules.append(
            RuleResult(
                name="regression",
                outcome=outcome,
                message=(
                    f"throughput at the SLO {sat.throughput_rps:g} req/s is {ratio:.3f}× the "
                    f"baseline's {baseline.saturation.throughput_rps:g} req/s (limit 0.9×)"
                ),
                value=round(ratio, 4),
                threshold=0.9,
                margin=round(ratio - 0.9, 4),
            )
        )
        reasons.append(rules[-1].message)
    else:
        rules.append(
            RuleResult(name="regression", outcome="skipped", message="no baseline stored yet")
        )
    rules.append(
        RuleResult(
            name="generator",
            outcome="inconclusive" if verdict == "inconclusive" else "pass",
            message=(
                "the load generator was saturated at 2 steps"
                if verdict == "inconclusive"
                else "the load generator kept up at every step"
            ),
            value=92.0 if verdict == "inconclusive" else 55.0,
            threshold=80.0,
            margin=-12.0 if verdict == "inconclusive" else 25.0,
        )
    )
    if verdict == "inconclusive":
        reasons.append(rules[-1].message)
    return RunResult(
        scenario="exchange",
        release="v1.5.0-rc.2",
        verdict=verdict,  # type: ignore[arg-type]
        reasons=tuple(reasons),
        saturation=sat,
        baseline=baseline,
        steps=steps,
        generator={"engine": "locust 2.47", "processes": 1, "user_class": "FastHttpUser"},
        started_at="2024-05-02T09:00:00+00:00",
        finished_at=f"2024-05-02T09:{len(steps) * 10 // 60:02d}:{len(steps) * 10 % 60:02d}+00:00",
        perfgate_version="0.1.0",
        rules=tuple(rules),
        slo=slo,
        gate=gate,
        target="http://127.0.0.1:41234",
        strategy="linear",
        fingerprint=fingerprint(),
        timeline=timeline,
        replicates=(),
        diagnostics={
            "little": [
                {
                    "users": st.users,
                    "n_eff": round(
                        st.users * (st.generator.little_ratio if st.generator else 1), 2
                    ),
                    "ratio": st.generator.little_ratio if st.generator else None,
                    "ok": not (st.generator and st.generator.limited),
                    "meaning": f"X·R of {st.users} users in flight",
                }
                for st in steps
            ],
            "usl": {
                "sigma": 0.021,
                "kappa": 0.00012,
                "lambda": 52.1,
                "n_max": 91.3,
                "sigma_ci": [0.01, 0.032],
                "kappa_ci": [0.00008, 0.00016],
                "lambda_ci": [50.0, 54.2],
                "n_max_ci": [80.2, 104.9],
                "levels": len(steps),
                "meaning": "contention σ = 0.021 (2% of the work serialised), κ = 0.00012",
            },
            "kneedle": {
                "users": slots,
                "difference": 0.62,
                "meaning": f"throughput stops growing in proportion to users near {slots} users",
            },
            "knee": {
                "users": float(slots),
                "r0_ms": service_ms,
                "x_max_rps": slots / service_ms * 1000,
                "meaning": f"queueing starts near N* ≈ {slots} users",
            },
            "staging": {"description": "embedded exchange on 127.0.0.1", "pid": 4242},
            # recorded as the pipeline records it; the report only reads it
            "degraded_first": to_jsonable(degraded_first(steps, slo.p95_ms)),
            **({"gate_ratio": 0.888, "gate_ratio_ci": [0.85, 0.92]} if with_baseline else {}),
        },
        aborted=aborted,
        abort_reason="interrupted by SIGINT" if aborted else "",
        command="perfgate run --scenario scenarios/exchange.yaml --release v1.5.0-rc.2",
        baseline_steps=baseline_steps,
    )


def make_history() -> History:
    """The scenario's release history (as perfgate.history builds it), newest last."""
    rows = []
    level = 0.0
    previous = None
    for i, (rel, users, rps) in enumerate(
        (
            ("v1.1.0", 118.0, 700.0),
            ("v1.2.0", 131.5, 760.0),
            ("v1.3.0", 129.0, 757.0),
            ("v1.4.0", 171.9, 893.4),
        )
    ):
        change = math.log(rps / previous) if previous else None
        level += change or 0.0
        rows.append(
            HistoryRow(
                release=rel,
                time=f"2024-0{i + 1}-01T10:00:00+00:00",
                source="baseline",
                verdict="pass",
                users=users,
                users_ci=(users * 0.95, users * 1.05),
                throughput_rps=rps,
                throughput_ci=None,
                censored="no",
                parent=rows[-1].release if rows else None,
                change_log=change,
                change_se=0.0057 if change is not None else None,
                change_how="stored numbers" if change is not None else "",
                level_log=level,
                level_se=0.0057 * i,
                change_point=rel == "v1.4.0",
            )
        )
        previous = rps
    points = (ChangePoint(release="v1.4.0", index=3, change=0.18, p_value=0.005, z=9.0),)
    return History(scenario="exchange", rows=tuple(rows), change_points=points)
