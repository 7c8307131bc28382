"""Real A/A on this machine: the same release gated against itself, several times (issue 4).

The default scenario (scenarios/exchange.yaml: realistic mix on the embedded reference exchange,
16 slots × 15.2 ms, floor 250 users, max_regression 10 %) is copied to a temp folder with the
ramp strategy set (adaptive by default, so many runs fit). Run 0 is ``perfgate run --promote
--release aa-base`` into a temp baseline dir; runs 1…N are ``perfgate run --release aa-<i>``
against it: same exchange config, same scenario, a fresh embedded exchange per run, as a real
gate would be run. Every run after the first should pass; a block is a false block. Counts the
verdicts with a 95 % Clopper-Pearson interval on the block rate, and lists each run's saturation
point and candidate/baseline throughput ratio.

    python benchmarks/real_aa.py             # 1 + 8 adaptive runs with 5-s levels, ~10 min
    python benchmarks/real_aa.py --quick     # 1 + 2 runs with 2-s steps, ~2 min
    python benchmarks/real_aa.py --strategy linear --step-seconds 4 --runs 6
    python benchmarks/real_aa.py --exchange-json '{"jitter": 0.3}'   # a noisier target

Note: on the reference exchange throughput at the SLO boundary is the exchange's capacity,
which its virtual clock fixes exactly, so candidate/baseline ratios sit within a fraction of a
percent of 1 and this A/A mostly exercises the pipeline; the users at the SLO vary more.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as c


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float] | None:
    """Exact binomial interval for k successes in n trials (scipy), or None without scipy."""
    if n == 0:
        return None
    try:
        from scipy.stats import beta
    except ImportError:
        return None
    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def gate_run(
    *,
    workdir: Path,
    scenario: Path,
    release: str,
    promote: bool,
    repeat: int,
    idle_timeout_s: float,
    cap_s: float,
) -> dict[str, Any]:
    idle = c.wait_idle(timeout_s=idle_timeout_s)
    c.note(f"A/A: {release} …")
    cmd = [
        *c.PERFGATE,
        "run",
        "--scenario",
        str(scenario),
        "--release",
        release,
        "--baseline-dir",
        str(workdir / "baselines"),
        "--report-dir",
        str(workdir / "reports"),
        "--json",
    ]
    if promote:
        cmd.append("--promote")
    if repeat > 1:
        cmd += ["--repeat", str(repeat)]
    done = c.run(cmd, timeout_s=cap_s, cwd=workdir, env=c.env_without_perfgate())
    result = c.parse_result(done.stdout) or {}
    sat = result.get("saturation") or {}
    diag = result.get("diagnostics") or {}
    base = (result.get("baseline") or {}).get("saturation") or {}
    out = {
        "release": release,
        "rc": done.rc,
        "wall_s": round(done.wall_s, 1),
        "verdict": result.get("verdict"),
        "reasons": result.get("reasons"),
        "users": sat.get("users"),
        "users_ci": sat.get("users_ci"),
        "throughput_rps": sat.get("throughput_rps"),
        "throughput_ci": sat.get("throughput_ci"),
        "baseline_throughput_rps": base.get("throughput_rps"),
        "gate_ratio": diag.get("gate_ratio"),
        "gate_ratio_ci": diag.get("gate_ratio_ci"),
        "steps": len(result.get("steps") or []),
        "generator_limited_at": (result.get("generator") or {}).get("limited_at_users"),
        "rules": [
            {k: r.get(k) for k in ("name", "outcome", "value", "threshold", "margin", "message")}
            for r in result.get("rules") or []
        ],
        "idle": idle,
    }
    if not result:
        out["stderr_tail"] = c.last_lines(done.stderr, 5)
    c.note(
        f"{release}: {out['verdict']} (exit {done.rc}) in {done.wall_s:.0f} s, "
        f"{c.fmt(out['users'], 1)} users, {c.fmt(out['throughput_rps'])} req/s, "
        f"ratio {c.fmt(out['gate_ratio'], 3)}"
        + (f" — {out.get('stderr_tail')}" if not result else "")
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 + 2 runs, 2-s steps (smoke)")
    ap.add_argument("--runs", type=int, help="A/A runs after the baseline (default 8; quick 2)")
    ap.add_argument("--strategy", choices=("adaptive", "linear"), default="adaptive")
    ap.add_argument(
        "--step-seconds",
        type=float,
        help="ramp.step_seconds (default 5; quick 2; the scenario has 8)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="perfgate run --repeat K")
    ap.add_argument(
        "--exchange-json",
        help="extra staging.embedded knobs as JSON, e.g. '{\"jitter\": 0.3}' for a noisier target",
    )
    ap.add_argument("--idle-timeout", type=float, help="max wait for an idle machine (s)")
    args = ap.parse_args(argv)
    n_runs = args.runs if args.runs is not None else (2 if args.quick else 8)
    idle_timeout = c.idle_timeout(args.idle_timeout, args.quick, 300)

    scen = c.default_scenario()
    scen["name"] = "exchange-aa"
    if args.exchange_json:
        scen["staging"]["embedded"] = {
            **scen["staging"]["embedded"],
            **json.loads(args.exchange_json),
        }
    scen["ramp"] = {**scen["ramp"], "strategy": args.strategy}
    # 5-s levels (the scenario has 8 s) so 1 + 8 runs fit in about 10 minutes
    scen["ramp"]["step_seconds"] = args.step_seconds or (2.0 if args.quick else 5.0)
    params = {
        "runs": n_runs,
        "strategy": args.strategy,
        "ramp": scen["ramp"],
        "repeat": args.repeat,
        "staging": scen["staging"],
        "slo": scen["slo"],
        "gate": scen["gate"],
    }
    cap_s = 600.0 * args.repeat
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-aa-") as tmp:
        workdir = Path(tmp)
        path = c.write_scenario(workdir / "exchange-aa.yaml", scen)
        first = gate_run(
            workdir=workdir,
            scenario=path,
            release="aa-base",
            promote=True,
            repeat=args.repeat,
            idle_timeout_s=idle_timeout,
            cap_s=cap_s,
        )
        baseline_stored = any((workdir / "baselines").rglob("*.json"))
        if not baseline_stored:
            c.note(
                "the first run was not stored as a baseline (no pass): A/A runs would have "
                "nothing to compare with; stopping"
            )
        else:
            for i in range(1, n_runs + 1):
                runs.append(
                    gate_run(
                        workdir=workdir,
                        scenario=path,
                        release=f"aa-{i}",
                        promote=False,
                        repeat=args.repeat,
                        idle_timeout_s=idle_timeout,
                        cap_s=cap_s,
                    )
                )
    counts = {
        v: sum(1 for r in runs if r["verdict"] == v) for v in ("pass", "block", "inconclusive")
    }
    counts["error"] = sum(1 for r in runs if r["verdict"] is None)
    n = len(runs)
    ci = clopper_pearson(counts["block"], n)
    all_runs = [first, *runs]
    rows = [
        (
            r["release"],
            r["verdict"] or f"exit {r['rc']}",
            c.fmt(r["users"], 1),
            c.fmt(r["throughput_rps"]),
            c.fmt(r["gate_ratio"], 3),
            (
                f"{r['gate_ratio_ci'][0]:.3f}–{r['gate_ratio_ci'][1]:.3f}"
                if r.get("gate_ratio_ci")
                else "–"
            ),
            r["steps"],
            c.fmt(r["wall_s"], 0),
            ", ".join(f"{x['name']} {x['outcome']}" for x in r.get("rules") or []) or "–",
        )
        for r in all_runs
    ]
    table = c.md_table(
        (
            "release",
            "verdict",
            "users at SLO",
            "req/s at SLO",
            "ratio vs base",
            "ratio CI",
            "steps",
            "wall s",
            "gate rules",
        ),
        rows,
    )
    summary = (
        f"{n} A/A runs against aa-base ({args.strategy}, step {scen['ramp']['step_seconds']} s): "
        f"pass {counts['pass']}, block {counts['block']}, inconclusive {counts['inconclusive']}, "
        f"failed {counts['error']}. False-block rate {counts['block']}/{n}"
        + (f" (95 % CI {ci[0] * 100:.0f}–{ci[1] * 100:.0f} %)" if ci else "")
        + f"; median wall time per run {c.fmt(c.median([r['wall_s'] for r in all_runs]), 0)} s."
    )
    markdown = table + "\n\n" + summary
    print(markdown)
    path = c.Report(
        name="real_aa",
        quick=args.quick,
        params=params,
        data={"baseline_run": first, "runs": runs, "counts": counts, "block_rate_ci": ci},
    ).write(markdown)
    c.note(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
