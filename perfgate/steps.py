"""How one measured load level is judged: the SLO check, stalls and the generator's health.

Shared by the real load stage (``perfgate.load.runner``) and the simulator
(``perfgate.simulate``), so simulated steps are judged by exactly the code that judges real ones:
both turn a measuring window into a StepStats with :func:`judge_step`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from perfgate.histogram import Histogram
from perfgate.models import EndpointStats, EventStats, GeneratorHealth, Slo, StepStats, UsersSpec

CPU_LIMIT_PERCENT = 85.0  # of one core: above this the generator, not the target, may be the limit
LITTLE_RATIO_MIN = 0.85
STALL_FRACTION = 0.5
# Events the server sent but this generator read later than this (p95): the generator, not the
# target, made them late (a healthy generator reads within a few ms on the same network).
EVENT_READ_LAG_LIMIT_MS = 100.0


def slo_check(
    p95_ms: float | None, error_rate: float, successes: int, slo: Slo
) -> tuple[bool, str]:
    """Whether a step meets the SLO, and why not in words ("p95 312 ms > SLO 250 ms")."""
    reasons: list[str] = []
    if successes <= 0:
        reasons.append("no successful requests")
    elif p95_ms is not None and p95_ms > slo.p95_ms:
        reasons.append(f"p95 {_fmt_ms(p95_ms)} ms > SLO {slo.p95_ms:g} ms")
    if error_rate > slo.error_rate:
        reasons.append(f"error rate {_fmt_pct(error_rate)} > {_fmt_pct(slo.error_rate)}")
    return not reasons, "; ".join(reasons)


def event_slo_check(events: EventStats | None, slo: Slo) -> str:
    """Why a step's events break the event SLO, in words ("" when they meet it or none ran)."""
    if events is None:
        return ""
    reasons: list[str] = []
    if slo.event_p95_ms is not None:
        if events.expected and not events.received:
            reasons.append("no awaited event was received")
        elif events.p95_ms is not None and events.p95_ms > slo.event_p95_ms:
            reasons.append(f"event p95 {_fmt_ms(events.p95_ms)} ms > SLO {slo.event_p95_ms:g} ms")
    if slo.event_loss_rate is not None and events.loss_rate > slo.event_loss_rate:
        reasons.append(f"event loss {_fmt_pct(events.loss_rate)} > {_fmt_pct(slo.event_loss_rate)}")
    return "; ".join(reasons)


def event_stats(
    hist: Histogram,
    *,
    lost: int,
    stream_errors: int = 0,
    backlog_mean: float = 0.0,
    read_lag_p95_ms: float | None = None,
) -> EventStats:
    """One window's awaited events as EventStats (``hist``: latencies of the received, ms)."""
    received = hist.count
    expected = received + lost
    return EventStats(
        expected=expected,
        received=received,
        lost=lost,
        loss_rate=lost / expected if expected else 0.0,
        p50_ms=hist.percentile(50),
        p95_ms=hist.percentile(95),
        p99_ms=hist.percentile(99),
        max_ms=hist.max if received else None,
        p95_ci_ms=hist.percentile_ci(95),
        backlog_mean=round(backlog_mean, 3),
        read_lag_p95_ms=read_lag_p95_ms,
        stream_errors=stream_errors,
        histogram=hist.to_dict(),
    )


def _fmt_ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _fmt_pct(rate: float) -> str:
    pct = rate * 100
    text = f"{pct:.1f}" if pct < 10 else f"{pct:.0f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def count_stalls(per_second: Sequence[int]) -> int:
    """1-s windows with fewer than half the median completions (needs ≥ 2 full seconds)."""
    if len(per_second) < 2:
        return 0
    median = statistics.median(per_second)
    if median <= 0:
        return 0
    return sum(1 for n in per_second if n < STALL_FRACTION * median)


