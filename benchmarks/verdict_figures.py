"""The verdict's published error rates: every figure docs/verdict.md and the README quote.

Each arm is ``perfgate.simulate.simulate`` — whole gates through ``perfgate.gate.run_gate``, the
function ``perfgate run`` calls — on the simulated default scenario. Arms:

* the default (side by side, windows together, shared-machine noise, the profile the defaults
  were chosen on): the operating characteristic from no change to a 20 % capacity loss;
* the same on the quiet profile, and on every held-out profile the method was not tuned on;
* side by side without the cross-over (``--baseline-target``) on the tuning profile and the
  held-out profiles that a cross-over would otherwise cancel;
* Kubernetes staging: the cross-over by rollouts (60 s a swap, new pods each time) on the
  tuning profile and the held-out profiles about deployments;
* the alternatives the default was chosen against: alternating windows; a stored baseline only;
  the replicate design (``--repeat 3``).

    python benchmarks/verdict_figures.py               # ~4,000 gates; ~20 min on 2 free cores
    python benchmarks/verdict_figures.py --quick       # 20 gates per arm, a smoke test

Writes benchmarks/results/verdict_figures.json (each arm's full ``simulate`` output) and prints
the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from perfgate.simulate import HELD_OUT, format_table, simulate

OUT = Path(__file__).resolve().parent / "results" / "verdict_figures.json"
LOSSES = (0.0, 0.025, 0.05, 0.075, 0.10, 0.15, 0.20)


def arms(n: int) -> list[tuple[str, float, int, dict[str, Any]]]:
    """(group, capacity loss, trials, simulate options) for every published figure."""
    out: list[tuple[str, float, int, dict[str, Any]]] = []
    for loss in LOSSES:
        big = loss in (0.0, 0.10)
        out.append(("default", loss, 2 * n if big else n, {}))
    for profile in ("quiet", *HELD_OUT):
        for loss in (0.0, 0.10):
            out.append((profile, loss, n, {"noise": profile}))
    for profile in ("shared", "proc-drift", "process-episodes", "deploy-offset"):
        for loss in (0.0, 0.10):
            options = {"crossover": False, "noise": profile}
            out.append((f"no cross-over, {profile}", loss, max(10, n * 2 // 3), options))
    for loss in (0.0, 0.10):
        out.append(("alternate", loss, max(10, n * 2 // 3), {"interleave": "alternate"}))
    for loss in (0.0, 0.10, 0.30):
        out.append(("stored", loss, max(10, n * 2 // 3), {"mode": "stored"}))
    for loss in (0.0, 0.10):
        out.append(("repeat 3", loss, max(10, n // 3), {"repeat": 3}))
    for profile in ("shared", "deploy-offset", "proc-drift", "process-episodes"):
        for loss in (0.0, 0.10):
            options = {"staging": "kubernetes", "noise": profile}
            out.append((f"kubernetes, {profile}", loss, max(10, n * 2 // 3), options))
    return out


def _line(group: str, r: dict[str, Any]) -> str:
    def cell(name: str) -> str:
        lo, hi = r[f"{name}_ci"]
        return f"{r[name]:.1%} [{lo:.1%}, {hi:.1%}]"

    return (
        f"| {group} | {r['regression']:.1%} | {r['trials']} | {cell('block')} | {cell('pass')} | "
        f"{r['inconclusive']:.1%} | {r['mean_simulated_seconds'] / 60:.1f} | "
        f"{r['p90_simulated_seconds'] / 60:.1f} | {_coverage(r)} |"
    )


def _coverage(r: dict[str, Any]) -> str:
    floor = r.get("floor_interval") or {}
    if not floor.get("trials"):
        return "n/a"
    lo, hi = floor["coverage_ci"]
    return f"{floor['coverage']:.0%} [{lo:.0%}, {hi:.0%}] (±{floor['median_half_width']:.0%})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=150, help="gates per arm (A/A and 10 %%: 2×)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--only", default="", help="comma-separated: run only the arms whose name starts so"
    )
    parser.add_argument(
        "--coverage", action="store_true", help="measure the floor interval's coverage too"
    )
    parser.add_argument(
        "--losses", default="", help="comma-separated capacity losses to run (default: all)"
    )
    args = parser.parse_args(argv)
    n = 10 if args.quick else args.trials
    started = time.perf_counter()
    results = []
    print(
        "| arm | capacity loss | gates | block | pass | inconclusive | mean min | p90 min "
        "| floor interval coverage |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    prefixes = tuple(p.strip() for p in args.only.split(",")) if args.only else ("",)
    losses = {float(x) for x in args.losses.split(",")} if args.losses else None
    for i, (group, loss, trials, options) in enumerate(arms(n)):
        if not group.startswith(prefixes) or (losses is not None and loss not in losses):
            continue
        r = simulate(
            loss, trials, args.seed + i, workers=args.workers, coverage=args.coverage, **options
        )
        results.append({"arm": group, **r})
        print(_line(group, r), flush=True)
        out = {  # written after every arm: a long run cut short keeps what it measured
            "command": " ".join(["python", "benchmarks/verdict_figures.py", *sys.argv[1:]]),
            "load_average": os.getloadavg(),
            "wall_s": round(time.perf_counter() - started, 1),
            "arms": results,
        }
        if not args.quick:
            args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    default = {"rows": [r for r in results if r["arm"] == "default"]}
    print("\n" + format_table(default))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
