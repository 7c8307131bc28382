"""Telemetry's overhead on the load generator: req/s with and without it, side by side.

Two ``perfgate ramp`` runs at one fixed level, each against its own embedded reference exchange
(staged by perfgate, so every embedded source runs: the exchange's ``/metrics`` scraped and its
process sampled every 0.5 s), one with the default telemetry and one with ``metrics: {enabled:
false}``, **at the same time**: the two arms share the machine over the same seconds, so the
other work on a shared machine slows both alike (perfgate's own side-by-side idea; which one
is launched first flips every repetition). The
exchanges hold no slot (``service_ms: 0``), so CPU is the limit and any CPU the telemetry takes
shows up as lost req/s. The figure is the median of the per-repetition ratios with / without
(goal: ≥ 0.98, issue 12).

A second, noise-free figure bounds the same thing from below: the CPU one sample of the embedded
sources costs (perfgate's side: ``Recorder.sample_now`` on an idle exchange; the exchange's side:
its process CPU while being scraped), times two samples a second.

    python benchmarks/telemetry_overhead.py            # 10 repetitions, ~5 min
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


def _figures(arm: str, done: c.Finished) -> dict[str, Any]:
    result = c.parse_result(done.stdout) or {}
    steps = result.get("steps") or []
    step = steps[0] if steps else {}
    res = step.get("resources") or {}
    return {
        "arm": arm,
        "rc": done.rc,
        "rps": step.get("throughput_rps"),
        "requests": step.get("requests"),
        "generator_cpu_percent": (step.get("generator") or {}).get("cpu_percent"),
        "readings": len(res.get("readings") or ()),
        "missing": res.get("missing"),
        "error": "" if steps else c.last_lines(done.stderr),
    }


def pair(
    files: dict[str, Path], workdir: Path, timeout_s: float, *, first: str
) -> list[dict[str, Any]]:
    """Both arms at once (``first`` launched first); each one's req/s over its window."""
    idle = c.wait_idle(timeout_s=15.0)  # a busy machine is recorded, not waited out
    procs = {}
    for arm in (first, *(a for a in ARMS if a != first)):
        cmd = (*c.PERFGATE, "ramp", "--scenario", str(files[arm]), "--json",
               "--report-dir", str(workdir / f"r-{arm}"))  # fmt: skip
        procs[arm] = (time.perf_counter(), c.spawn(cmd, cwd=workdir, env=c.env_without_perfgate()))
    out = []
    for arm, (t0, proc) in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        finally:
            c.stop(proc)
        done = c.Finished(
            rc=proc.returncode, stdout=stdout or "", stderr=stderr or "",
            wall_s=time.perf_counter() - t0, timed_out=False,
        )  # fmt: skip
        out.append({**_figures(arm, done), "idle": idle})
    return out


def sample_cost(samples: int = 400) -> dict[str, Any]:
    """CPU of one sample of the embedded sources, on both sides (the exchange idle)."""
    sys.path.insert(0, str(c.REPO))
    import psutil

    from perfgate.telemetry import ExchangeSampler, ProcessSampler, Recorder

    with c.exchange({"service_ms": 0.0}) as (url, pid):
        exchange = ExchangeSampler(url)
        rec = Recorder([exchange, ProcessSampler(lambda: pid, name="exchange", cpu_limit=1.0)])
        server = psutil.Process(pid)
        rec.sample_now()  # connections and imports warm
        before_server = sum(server.cpu_times()[:2])
        t0 = time.process_time()
        for _ in range(samples):
            rec.sample_now()
        ours_ms = (time.process_time() - t0) * 1000 / samples
        server_ms = (sum(server.cpu_times()[:2]) - before_server) * 1000 / samples
        exchange.close()
    per_s = 2  # SAMPLE_S = 0.5
    return {
        "samples": samples,
        "perfgate_cpu_ms_per_sample": round(ours_ms, 3),
        "exchange_cpu_ms_per_sample": round(server_ms, 3),
        "cpu_share_of_one_core": round((ours_ms + server_ms) * per_s / 1000, 5),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=10)
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
            first = ARMS[rep % 2]  # who starts first flips every repetition
            for run in pair(files, workdir, timeout_s=step_s + 120, first=first):
                run["rep"] = rep
                runs.append(run)
                c.note(f"rep {rep} {run['arm']:>7}: {c.fmt(run['rps'])} req/s {run['error']}")
    cost = sample_cost()
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
        "sample_cost": cost,
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
    print(f"one sample of the embedded sources: {cost}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
