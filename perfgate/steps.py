"""How one measured load level is judged: the SLO check, stalls and the generator's health.

Shared by the real load stage (``perfgate.load.runner``) and the simulator
(``perfgate.simulate``), so simulated steps are judged by exactly the code that judges real ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from perfgate.models import GeneratorHealth, Slo

CPU_LIMIT_PERCENT = 85.0  # of one core: above this the generator, not the target, may be the limit
LITTLE_RATIO_MIN = 0.85
STALL_FRACTION = 0.5


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
) -> GeneratorHealth:
    """Whether the generator itself limited the step (CPU, Little's law)."""
    little: float | None = None
    if mean_latency_ms is not None and users > 0 and throughput_rps > 0:
        little = throughput_rps * (mean_latency_ms / 1000.0 + wait_s) / users
    reasons: list[str] = []
    if cpu_percent > CPU_LIMIT_PERCENT:
        reasons.append(f"generator CPU {cpu_percent:.0f}% of one core > {CPU_LIMIT_PERCENT:.0f}%")
    if judge_little and little is not None and little < LITTLE_RATIO_MIN:
        reasons.append(
            f"only {little:.2f} of the {users} users were inside a request "
            f"(throughput × latency / users < {LITTLE_RATIO_MIN}): users waited on the generator"
        )
    return GeneratorHealth(
        cpu_percent=round(cpu_percent, 1),
        loop_lag_ms=round(loop_lag_ms, 3),
        little_ratio=None if little is None else round(little, 4),
        limited=bool(reasons),
        reason="; ".join(reasons),
    )
