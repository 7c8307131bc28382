"""Telemetry's overhead on the load generator: req/s with and without it, side by side.

``perfgate ramp`` at one fixed level against the embedded reference exchange (staged by perfgate,
so every embedded source runs: the exchange's ``/metrics`` scraped and its process sampled every
0.5 s), once with the default telemetry and once with ``metrics: {enabled: false}``. The exchange
holds no slot (``service_ms: 0``), so the generator and the exchange's CPU are the limit and any
CPU the telemetry takes shows up as lost req/s. The two arms alternate within each repetition
(the order flips every repetition); the figure is the median of the per-repetition ratios
with / without (goal: ≥ 0.98, issue 12).

    python benchmarks/telemetry_overhead.py            # 8 repetitions, ~6 min
    python benchmarks/telemetry_overhead.py --quick    # 2 repetitions, short runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

ARMS = ("with", "without")


def scenario(*, users: int, step_s: float, settle_s: float, telemetry: bool) -> dict[str, Any]:
    return {
        "name": "telemetry-overhead",
        "staging": {"provider": "embedded", "embedded": {"service_ms": 0.0, "slots": 64}},
        "users": {
            "wait": 0,
            "requests": [{"name": "balances", "method": "GET", "path": "/balances/trader-1"}],
        },
        "ramp": {
            "strategy": "linear",
            "start_users": users,
            "step_users": 1,
            "max_users": users,
            "step_seconds": step_s,
            "settle_seconds": settle_s,
        },
        "slo": {"p95_ms": 10_000.0, "error_rate": 0.5},
        "metrics": {"enabled": telemetry},
    }


def one_run(arm: str, scen: Path, workdir: Path, timeout_s: float) -> dict[str, Any]:
    idle = c.wait_idle(timeout_s=15.0)  # a busy machine is recorded, not waited out
    cmd = (*c.PERFGATE, "ramp", "--scenario", str(scen), "--report-dir", str(workdir / "r"))
    done = c.run((*cmd, "--json"), timeout_s=timeout_s, cwd=workdir, env=c.env_without_perfgate())
    result = c.parse_result(done.stdout) or {}
    steps = result.get("steps") or []
    step = steps[0] if steps else {}
    res = step.get("resources") or {}
    return {
        "arm": arm,
        "rc": done.rc,
        "idle": idle,
        "rps": step.get("throughput_rps"),
        "requests": step.get("requests"),
        "generator_cpu_percent": (step.get("generator") or {}).get("cpu_percent"),
        "readings": len(res.get("readings") or ()),
        "missing": res.get("missing"),
        "error": "" if steps else c.last_lines(done.stderr),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--step-seconds", type=float, default=12.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=c.RESULTS_DIR / "telemetry_overhead.json")
    args = ap.parse_args()
    reps, step_s = (2, 6.0) if args.quick else (args.reps, args.step_seconds)
    settle_s = min(2.0, step_s / 4)
    runs: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pg-telemetry-") as tmp:
        workdir = Path(tmp)
        files = {
            arm: c.write_scenario(
                workdir / f"{arm}.yaml",
                scenario(
                    users=args.users, step_s=step_s, settle_s=settle_s, telemetry=arm == "with"
                ),
            )
            for arm in ARMS
        }
        for rep in range(reps):
            order = ARMS if rep % 2 == 0 else ARMS[::-1]
            for arm in order:
                run = one_run(arm, files[arm], workdir, timeout_s=step_s + 90)
                run["rep"] = rep
                runs.append(run)
                c.note(f"rep {rep} {arm:>7}: {c.fmt(run['rps'])} req/s {run['error']}")
    ratios = []
    for rep in range(reps):
        by = {r["arm"]: r["rps"] for r in runs if r["rep"] == rep}
        if by.get("with") and by.get("without"):
            ratios.append(by["with"] / by["without"])
    summary = {
        "ratio_median": c.median(ratios),
        "ratios": [round(r, 4) for r in ratios],
        "rps_with_median": c.median([r["rps"] for r in runs if r["arm"] == "with"]),
        "rps_without_median": c.median([r["rps"] for r in runs if r["arm"] == "without"]),
        "goal": "ratio >= 0.98 (overhead within 2 %)",
    }
    record = {
        "benchmark": "telemetry_overhead",
        "command": " ".join(sys.argv),
        "settings": {
            "reps": reps,
            "users": args.users,
            "step_seconds": step_s,
            "settle_s": settle_s,
        },
        "machine": c.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        c.md_table(
            ["arm", "median req/s", "runs"],
            [
                ["with telemetry", c.fmt(summary["rps_with_median"]), reps],
                ["without (metrics.enabled false)", c.fmt(summary["rps_without_median"]), reps],
            ],
        )
    )
    median = c.fmt(summary["ratio_median"], 3)
    print(f"\nratio with/without, median of {len(ratios)} pairs: {median} ({c.spread(ratios, 3)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
