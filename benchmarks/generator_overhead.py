"""Generator overhead and ceiling: perfgate vs raw Locust vs wrk on a very fast loopback target.

The target is nginx (Debian ``nginx-light``: 1 worker, access log off, a fixed 17-byte JSON body
on ``GET /``, ``stub_status`` for a server-side request counter), or with ``--target exchange``
the reference exchange's ``GET /health`` (no capacity slot; counted by its own middleware). Every
tool runs the same closed-model behaviour — one GET of ``/``, no think time, the same number of
users or connections — for the same time, interleaved within each repetition (the order rotates
from repetition to repetition):

- ``perfgate-w1`` / ``perfgate-w2``: ``perfgate ramp`` at one fixed level (start = max = users),
  ``--workers 1`` / ``2`` (FastHttpUser users generated from the scenario);
- ``locust``: ``locust --headless`` with a one-task FastHttpUser (``self.client.get("/")``);
- ``locust-p2``: the same with ``--processes 2`` (what perfgate-w2 should be compared with);
- ``wrk``: ``wrk -t1 -cUSERS`` (the physical ceiling of one core).

Each run: wait for an idle machine, launch, poll the server counter until requests flow, skip
``settle`` seconds, then count requests at the server over ``window`` seconds, along with the CPU
of the generator's process tree, of the server and of the whole machine (``other`` = the rest:
noise). Each tool's own figure is recorded too (perfgate's step throughput, Locust's JSON stats,
wrk's Requests/sec). Goals: perfgate-w1 ≥ 0.95× locust (issue 2), perfgate-w2 ≥ 1.6× perfgate-w1
where the target is not the limit (issue 6). Ratios are medians of the per-repetition ratios.

    python benchmarks/generator_overhead.py            # 5 reps × 5 tools, ~10 min
    python benchmarks/generator_overhead.py --quick    # 1 rep, short runs, ~2 min
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as c

LOCUSTFILE = '''\
from locust import FastHttpUser, task


class Get(FastHttpUser):
    """One GET, no think time (wait_time defaults to constant(0))."""

    @task
    def get(self):
        self.client.get("{path}")
'''

TOOLS = ("perfgate-w1", "locust", "perfgate-w2", "locust-p2", "wrk")


def tool_command(
    tool: str, *, url: str, path: str, users: int, load_s: float, settle_s: float, workdir: Path
) -> tuple[str, ...]:
    """The command line of one tool, running ``users`` closed-loop users for ``load_s``."""
    if tool.startswith("perfgate"):
        workers = int(tool[-1])
        scen = c.write_scenario(
            workdir / f"{tool}.yaml",
            c.single_get_scenario(
                name="generator-overhead",
                path=path,
                ramp={
                    "strategy": "linear",
                    "start_users": users,
                    "step_users": 1,
                    "max_users": users,
                    "step_seconds": load_s,
                    "settle_seconds": settle_s,
                },
                slo_p95_ms=10_000.0,  # never the reason to stop: this measures the generator
                workers=workers,
            ),
        )
        return (
            *c.PERFGATE,
            "ramp",
            "--scenario",
            str(scen),
            "--target",
            url,
            "--report-dir",
            str(workdir / "reports"),
            "--json",
        )
    if tool.startswith("locust"):
        cmd = (
            "locust",
            "-f",
            str(workdir / "lf_get.py"),
            "--headless",
            "--host",
            url,
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{load_s:g}s",
            "--only-summary",
            "--json-file",
            str(workdir / f"{tool}-stats"),
            "--loglevel",
            "WARNING",
        )
        if tool == "locust-p2":
            # the master binds --master-bind-*; forked workers dial --master-host/--master-port
            port = str(c.free_port())
            cmd += (
                "--processes",
                "2",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                port,
                "--master-host",
                "127.0.0.1",
                "--master-port",
                port,
            )
        return cmd
    if tool == "wrk":
        return ("wrk", "-t1", f"-c{users}", f"-d{load_s:g}s", "--latency", url + path)
    raise ValueError(tool)


def tool_report(tool: str, stdout: str, workdir: Path) -> dict[str, Any]:
    """What the tool itself says it achieved."""
    if tool.startswith("perfgate"):
        result = c.parse_result(stdout) or {}
        steps = result.get("steps") or []
        if not steps:
            return {"rps": None}
        s = steps[0]
        gen = s.get("generator") or {}
        return {
            "rps": s.get("throughput_rps"),
            "requests": s.get("requests"),
            "duration_s": s.get("duration_s"),
            "p50_ms": s.get("p50_ms"),
            "p95_ms": s.get("p95_ms"),
            "failures": s.get("failures"),
            "cpu_percent": gen.get("cpu_percent"),
            "loop_lag_ms": gen.get("loop_lag_ms"),
            "little_ratio": gen.get("little_ratio"),
            "limited": gen.get("limited"),
            "limited_reason": gen.get("reason"),
        }
    if tool.startswith("locust"):
        path = workdir / f"{tool}-stats.json"
        if not path.exists():
            path = workdir / f"{tool}-stats"
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"rps": None}
        n = sum(e.get("num_requests", 0) for e in entries)
        fails = sum(e.get("num_failures", 0) for e in entries)
        t0 = min((e.get("start_time") or 0 for e in entries), default=0)
        t1 = max((e.get("last_request_timestamp") or 0 for e in entries), default=0)
        return {
            "rps": n / (t1 - t0) if t1 > t0 else None,
            "requests": n,
            "failures": fails,
            "duration_s": t1 - t0,
        }
    m = re.search(r"Requests/sec:\s+([\d.]+)", stdout)
    lat = re.search(r"50%\s+([\d.]+)(us|ms|s)", stdout)
    return {"rps": float(m.group(1)) if m else None, "p50": lat.group(0) if lat else None}


def measure(
    tool: str,
    *,
    url: str,
    path: str,
    server_pid: int,
    counter: Callable[[str], int],
    users: int,
    settle_s: float,
    window_s: float,
    workdir: Path,
    idle_timeout_s: float,
) -> dict[str, Any]:
    """One run of one tool; server-side req/s over a steady window, CPU, the tool's own figure."""
    load_s = settle_s + window_s + 4.0  # margin: the window must end before the load does
    cmd = tool_command(
        tool, url=url, path=path, users=users, load_s=load_s, settle_s=settle_s, workdir=workdir
    )
    idle = c.wait_idle(timeout_s=idle_timeout_s)
    base = counter(url)
    t_launch = time.perf_counter()
    proc = c.spawn(cmd, cwd=workdir, env=c.env_without_perfgate())
    out: dict[str, Any] = {"tool": tool, "idle": idle}
    try:
        # requests flow: more than a handful beyond our own polls (perfgate probes the URL once)
        polls, first = 1, None
        deadline = t_launch + 60
        while time.perf_counter() < deadline and proc.poll() is None:
            now = counter(url)
            polls += 1
            if now - base - polls > 20:
                first = time.perf_counter()
                break
            time.sleep(0.02)
        if first is None:
            c.stop(proc)
            _, err = proc.communicate()
            why = c.last_lines(err or "")
            raise RuntimeError(f"{tool}: no load reached the server (exit {proc.poll()}): {why}")
        out["start_s"] = round(first - t_launch, 2)
        time.sleep(settle_s)
        gen_procs = c.tree(proc.pid)
        srv_procs = c.tree(server_pid)
        g0, s0, sys0 = c.cpu_seconds(gen_procs), c.cpu_seconds(srv_procs), c.system_busy_s()
        n0, t0 = counter(url), time.perf_counter()
        time.sleep(window_s)
        n1, t1 = counter(url), time.perf_counter()
        g1, s1, sys1 = c.cpu_seconds(gen_procs), c.cpu_seconds(srv_procs), c.system_busy_s()
        wall = t1 - t0
        gen_total, gen_busiest = c.cpu_delta(g0, g1)
        srv_total, _ = c.cpu_delta(s0, s1)
        out.update(
            server_rps=(n1 - n0 - 1) / wall,  # minus the closing poll itself
            window_s=round(wall, 3),
            generator_cores=gen_total / wall,
            generator_busiest_core=gen_busiest / wall,
            generator_processes=len(g0),
            server_cores=srv_total / wall,
            system_cores=(sys1 - sys0) / wall,
        )
        out["other_cores"] = out["system_cores"] - out["generator_cores"] - out["server_cores"]
        try:
            stdout, stderr = proc.communicate(timeout=load_s + 60)
        except Exception:
            c.stop(proc)
            stdout, stderr = proc.communicate()
        out["rc"] = proc.returncode
        out["wall_s"] = round(time.perf_counter() - t_launch, 2)
        out["reported"] = tool_report(tool, stdout or "", workdir)
        if proc.returncode not in (0, None) and not out["reported"].get("rps"):
            out["stderr_tail"] = c.last_lines(stderr or "", 4)
    finally:
        c.stop(proc)
    c.note(
        f"{tool}: server {out.get('server_rps', 0):,.0f} req/s, tool says "
        f"{c.fmt(out.get('reported', {}).get('rps'))}, "
        f"generator {out.get('generator_cores', 0):.2f} cores, "
        f"other {out.get('other_cores', 0):.2f}"
    )
    return out


