"""Peak memory of perfgate for a long run vs a short run at a fixed user level (issue 6).

A reference exchange (8 slots × 15.2 ms ≈ 526 req/s) is loaded by ``perfgate ramp`` with the
default scenario's request mix (order books, orders, cancels, balances) at one fixed level of
100 users — a single level lasting the whole run, so nothing but run length differs — once for
the short and once for the long duration. RSS of the perfgate CLI process and of its load
engine child (and any other descendant) is sampled every 0.5 s from /proc via psutil. Reported:
peak of the sum, peaks per process, the peak while load ran (engine alive) and after (report
rendering), and the engine's RSS growth over the load (least-squares slope after the first 20 s,
MB per minute). Goal: the long run's peak roughly equals the short run's, and ≤ 300 MB.

    python benchmarks/memory.py            # 60 s and 600 s, ~12 min
    python benchmarks/memory.py --quick    # 20 s and 60 s, ~1.5 min
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as c
import psutil

USERS = 100
EXCHANGE = {"slots": 8, "service_ms": 15.2}
MB = 1024 * 1024


class Sampler(threading.Thread):
    """Samples RSS of a process tree every ``interval_s`` until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            parent = engine = other = 0
            n = 0
            for p in c.tree(self.pid):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    rss = p.memory_info().rss
                    n += 1
                    if p.pid == self.pid:
                        parent = rss
                    elif "perfgate.load.engine" in " ".join(p.cmdline()):
                        engine += rss
                    else:
                        other += rss
            if n:
                self.samples.append(
                    {
                        "t_s": round(time.perf_counter() - self._t0, 2),
                        "parent_mb": parent / MB,
                        "engine_mb": engine / MB,
                        "other_mb": other / MB,
                        "total_mb": (parent + engine + other) / MB,
                    }
                )
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / sxx


