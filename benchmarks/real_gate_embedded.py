"""The default gate on real noisy exchanges, staged by perfgate itself (issue 10).

Where ``real_gate.py`` gates two fixed URLs (``--target`` + ``--baseline-target``: no cross-over
possible), this is what ``perfgate run`` does by default on the embedded provider: the previous
release is staged from the knobs its baseline recorded and the two builds swap deployments after
every window pair (each swap restarts both exchanges). Both releases run with the exchange's
noise knobs on (per-process drift SD 3 %, 60 s; neighbour episodes 1/20 s, 2 s, ×1.5), and every
process draws its own noise (``noise_seed`` unset), as real processes would.

Once: ``perfgate run --release v1 --promote`` stores the previous release (8 slots × 10 ms).
Then per arm, N times: ``perfgate run --release cN --json`` with the candidate's knobs (``aa``:
the same; ``loss``: service_ms × 1/0.9). Counts verdicts with 95 % Clopper–Pearson intervals.

    python benchmarks/real_gate_embedded.py               # 6 gates per arm, ~25 min
    python benchmarks/real_gate_embedded.py --trials 2    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import yaml
from real_aa import clopper_pearson

NOISE = {
    "drift_sd": 0.03,
    "drift_tau_s": 60.0,
    "episode_per_s": 0.05,
    "episode_mean_s": 2.0,
    "episode_slowdown": 1.5,
}
OUT = Path(__file__).resolve().parent / "results" / "real_gate_embedded.json"


def scenario(service_ms: float, budget: float) -> dict[str, Any]:
    base = c.default_scenario()
    return {
        "name": "real-gate-embedded",
        "staging": {
            "provider": "embedded",
            "embedded": {"slots": 8, "service_ms": service_ms, **NOISE},
        },
        "users": base["users"],
        "ramp": {"strategy": "adaptive", "start_users": 20, "max_users": 600, "step_seconds": 4},
        "slo": {"p95_ms": 250, "error_rate": 0.01},
        "gate": {"max_regression": 0.10, "budget_minutes": budget},
    }


def perfgate(folder: Path, scen: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], float]:
    path = folder / f"s-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(scen), encoding="utf-8")
    command = [sys.executable, "-m", "perfgate", "run", "-s", str(path), "--baseline-dir",
               str(folder / "b"), "--report-dir", str(folder / "r"), "--json", *args]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    data = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done.returncode, data, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--budget-minutes", type=float, default=4.0)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pg-real-embedded-") as tmp:
        folder = Path(tmp)
        code, _, _ = perfgate(
            folder, scenario(10.0, args.budget_minutes), "--release", "v1", "--promote"
        )
        if code != 0:
            print(f"promoting v1 failed (exit {code})", file=sys.stderr)
            return 1
        for arm, service_ms in (("aa", 10.0), ("loss", 10.0 / 0.9)):
            for i in range(args.trials):
                code, data, wall = perfgate(folder, scenario(service_ms, args.budget_minutes),
                                            "--release", f"{arm}-{i}")  # fmt: skip
                looks = data.get("looks") or [{}]
                row = {"arm": arm, "exit": code, "verdict": data.get("verdict"),
                       "wall_s": round(wall, 1), "ratio": looks[-1].get("ratio"),
                       "lo": looks[-1].get("ratio_lo"), "hi": looks[-1].get("ratio_hi"),
                       "looks": len(data.get("looks") or []),
                       "mode": (data.get("baseline") or {}).get("mode")}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for arm in ("aa", "loss"):
        got = [r for r in rows if r["arm"] == arm]
        n = len(got)
        summary[arm] = {v: {"count": sum(1 for r in got if r["verdict"] == v),
                            "ci": clopper_pearson(sum(1 for r in got if r["verdict"] == v), n)}
                        for v in ("block", "pass", "inconclusive")}  # fmt: skip
        summary[arm]["mean_wall_s"] = round(sum(r["wall_s"] for r in got) / max(n, 1), 1)
    out = {"trials": args.trials, "noise": NOISE, "load_average": os.getloadavg(), "rows": rows,
           "summary": summary, "command": " ".join(["python", *sys.argv])}  # fmt: skip
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
