"""Adaptive search against a linear ramp of equal resolution, on targets with a known N*."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from perfgate.models import RampSpec, Slo
from perfgate.simulate.noise import NOISE_PROFILES
from perfgate.simulate.queue import SimulatedRunner, TargetModel

SEARCH_SETTINGS: tuple[tuple[int, float, float], ...] = (
    # (servers, service_ms, p95 SLO ms): the reference exchange's knobs (slots, service_ms)
    # SLOs chosen so that N* is not an integer: with deterministic service a level exactly at N*
    # has p95 exactly at the SLO and its verdict is decided by rounding
    (16, 15.2, 500.0),
    (4, 20.0, 262.0),
    (8, 10.0, 245.0),
    (2, 5.0, 98.0),
    (32, 40.0, 410.0),
)


def compare_search(
    *,
    settings: tuple[tuple[int, float, float], ...] = SEARCH_SETTINGS,
    start_users: int = 10,
    step_seconds: float = 10.0,
    resolution: float = 0.05,
    noise: str = "none",
    service_cv: float = 0.0,
    seeds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Adaptive search vs a linear ramp of equal resolution (step = resolution × N*) from the
    same first level, on deterministic-service targets whose N* = SLO × servers / service is
    analytical. Returns per-setting errors and simulated-time ratios."""
    from perfgate.adaptive import adaptive
    from perfgate.analysis import saturation
    from perfgate.search import linear

    profile = NOISE_PROFILES[noise]
    rows = []
    for servers, service_ms, slo_ms in settings:
        model = TargetModel(
            servers=servers, service_ms=service_ms, service_cv=service_cv, network_ms=1.0
        )
        slo = Slo(p95_ms=slo_ms)
        n_star = model.analytical_n_star(slo_ms)
        max_users = max(start_users + 1, int(n_star * 4))
        ramp_a = RampSpec(
            strategy="adaptive",
            start_users=start_users,
            max_users=max_users,
            step_seconds=step_seconds,
            resolution=resolution,
        )
        ramp_l = dataclasses.replace(
            ramp_a, strategy="linear", step_users=max(1, round(resolution * n_star))
        )
        errors, ratios, t_a, t_l, steps_a, steps_l = [], [], [], [], [], []
        for i in range(seeds):
            run_seed = seed * 1000 + i
            ra = SimulatedRunner(model, slo, seed=run_seed, noise=profile)
            out_a = adaptive(ra, ramp_a, slo)
            sat = saturation(out_a.steps, slo, max_users=max_users)
            rl = SimulatedRunner(model, slo, seed=run_seed, noise=profile)
            out_l = linear(rl, ramp_l, slo)
            errors.append((sat.users or 0.0) / n_star - 1.0)
            ratios.append(ra.clock_s / rl.clock_s)
            t_a.append(ra.clock_s)
            t_l.append(rl.clock_s)
            steps_a.append(len(out_a.steps))
            steps_l.append(len(out_l.steps))
        rows.append(
            {
                "servers": servers,
                "service_ms": service_ms,
                "slo_p95_ms": slo_ms,
                "n_star": round(n_star, 1),
                "max_abs_error": round(max(abs(e) for e in errors), 4),
                "mean_error": round(statistics.fmean(errors), 4),
                "adaptive_s": round(statistics.fmean(t_a), 1),
                "linear_s": round(statistics.fmean(t_l), 1),
                "time_ratio": round(statistics.fmean(ratios), 3),
                "max_time_ratio": round(max(ratios), 3),
                "adaptive_steps": round(statistics.fmean(steps_a), 1),
                "linear_steps": round(statistics.fmean(steps_l), 1),
            }
        )
    return {
        "start_users": start_users,
        "step_seconds": step_seconds,
        "resolution": resolution,
        "noise": noise,
        "service_cv": service_cv,
        "seeds": seeds,
        "rows": rows,
    }
