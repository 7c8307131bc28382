"""Which statistic, measured how, resolves a regression in the least load time? (issue 10)

On the simulated default scenario (perfgate.simulate's "exchange" preset: 16 servers × 15.2 ms,
p95 ≤ 500 ms, N* ≈ 526) and a noise profile, A/A pairs of measurements of two deployments of the
same build are taken in several ways; for each the SD of the pair's log ratio and the load
seconds one pair costs give the **variance × seconds** figure of merit (lower is better: the
variance of the mean after T seconds of load is that figure / T).

* ``together@N*``: both builds at once at the SLO boundary, ``window`` s (the gate's default);
* ``together@1.5N*``: the same at a fixed overload level;
* ``alternate@N*``: one build after the other (random order), each ``window`` s;
* ``search X_slo`` / ``search N_slo``: a full adaptive search per build (throughput and users at
  the SLO boundary), the replicate design.

    python benchmarks/statistic_choice.py                 # shared profile, 60 pairs each, ~4 min
    python benchmarks/statistic_choice.py --noise proc-drift --pairs 40
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from perfgate.analysis import saturation
from perfgate.gate.design import search_strategy
from perfgate.simulate import NOISE_PROFILES, PRESETS, SimSides

SETTLE_S = 2.0


def _together(sides: SimSides, users: int, window: float) -> tuple[float, float]:
    a, b = sides.measure_together(users, settle_s=SETTLE_S, window_s=window)
    return math.log(a.throughput_rps / b.throughput_rps), SETTLE_S + window + 0.5


def _alternate(
    sides: SimSides, users: int, window: float, rng: random.Random
) -> tuple[float, float]:
    order = ["candidate", "baseline"]
    rng.shuffle(order)
    got = {}
    for build in order:
        st = sides.runner(build).measure(  # type: ignore[arg-type]
            users, settle_s=SETTLE_S, min_s=window, max_s=window, min_samples=0, phase="w"
        )
        sides.idle(build)  # type: ignore[arg-type]
        got[build] = math.log(st.throughput_rps)
    return got["candidate"] - got["baseline"], 2 * (SETTLE_S + window + 0.5)


def _searches(sides: SimSides, key: str) -> tuple[float, float]:
    pre = sides.preset
    got, start = {}, sides.clock
    for build in ("candidate", "baseline"):
        out = search_strategy(pre.ramp)(sides.runner(build), pre.ramp, pre.slo)  # type: ignore[arg-type]
        sides.idle(build)  # type: ignore[arg-type]
        sat = saturation(out.steps, pre.slo, max_users=pre.ramp.max_users)
        got[build] = math.log(getattr(sat, key) or 1e-9)
    return got["candidate"] - got["baseline"], sides.clock - start


def _row(name: str, values: list[tuple[float, float]]) -> dict[str, Any]:
    d = [v for v, _ in values]
    seconds = statistics.fmean(s for _, s in values)
    sd = statistics.stdev(d)
    return {
        "statistic": name,
        "pairs": len(d),
        "sd_log_ratio": round(sd, 5),
        "seconds_per_pair": round(seconds, 1),
        "variance_x_seconds": round(sd * sd * seconds, 5),
        "mean_log_ratio": round(statistics.fmean(d), 5),
    }


def measure(
    noise: str, pairs: int, window: float, seed: int, same: bool = False
) -> list[dict[str, Any]]:
    pre = PRESETS["exchange"]
    profile = NOISE_PROFILES[noise]
    n_star = round(pre.model.analytical_n_star(pre.slo.p95_ms))
    rows = []
    ways: dict[str, Any] = {
        "together@N*": lambda s, r: _together(s, n_star, window),
        "together@1.5N*": lambda s, r: _together(s, round(1.5 * n_star), window),
        "alternate@N*": lambda s, r: _alternate(s, n_star, window, r),
        "search X_slo": lambda s, r: _searches(s, "throughput_rps"),
        "search N_slo": lambda s, r: _searches(s, "users"),
    }
    for name, way in ways.items():
        values = []
        count = pairs if not name.startswith("search") else max(10, pairs // 3)
        sides = None
        for i in range(count):
            # a fresh pair of deployments per pair (their offsets are part of the noise), or
            # with --same-deployments one pair of deployments throughout (one gate's view)
            rng = random.Random(f"statistic:{seed}:{name}:{i}")
            if sides is None or not same:
                sides = SimSides(pre, pre.ramp, profile, rng, 0.0)
                sides.runner("candidate").hold(n_star, 20.0)  # warm both places up
                sides.runner("baseline").hold(n_star, 20.0)
            values.append(way(sides, rng))
        rows.append(_row(name, values))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise", default="shared", choices=sorted(NOISE_PROFILES))
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--same-deployments", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = measure(args.noise, args.pairs, args.window, args.seed, args.same_deployments)
    out = {
        "noise": args.noise,
        "window_s": args.window,
        "settle_s": SETTLE_S,
        "seed": args.seed,
        "same_deployments": args.same_deployments,
        "rows": rows,
        "wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join(["python", "benchmarks/statistic_choice.py", *sys.argv[1:]]),
    }
    print("| statistic | pairs | SD of log ratio | s / pair | variance × s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['statistic']} | {r['pairs']} | {r['sd_log_ratio']:.2%} | "
            f"{r['seconds_per_pair']:.0f} | {r['variance_x_seconds']:.5f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