def _paired(runs: list[dict[str, Any]], a: str, b: str, key: str = "server_rps") -> list[float]:
    """Per-repetition ratios a/b (both measured in the same repetition)."""
    by_rep: dict[int, dict[str, float]] = {}
    for r in runs:
        v = r.get(key) if key != "reported" else (r.get("reported") or {}).get("rps")
        if v:
            by_rep.setdefault(r["rep"], {})[r["tool"]] = v
    return [d[a] / d[b] for d in by_rep.values() if a in d and b in d]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 repetition, short windows (smoke)")
    ap.add_argument(
        "--target",
        choices=("nginx", "exchange"),
        default=None,
        help="nginx (default when installed) or the exchange's /health",
    )
    ap.add_argument("--users", type=int, default=16, help="users = wrk connections (default 16)")
    ap.add_argument("--reps", type=int, help="repetitions (default 5; quick 1)")
    ap.add_argument("--window", type=float, help="measured seconds per run (default 8; quick 4)")
    ap.add_argument("--settle", type=float, help="skipped seconds per run (default 3; quick 2)")
    ap.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS)
    )
    ap.add_argument("--idle-timeout", type=float, help="max wait for an idle machine (s)")
    args = ap.parse_args(argv)

    reps = args.reps or (1 if args.quick else 5)
    window = args.window or (4.0 if args.quick else 8.0)
    settle = args.settle or (2.0 if args.quick else 3.0)
    idle_timeout = c.idle_timeout(args.idle_timeout, args.quick, 300)
    target = args.target or ("nginx" if c.nginx_binary() else "exchange")
    tools = tuple(t for t in args.tools.split(",") if t)
    if "wrk" in tools and shutil.which("wrk") is None:
        c.note("wrk not found (apt-get install -y wrk): left out")
        tools = tuple(t for t in tools if t != "wrk")
    params = {
        "target": target,
        "path": "/" if target == "nginx" else "/health",
        "users": args.users,
        "reps": reps,
        "settle_s": settle,
        "window_s": window,
        "tools": tools,
        "idle_busy_pct": c.IDLE_BUSY_PCT,
    }
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        workdir = Path(tmp)
        # the exchange's /health holds no capacity slot (every other route does)
        path = "/" if target == "nginx" else "/health"
        (workdir / "lf_get.py").write_text(LOCUSTFILE.format(path=path), encoding="utf-8")
        server = c.nginx() if target == "nginx" else c.exchange({})
        counter = c.nginx_requests if target == "nginx" else c.exchange_requests
        with server as (url, server_pid):
            for rep in range(reps):
                shift = rep % len(tools)
                for tool in tools[shift:] + tools[:shift]:  # rotate: each tool leads in turn
                    c.note(f"rep {rep + 1}/{reps}: {tool}")
                    try:
                        r = measure(
                            tool,
                            url=url,
                            path=path,
                            server_pid=server_pid,
                            counter=counter,
                            users=args.users,
                            settle_s=settle,
                            window_s=window,
                            workdir=workdir,
                            idle_timeout_s=idle_timeout,
                        )
                    except RuntimeError as exc:
                        c.note(str(exc))
                        r = {"tool": tool, "error": str(exc)}
                    r["rep"] = rep
                    runs.append(r)

    def col(tool: str, key: str, digits: int = 0) -> str:
        vals = [r.get(key) for r in runs if r["tool"] == tool]
        return c.spread(vals, digits)

    def reported(tool: str) -> str:
        return c.spread([(r.get("reported") or {}).get("rps") for r in runs if r["tool"] == tool])

    rows = []
    for tool in tools:
        srv = c.median([r.get("server_rps") for r in runs if r["tool"] == tool])
        cores = c.median([r.get("generator_cores") for r in runs if r["tool"] == tool])
        limited = [(r.get("reported") or {}).get("limited") for r in runs if r["tool"] == tool]
        rows.append(
            (
                tool,
                col(tool, "server_rps"),
                reported(tool),
                col(tool, "generator_cores", 2),
                col(tool, "generator_busiest_core", 2),
                c.fmt(srv / cores if srv and cores else None),
                col(tool, "server_cores", 2),
                col(tool, "other_cores", 2),
                col(tool, "start_s", 2),
                "yes" if any(limited) else ("no" if tool.startswith("perfgate") else "–"),
            )
        )
    table = c.md_table(
        (
            "tool",
            "server req/s median (min–max)",
            "tool-reported req/s",
            "generator CPU cores",
            "busiest process cores",
            "req/s per generator core",
            "server cores",
            "other cores (noise)",
            "start s",
            "perfgate flagged generator-limited",
        ),
        rows,
    )
    pairs = {
        "perfgate-w1 / locust": ("perfgate-w1", "locust", 0.95),
        "perfgate-w2 / perfgate-w1": ("perfgate-w2", "perfgate-w1", 1.6),
        "perfgate-w2 / locust-p2": ("perfgate-w2", "locust-p2", 0.95),
        "locust-p2 / locust": ("locust-p2", "locust", None),
        "perfgate-w1 / wrk": ("perfgate-w1", "wrk", None),
        "locust / wrk": ("locust", "wrk", None),
    }
    ratio_rows, ratios = [], {}
    for label, (a, b, goal) in pairs.items():
        if a not in tools or b not in tools:
            continue
        srv = _paired(runs, a, b)
        rep = _paired(runs, a, b, key="reported")
        ratios[label] = {"server": srv, "reported": rep, "goal": goal}
        ratio_rows.append(
            (label, c.spread(srv, 3), c.spread(rep, 3), f"≥ {goal:g}" if goal else "–")
        )
    ratio_table = c.md_table(
        ("ratio (paired per repetition)", "server-side median (min–max)", "tool-reported", "goal"),
        ratio_rows,
    )
    markdown = (
        f"Target: {target}, {args.users} users/connections, {reps} interleaved repetitions, "
        f"{settle:g} s settle + {window:g} s window.\n\n{table}\n\n{ratio_table}"
    )
    print(markdown)
    path = c.Report(
        name="generator_overhead",
        quick=args.quick,
        params=params,
        data={"runs": runs, "ratios": ratios},
    ).write(markdown)
    c.note(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
