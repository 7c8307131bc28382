"""Generator cost of event streams: users per core with and without ``users.streams`` (issue 15).

The same closed-model users (scenarios/exchange-events.yaml's request mix, think time
``--wait`` s) run at fixed levels against a reference exchange that is never the limit (64 slots
× 1 ms, 8 event consumers × 0.1 ms), once as request-only users and once with each user keeping
its WebSocket open, subscribed to its account and awaiting the event of every order it places.
Both variants run back to back at every level, their order alternating from repetition to
repetition. Each run is one ``perfgate ramp`` at one level (start = max = users); from its
result.json: the generator's CPU over the measuring window (% of one core, the busiest generator
process), throughput and events received. *Users per core* = users / (CPU % / 100): how many
such users one generator core sustains; the ratio with/without is the cost of streaming.

    python benchmarks/stream_overhead.py            # 3 reps × 2 levels × 2 variants, ~8 min
    python benchmarks/stream_overhead.py --quick    # 1 rep, short steps, ~1.5 min
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as c
import yaml

EXCHANGE = {"slots": 64, "service_ms": 1.0, "event_workers": 8, "event_ms": 0.1, "cache": True}
VARIANTS = ("requests only", "with streams")


def scenario(streams: bool, users: int, step_s: float, wait_s: float) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (c.REPO / "scenarios" / "exchange-events.yaml").read_text()
    )
    data["name"] = "stream-overhead"
    data["staging"] = {"provider": "embedded", "embedded": EXCHANGE}
    data["users"]["wait"] = wait_s
    if not streams:
        del data["users"]["streams"]
        for key in ("event_p95_ms", "event_loss_rate"):
            data["slo"].pop(key, None)
    data["slo"]["p95_ms"] = 60_000  # never the limit: only the generator is measured
    data["ramp"] = {
        "strategy": "linear",
        "start_users": users,
        "step_users": users,
        "max_users": users,
        "step_seconds": step_s,
        "settle_seconds": min(3.0, step_s / 3),
        "min_samples": 0,
    }
    data["gate"] = {"max_regression": 0.10}
    data["metrics"] = {"enabled": False}
    return data


def measure(
    workdir: Path, streams: bool, users: int, step_s: float, wait_s: float
) -> dict[str, Any]:
    tag = f"{'streams' if streams else 'plain'}-{users}"
    path = c.write_scenario(workdir / f"{tag}.yaml", scenario(streams, users, step_s, wait_s))
    reports = workdir / f"reports-{tag}"
    done = c.run(
        (sys.executable, "-m", "perfgate", "ramp", "--scenario", str(path), "--report-dir",
         str(reports),),
        timeout_s=step_s + 120,
    )  # fmt: skip
    found = sorted(reports.rglob("result.json"))
    if done.rc != 0 or not found:
        return {"users": users, "streams": streams, "error": c.last_lines(done.stderr)}
    step = json.loads(found[-1].read_text())["steps"][0]
    cpu = (step.get("generator") or {}).get("cpu_percent")
    events = step.get("events") or {}
    return {
        "users": users,
        "streams": streams,
        "cpu_percent": cpu,
        "users_per_core": users / (cpu / 100.0) if cpu else None,
        "throughput_rps": step["throughput_rps"],
        "events_per_s": (events.get("received", 0) / step["duration_s"]) if events else 0.0,
        "event_p95_ms": events.get("p95_ms"),
        "read_lag_p95_ms": events.get("read_lag_p95_ms"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 repetition, 6-s steps")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    ap.add_argument("--levels", default="100,200", help="user levels (comma-separated)")
    ap.add_argument("--wait", type=float, default=0.5, help="think time of each user (s)")
    ap.add_argument("--idle-timeout", type=float, help="max wait for an idle machine (s)")
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    step_s = 6.0 if args.quick else 20.0
    levels = [int(u) for u in args.levels.split(",")]
    idle_s = c.idle_timeout(args.idle_timeout, args.quick)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pg-streams-") as tmp:
        for rep in range(reps):
            for users in levels:
                order = (False, True) if (rep + users // 100) % 2 == 0 else (True, False)
                for streams in order:
                    idle = c.wait_idle(timeout_s=idle_s)
                    c.note(f"rep {rep + 1}/{reps}: {users} users, {VARIANTS[streams]}")
                    row = measure(Path(tmp), streams, users, step_s, args.wait)
                    runs.append({**row, "rep": rep, "idle": idle})
    rows = []
    for users in levels:
        cells: list[Any] = [users]
        per: dict[bool, float | None] = {}
        for streams in (False, True):
            mine = [r for r in runs if r["users"] == users and r["streams"] == streams]
            per[streams] = c.median([r.get("users_per_core") for r in mine])
            cells += [
                c.spread([r.get("cpu_percent") for r in mine]),
                c.spread([r.get("users_per_core") for r in mine]),
                c.spread([r.get("throughput_rps") for r in mine]),
            ]
        mine = [r for r in runs if r["users"] == users and r["streams"]]
        cells += [
            c.spread([r.get("events_per_s") for r in mine]),
            c.spread([r.get("read_lag_p95_ms") for r in mine], 1),
            c.fmt(per[True] / per[False], 2) if per[True] and per[False] else "–",
        ]
        rows.append(cells)
    table = c.md_table(
        (
            "users",
            "CPU % (requests only)",
            "users/core (requests only)",
            "req/s (requests only)",
            "CPU % (with streams)",
            "users/core (with streams)",
            "req/s (with streams)",
            "awaited events/s",
            "read lag p95 ms",
            "users/core ratio",
        ),
        rows,
    )
    params = {
        "reps": reps,
        "levels": levels,
        "step_s": step_s,
        "wait_s": args.wait,
        "exchange": EXCHANGE,
    }
    path = c.Report(
        name="stream_overhead", quick=args.quick, params=params, data={"runs": runs}
    ).write(table)
    print(table)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