def generator_health(
    *,
    cpu_percent: float,
    loop_lag_ms: float,
    throughput_rps: float,
    mean_latency_ms: float | None,
    users: int,
    wait_s: float,
    judge_little: bool,
    event_read_lag_ms: float | None = None,
    waiting_users: float = 0.0,
) -> GeneratorHealth:
    """Whether the generator itself limited the step (CPU, Little's law, reading events late).

    ``waiting_users``: the mean number of users waiting for an event (``users.streams.wait``):
    they are busy with the service too, so Little's law counts them beside those in a request.
    """
    little: float | None = None
    if mean_latency_ms is not None and users > 0 and throughput_rps > 0:
        busy = throughput_rps * (mean_latency_ms / 1000.0 + wait_s) + waiting_users
        little = busy / users
    reasons: list[str] = []
    if cpu_percent > CPU_LIMIT_PERCENT:
        reasons.append(f"generator CPU {cpu_percent:.0f}% of one core > {CPU_LIMIT_PERCENT:.0f}%")
    if judge_little and little is not None and little < LITTLE_RATIO_MIN:
        reasons.append(
            f"only {little:.2f} of the {users} users were inside a request "
            f"(throughput × latency / users < {LITTLE_RATIO_MIN}): users waited on the generator"
        )
    if event_read_lag_ms is not None and event_read_lag_ms > EVENT_READ_LAG_LIMIT_MS:
        reasons.append(
            f"the generator read events {event_read_lag_ms:.0f} ms (p95) after the server sent "
            f"them (> {EVENT_READ_LAG_LIMIT_MS:.0f} ms): late events are the generator's"
        )
    return GeneratorHealth(
        cpu_percent=round(cpu_percent, 1),
        loop_lag_ms=round(loop_lag_ms, 3),
        little_ratio=None if little is None else round(little, 4),
        limited=bool(reasons),
        reason="; ".join(reasons),
        event_read_lag_ms=None if event_read_lag_ms is None else round(event_read_lag_ms, 3),
    )


def _waiting_users(users_spec: UsersSpec, events: EventStats | None) -> float:
    """Users blocked on their event: each waiting user has exactly one event awaited."""
    streams = users_spec.streams
    if events is None or streams is None or not streams.wait:
        return 0.0
    return events.backlog_mean


def rate(count: float, duration_s: float) -> float:
    """``count`` per second over a window of ``duration_s`` seconds (0 for an empty window)."""
    return count / duration_s if duration_s > 0 else 0.0


def judge_step(
    hist: Histogram,
    *,
    users: int,
    duration_s: float,
    requests: int,
    failures: int,
    latency_sum_ms: float,
    per_second: Sequence[int],
    slo: Slo,
    users_spec: UsersSpec,
    cpu_percent: float,
    loop_lag_ms: float = 0.0,
    index: int,
    phase: str,
    started_s: float,
    endpoints: tuple[EndpointStats, ...] = (),
    errors: tuple[tuple[str, int], ...] = (),
    mean_of: Literal["successes", "completions"] = "successes",
    events: EventStats | None = None,
) -> StepStats:
    """One measuring window as a StepStats: rates, percentiles, SLO check, stalls, generator health.

    ``hist`` holds the successful requests' latencies (ms); ``latency_sum_ms`` sums every
    completion's, failures included (Little's law counts them); ``per_second`` counts completions
    in each full second of the window. ``cpu_percent`` (of one core) and ``loop_lag_ms`` are the
    generator's; Little's law judges it only for perfgate's own users, whose think time
    ``users_spec.wait_s`` is known, not a locustfile's (:func:`generator_health`). ``mean_of`` says
    whose mean ``StepStats.mean_ms`` is: the successes' (a real run) or every completion's
    (the simulator). ``events`` (``users.streams``) are judged against the event SLO too.
    """
    throughput = rate(requests, duration_s)
    error_rate = failures / requests if requests else 0.0
    p95 = hist.percentile(95)
    slo_ok, slo_reason = slo_check(p95, error_rate, requests - failures, slo)
    event_reason = event_slo_check(events, slo)
    if event_reason:
        slo_ok, slo_reason = False, "; ".join(r for r in (slo_reason, event_reason) if r)
    completions_mean_ms = latency_sum_ms / requests if requests else None
    return StepStats(
        users=users,
        duration_s=duration_s,
        requests=requests,
        failures=failures,
        throughput_rps=throughput,
        p50_ms=hist.percentile(50),
        p95_ms=p95,
        p99_ms=hist.percentile(99),
        p999_ms=hist.percentile(99.9),
        error_rate=error_rate,
        slo_ok=slo_ok,
        index=index,
        started_s=started_s,
        mean_ms=hist.mean if mean_of == "successes" else completions_mean_ms,
        max_ms=hist.max if hist.count else None,
        p95_ci_ms=hist.percentile_ci(95),
        phase=phase,
        slo_reason=slo_reason,
        endpoints=endpoints,
        generator=generator_health(
            users=users,
            throughput_rps=throughput,
            mean_latency_ms=completions_mean_ms,
            wait_s=users_spec.wait_s,
            judge_little=users_spec.locustfile is None,
            cpu_percent=cpu_percent,
            loop_lag_ms=loop_lag_ms,
            event_read_lag_ms=None if events is None else events.read_lag_p95_ms,
            waiting_users=_waiting_users(users_spec, events),
        ),
        errors=errors,
        histogram=hist.to_dict(),
        stalls=count_stalls(per_second),
        events=events,
    )