def one_run(url: str, workdir: Path, duration_s: float, idle_timeout_s: float) -> dict[str, Any]:
    """``perfgate ramp`` at USERS for ``duration_s``; RSS samples and their summary."""
    scen = c.default_scenario()
    scen.update(
        name="memory",
        staging={"provider": "none"},
        ramp={
            "strategy": "linear",
            "start_users": USERS,
            "step_users": 1,
            "max_users": USERS,
            "step_seconds": duration_s,
            "settle_seconds": 3,
        },
        slo={"p95_ms": 2000, "error_rate": 0.05},
        gate={"max_regression": 0.10},
    )
    path = c.write_scenario(workdir / f"memory-{duration_s:g}.yaml", scen)
    idle = c.wait_idle(timeout_s=idle_timeout_s)
    c.note(f"memory: {duration_s:g} s at {USERS} users …")
    cmd = (
        *c.PERFGATE,
        "ramp",
        "--scenario",
        str(path),
        "--target",
        url,
        "--report-dir",
        str(workdir / "reports"),
        "--json",
    )
    t0 = time.perf_counter()
    proc = c.spawn(cmd, cwd=c.REPO, env=c.env_without_perfgate())
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=duration_s + 120)
    except Exception:
        c.stop(proc)
        stdout, stderr = proc.communicate()
    finally:
        sampler.stop()
        c.stop(proc)
    wall = time.perf_counter() - t0
    result = c.parse_result(stdout or "") or {}
    steps = result.get("steps") or []
    s = sampler.samples
    load = [x for x in s if x["engine_mb"] > 0]
    after = [x for x in s if load and x["t_s"] > load[-1]["t_s"]]
    t_load0 = load[0]["t_s"] if load else 0.0
    growth = [(x["t_s"], x["engine_mb"]) for x in load if x["t_s"] - t_load0 >= 20]
    parent_growth = [(x["t_s"], x["parent_mb"]) for x in load if x["t_s"] - t_load0 >= 20]
    out = {
        "duration_s": duration_s,
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "requests": sum(st.get("requests", 0) for st in steps),
        "throughput_rps": steps[0].get("throughput_rps") if steps else None,
        "p95_ms": steps[0].get("p95_ms") if steps else None,
        "peak_total_mb": max((x["total_mb"] for x in s), default=None),
        "peak_parent_mb": max((x["parent_mb"] for x in s), default=None),
        "peak_engine_mb": max((x["engine_mb"] for x in s), default=None),
        "peak_during_load_mb": max((x["total_mb"] for x in load), default=None),
        "peak_after_load_mb": max((x["total_mb"] for x in after), default=None),
        "engine_mb_at_20s": growth[0][1] if growth else None,
        "engine_mb_at_end": load[-1]["engine_mb"] if load else None,
        "engine_slope_mb_per_min": _slope_mb_per_min(growth),
        "parent_slope_mb_per_min": _slope_mb_per_min(parent_growth),
        "samples": len(s),
        "series": s[:: max(1, len(s) // 400)],  # at most ~400 points in the JSON
        "idle": idle,
    }
    if proc.returncode != 0:
        out["stderr_tail"] = c.last_lines(stderr or "", 4)
    c.note(
        f"memory {duration_s:g} s: peak {c.fmt(out['peak_total_mb'], 1)} MB "
        f"(engine {c.fmt(out['peak_engine_mb'], 1)}, parent {c.fmt(out['peak_parent_mb'], 1)}), "
        f"{out['requests']:,} requests, exit {proc.returncode}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 s vs 60 s instead of 60 s vs 600 s")
    ap.add_argument("--short", type=float, help="short run seconds (default 60; quick 20)")
    ap.add_argument("--long", type=float, help="long run seconds (default 600; quick 60)")
    ap.add_argument("--idle-timeout", type=float, help="max wait for an idle machine (s)")
    args = ap.parse_args(argv)
    short = args.short or (20.0 if args.quick else 60.0)
    long_ = args.long or (60.0 if args.quick else 600.0)
    idle_timeout = c.idle_timeout(args.idle_timeout, args.quick, 300)
    params = {
        "users": USERS,
        "exchange": EXCHANGE,
        "short_s": short,
        "long_s": long_,
        "scenario": "scenarios/exchange.yaml requests, one fixed level",
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp, c.exchange(EXCHANGE) as (url, _):
        for duration in (short, long_):
            runs.append(one_run(url, Path(tmp), duration, idle_timeout))
    rows = [
        (
            f"{r['duration_s']:g} s",
            f"{r['requests']:,}",
            c.fmt(r["throughput_rps"]),
            c.fmt(r["peak_total_mb"], 1),
            c.fmt(r["peak_during_load_mb"], 1),
            c.fmt(r["peak_after_load_mb"], 1),
            c.fmt(r["peak_parent_mb"], 1),
            c.fmt(r["peak_engine_mb"], 1),
            f"{c.fmt(r['engine_mb_at_20s'], 1)} → {c.fmt(r['engine_mb_at_end'], 1)}",
            c.fmt(r["engine_slope_mb_per_min"], 2, sign=True),
            c.fmt(r["parent_slope_mb_per_min"], 2, sign=True),
            r["rc"],
        )
        for r in runs
    ]
    table = c.md_table(
        (
            "run",
            "requests",
            "req/s",
            "peak total MB",
            "peak during load",
            "peak after load (report)",
            "peak CLI MB",
            "peak engine MB",
            "engine MB 20 s → end",
            "engine MB/min",
            "CLI MB/min",
            "exit",
        ),
        rows,
    )
    ratio = (
        runs[1]["peak_total_mb"] / runs[0]["peak_total_mb"]
        if runs[0]["peak_total_mb"] and runs[1]["peak_total_mb"]
        else None
    )
    markdown = (
        f"{USERS} users, default request mix, exchange {EXCHANGE['slots']} slots × "
        f"{EXCHANGE['service_ms']} ms; RSS of CLI + engine sampled every 0.5 s.\n\n{table}\n\n"
        f"peak ratio long/short: {c.fmt(ratio, 2)} (goal ≈ 1; peak ≤ 300 MB)."
    )
    print(markdown)
    path = c.Report(name="memory", quick=args.quick, params=params, data={"runs": runs}).write(
        markdown
    )
    c.note(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
