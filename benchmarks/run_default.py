"""Wall time and verdict of ``perfgate run`` with no options (issue 2: "a few minutes").

Runs the README's command, ``python -m perfgate run`` with no options, in a scratch folder that
holds a copy of ``scenarios/`` (so the default scenario path resolves, ``baselines/`` starts
empty — no baseline yet, the floor alone decides, as on a fresh checkout — and ``reports/`` stays
out of the repo); ``--in-repo`` runs it in the repository root instead (its baselines/ count).
Wall time is launch to exit; the phases come from perfgate's own progress lines (seconds since
the pipeline started: staging, load, analysis, report).

    python benchmarks/run_default.py             # 3 runs, ~6 min
    python benchmarks/run_default.py --quick     # 1 run with --step-seconds 3 (not "no options")
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as c

_PHASE = re.compile(r"^\s*([\d.]+)s (provisioning|ramping|analysing|writing the report)")


def phases(stderr: str) -> dict[str, float]:
    """Seconds since the pipeline started at which each phase began (from progress lines)."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        m = _PHASE.match(line)
        if m and m.group(2) not in out:
            out[m.group(2)] = float(m.group(1))
    return out


def one_run(cwd: Path, extra: tuple[str, ...], idle_timeout_s: float) -> dict[str, Any]:
    idle = c.wait_idle(timeout_s=idle_timeout_s)
    c.note(f"perfgate run {' '.join(extra)} in {cwd} …")
    # no --json either: the command is exactly the README's; result.json is read from the report
    done = c.run((*c.PERFGATE, "run", *extra), timeout_s=900, cwd=cwd, env=c.env_without_perfgate())
    report = re.search(r"report: (\S+index\.html)", done.stderr)
    result: dict[str, Any] = {}
    if report:
        rj = Path(report.group(1)).with_name("result.json")
        if not rj.is_absolute():
            rj = cwd / rj
        if rj.exists():
            result = c.parse_result(rj.read_text()) or {}
    sat = result.get("saturation") or {}
    steps = result.get("steps") or []
    out = {
        "rc": done.rc,
        "wall_s": round(done.wall_s, 1),
        "verdict": result.get("verdict"),
        "reasons": result.get("reasons"),
        "users": sat.get("users"),
        "throughput_rps": sat.get("throughput_rps"),
        "steps": len(steps),
        "step_users": [s.get("users") for s in steps],
        "load_s": c.load_seconds(result) if result else None,
        "phases": phases(done.stderr),
        "generator_limited_at": (result.get("generator") or {}).get("limited_at_users"),
        "idle": idle,
    }
    if not result:
        out["stderr_tail"] = c.last_lines(done.stderr, 5)
    c.note(
        f"verdict {out['verdict']} (exit {done.rc}) in {done.wall_s:.1f} s; "
        f"saturation {c.fmt(out['users'], 1)} users"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run with --step-seconds 3")
    ap.add_argument("--reps", type=int, help="runs (default 3; quick 1)")
    ap.add_argument("--in-repo", action="store_true", help="run in the repository root")
    ap.add_argument("--idle-timeout", type=float, help="max wait for an idle machine (s)")
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    extra = ("--step-seconds", "3") if args.quick else ()
    idle_timeout = c.idle_timeout(args.idle_timeout, args.quick, 300)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-default-") as tmp:
        cwd = c.REPO if args.in_repo else Path(tmp)
        if not args.in_repo:
            shutil.copytree(c.REPO / "scenarios", Path(tmp) / "scenarios")
        for _ in range(reps):
            runs.append(one_run(cwd, extra, idle_timeout))
    rows = [
        (
            i + 1,
            f"{r['wall_s']:.1f}",
            f"{r['verdict']} (exit {r['rc']})",
            c.fmt(r["users"], 1),
            c.fmt(r["throughput_rps"]),
            f"{r['steps']} ({', '.join(str(u) for u in r['step_users'])})",
            c.fmt(r["phases"].get("ramping"), 1),
            c.fmt(r["phases"].get("analysing"), 1),
            c.fmt(r["phases"].get("writing the report"), 1),
        )
        for i, r in enumerate(runs)
    ]
    table = c.md_table(
        (
            "run",
            "wall s",
            "verdict",
            "users at SLO",
            "req/s at SLO",
            "steps (users)",
            "load starts at s",
            "analysis at s",
            "report at s",
        ),
        rows,
    )
    command = "perfgate run " + " ".join(extra) if extra else "perfgate run (no options)"
    summary = (
        f"`{command}` in {'the repository' if args.in_repo else 'a scratch copy of scenarios/'}: "
        f"median wall time {c.fmt(c.median([r['wall_s'] for r in runs]), 1)} s "
        f"(goal: under ~3 minutes)."
    )
    markdown = table + "\n\n" + summary
    print(markdown)
    path = c.Report(
        name="run_default",
        quick=args.quick,
        params={"command": command, "in_repo": args.in_repo, "reps": reps},
        data={"runs": runs},
    ).write(markdown)
    c.note(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
