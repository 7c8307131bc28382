"""The shipped gate's error rates on real noisy targets: A/A and a 10 % capacity loss (issue 4).

Each gate is the real CLI, side by side, against two real reference exchanges on 127.0.0.1:
``perfgate run --scenario S --target URL1 --baseline-target URL2 --json``, the form for existing
services. Both exchanges (``python -m perfgate.exchange``) run with the noise knobs on: a per-
process Ornstein–Uhlenbeck drift of log capacity (SD 3 %, correlation time 60 s) and noisy-
neighbour episodes (one per 20 s on average, 2 s long, service ×1.5), with a different seed per
process and per gate, so the two builds drift independently and meet neighbours at different
times, as two deployments on a shared machine would. The exchange is small (8 slots × 10 ms ⇒
800 req/s; p95 SLO 250 ms ⇒ boundary ≈ 200 users) and the scenario is the default request mix
with an adaptive search from 20 users in 4-s levels and a 4-minute comparison budget.

Arms: ``aa`` (both exchanges the same release) and ``loss`` (the candidate's service_ms × 1/0.9:
10 % less capacity). Per arm it counts block / pass / inconclusive with 95 % Clopper–Pearson
intervals and the wall time per gate. In ``aa`` a block is a false block; in ``loss`` a pass is
a regression waved through.

    python benchmarks/real_gate.py              # 12 gates per arm: 74 min on 2 shared cores
    python benchmarks/real_gate.py --quick      # 2 gates per arm, 5–15 min
    python benchmarks/real_gate.py --trials 20 --loss 0.05 --episode-slowdown 2

A gate that stops at its first look takes ~80 s; one that runs to its 4-minute budget ~220 s (on
these targets about half do: benchmarks/results/real_gate.json), plus up to 30 s per gate waiting
for a quieter machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as c
from real_aa import clopper_pearson

ARMS = ("aa", "loss")
GATE_CAP_S = 900.0  # a gate is stopped after this long (its budget is 4 min of comparison)


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The default scenario's request mix against an existing target, smaller and faster."""
    base = c.default_scenario()
    return {
        "name": "real-gate",
        "description": "benchmark: default request mix, side by side on noisy exchanges",
        "staging": {"provider": "none"},
        "users": base["users"],
        "ramp": {
            "strategy": "adaptive",
            "start_users": 20,
            "max_users": 600,
            "step_seconds": args.step_seconds,
        },
        "slo": {"p95_ms": args.slo_ms, "error_rate": 0.01},
        "gate": {"max_regression": 0.10, "budget_minutes": args.budget_minutes},
    }


def noise_knobs(args: argparse.Namespace) -> dict[str, float]:
    return {
        "drift_sd": args.drift_sd,
        "drift_tau_s": args.drift_tau_s,
        "episode_per_s": args.episode_per_s,
        "episode_mean_s": args.episode_mean_s,
        "episode_slowdown": args.episode_slowdown,
    }


def exchange_configs(
    args: argparse.Namespace, arm: str, trial: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(candidate, baseline) exchange options: a seed of their own each, per arm and trial."""
    seed = args.seed + 10_000 * ARMS.index(arm) + 2 * trial
    common = {"slots": args.slots, "seed_orders": 200, **noise_knobs(args)}
    loss = args.loss if arm == "loss" else 0.0
    candidate = {**common, "service_ms": args.service_ms / (1 - loss), "random_seed": seed}
    baseline = {**common, "service_ms": args.service_ms, "random_seed": seed + 1}
    return candidate, baseline


def exchange_command(config: dict[str, Any]) -> str:
    """The command ``_common.exchange`` runs (port 0: it reads the bound port from stdout)."""
    return shlex.join(
        [
            *("python", "-m", "perfgate.exchange", "--host", "127.0.0.1", "--port", "0"),
            *("--exit-with-parent", "--config-json", json.dumps(config)),
        ]
    )


def gate_command(scen: Path, target: str, baseline: str, release: str, tmp: Path) -> list[str]:
    return [
        *c.PERFGATE,
        "run",
        *("--scenario", str(scen), "--target", target, "--baseline-target", baseline),
        *("--release", release, "--baseline-dir", str(tmp / "baselines")),
        *("--report-dir", str(tmp / "reports"), "--json"),
    ]


def _look(look: dict[str, Any]) -> dict[str, Any]:
    keys = ("pairs", "ratio", "ratio_lo", "ratio_hi", "se_log", "df", "outcome", "elapsed_s")
    return {k: look.get(k) for k in keys}


WINDOW_KEYS = ("build", "pair", "users", "duration_s", "goodput_rps", "p95_ms", "started_s")


def _windows(result: dict[str, Any]) -> list[list[Any]]:
    """The side-by-side windows, one compact row each (``WINDOW_KEYS``, then generator-limited)."""
    rows = []
    for w in result.get("windows") or []:
        row = [w.get(k) for k in WINDOW_KEYS]
        rows.append(
            [*(round(v, 2) if isinstance(v, float) else v for v in row), w.get("generator_limited")]
        )
    return rows


def summarise_result(result: dict[str, Any]) -> dict[str, Any]:
    """What one gate's result.json says: verdict, ratio and bounds, looks, boundary, rules."""
    diag = result.get("diagnostics") or {}
    sat = result.get("saturation") or {}
    looks = [_look(x) for x in result.get("looks") or []]
    last = looks[-1] if looks else {}
    return {
        "verdict": result.get("verdict"),
        "reasons": result.get("reasons"),
        "gate_ratio": diag.get("gate_ratio"),
        "gate_ratio_ci": diag.get("gate_ratio_ci"),
        "ratio_lo": last.get("ratio_lo"),
        "ratio_hi": last.get("ratio_hi"),
        "looks": looks,
        "windows": _windows(result),
        "users_at_slo": sat.get("users"),
        "throughput_at_slo": sat.get("throughput_rps"),
        "steps": len(result.get("steps") or []),
        "rules": [
            {k: r.get(k) for k in ("name", "outcome", "value", "threshold", "message")}
            for r in result.get("rules") or []
        ],
    }


def one_gate(args: argparse.Namespace, scen: Path, arm: str, trial: int) -> dict[str, Any]:
    """Start both exchanges, run the gate, stop both; what it decided and how long it took."""
    idle = c.wait_idle(timeout_s=args.idle_timeout, log=False)
    cand_cfg, base_cfg = exchange_configs(args, arm, trial)
    release = f"{arm}-{trial}"
    with (
        tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp,
        c.exchange(cand_cfg) as (cand_url, cand_pid),
        c.exchange(base_cfg) as (base_url, base_pid),
    ):
        cmd = gate_command(scen, cand_url, base_url, release, Path(tmp))
        done = c.run(cmd, timeout_s=GATE_CAP_S, cwd=Path(tmp), env=c.env_without_perfgate())
    result = c.parse_result(done.stdout) or {}
    out: dict[str, Any] = {
        "arm": arm,
        "trial": trial,
        "rc": done.rc,
        "timed_out": done.timed_out,
        "wall_s": round(done.wall_s, 1),
        **summarise_result(result),
        "exchanges": {"candidate": cand_cfg, "baseline": base_cfg, "pids": [cand_pid, base_pid]},
        "command": shlex.join(["perfgate", *cmd[len(c.PERFGATE) :]]),
        "loadavg_before": idle["loadavg_1m"],
        "busy_pct_before": idle["busy_pct"],
        "loadavg_after": round(os.getloadavg()[0], 2),
    }
    if not result or done.rc not in (0, 1, 4):
        out["stderr_tail"] = c.last_lines(done.stderr, 8)
    c.note(
        f"{release}: {out['verdict']} (exit {done.rc}) in {done.wall_s:.0f} s, ratio "
        f"{c.fmt(out['gate_ratio'], 3)} [{c.fmt(out['ratio_lo'], 3)}, {c.fmt(out['ratio_hi'], 3)}]"
        f", {len(out['looks'])} looks, {c.fmt(out['users_at_slo'], 0)} users at SLO, "
        f"load {out['loadavg_before']}"
        + (f" — {out['stderr_tail']}" if "stderr_tail" in out else "")
    )
    return out


def _pct_ci(k: int, n: int) -> str:
    ci = clopper_pearson(k, n)
    share = f"{k}/{n}"
    return f"{share} [{ci[0] * 100:.0f}, {ci[1] * 100:.0f} %]" if ci else share


def arm_summary(gates: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts with 95 % Clopper–Pearson intervals, and wall seconds per gate."""
    n = len(gates)
    out: dict[str, Any] = {"gates": n}
    for verdict in ("block", "pass", "inconclusive"):
        k = sum(1 for g in gates if g["verdict"] == verdict)
        out[verdict] = {"count": k, "ci95": clopper_pearson(k, n)}
    out["failed"] = sum(1 for g in gates if g["verdict"] is None)
    walls = [g["wall_s"] for g in gates]
    out["mean_wall_s"] = round(statistics.fmean(walls), 1) if walls else None
    out["max_wall_s"] = max(walls, default=None)
    ratios = [g["gate_ratio"] for g in gates if g["gate_ratio"] is not None]
    out["median_gate_ratio"] = statistics.median(ratios) if ratios else None
    return out


def markdown(summaries: dict[str, dict[str, Any]], gates: list[dict[str, Any]]) -> str:
    rows = [
        (
            arm,
            s["gates"],
            _pct_ci(s["block"]["count"], s["gates"]),
            _pct_ci(s["pass"]["count"], s["gates"]),
            _pct_ci(s["inconclusive"]["count"], s["gates"]),
            s["failed"],
            c.fmt(s["median_gate_ratio"], 3),
            c.fmt(s["mean_wall_s"], 0),
            c.fmt(s["max_wall_s"], 0),
        )
        for arm, s in summaries.items()
    ]
    head = ("arm", "gates", "block", "pass", "inconclusive", "failed", "median ratio")
    table = c.md_table((*head, "mean s/gate", "max s/gate"), rows)
    detail = c.md_table(
        ("gate", "verdict", "exit", "ratio", "bounds (last look)", "looks: pairs", "users", "s"),
        [
            (
                f"{g['arm']}-{g['trial']}",
                g["verdict"] or "–",
                g["rc"],
                c.fmt(g["gate_ratio"], 3),
                f"{c.fmt(g['ratio_lo'], 3)}–{c.fmt(g['ratio_hi'], 3)}",
                ", ".join(str(x["pairs"]) for x in g["looks"]) or "–",
                c.fmt(g["users_at_slo"], 0),
                c.fmt(g["wall_s"], 0),
            )
            for g in gates
        ],
    )
    return table + "\n\n" + detail


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 gates per arm (smoke)")
    ap.add_argument("--trials", type=int, help="gates per arm (default 12; quick 2)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated: aa, loss")
    ap.add_argument("--loss", type=float, default=0.10, help="the loss arm's capacity loss")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--service-ms", type=float, default=10.0)
    ap.add_argument("--slo-ms", type=float, default=250.0, help="p95 SLO")
    ap.add_argument("--step-seconds", type=float, default=4.0)
    ap.add_argument("--budget-minutes", type=float, default=4.0)
    ap.add_argument("--drift-sd", type=float, default=0.03)
    ap.add_argument("--drift-tau-s", type=float, default=60.0)
    ap.add_argument("--episode-per-s", type=float, default=1 / 20)
    ap.add_argument("--episode-mean-s", type=float, default=2.0)
    ap.add_argument("--episode-slowdown", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=1, help="first exchange seed")
    ap.add_argument("--idle-timeout", type=float, help="max wait for a quiet machine (s)")
    ap.add_argument("--note", default="", help="how this run was made, kept in the JSON")
    args = ap.parse_args(argv)
    args.trials = args.trials if args.trials is not None else (2 if args.quick else 12)
    args.idle_timeout = c.idle_timeout(args.idle_timeout, args.quick, 30.0)
    args.arms = tuple(a for a in args.arms.split(",") if a)
    if not args.arms or not set(args.arms) <= set(ARMS):
        ap.error(f"--arms: choose from {', '.join(ARMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scen = scenario(args)
    load_start = [round(x, 2) for x in os.getloadavg()]
    c.note(f"load average at start {load_start}; {args.trials} gates per arm {args.arms}")
    gates: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-real-gate-") as tmp:
        path = c.write_scenario(Path(tmp) / "real-gate.yaml", scen)
        # Alternate the arms so that a change of the machine's load hits both alike.
        for trial in range(1, args.trials + 1):
            for arm in args.arms:
                gates.append(one_gate(args, path, arm, trial))
    summaries = {arm: arm_summary([g for g in gates if g["arm"] == arm]) for arm in args.arms}
    text = markdown(summaries, gates)
    load_end = [round(x, 2) for x in os.getloadavg()]
    text += f"\n\nLoad average (1, 5, 15 min): {load_start} at start, {load_end} at the end."
    print(text)
    example_cand, example_base = exchange_configs(args, args.arms[-1], 1)
    params = {
        "note": args.note,
        "trials_per_arm": args.trials,
        "arms": {"aa": 0.0, "loss": args.loss},
        "scenario": scen,
        "exchange_noise": noise_knobs(args),
        "exchange": {"slots": args.slots, "service_ms": args.service_ms},
        "window_columns": [*WINDOW_KEYS, "generator_limited"],
        "seeds": "candidate seed + 10000·arm + 2·trial, baseline that + 1",
        "commands": {
            "benchmark": shlex.join(["python", "benchmarks/real_gate.py", *(argv or sys.argv[1:])]),
            "candidate_exchange": exchange_command(example_cand),
            "baseline_exchange": exchange_command(example_base),
            "gate": gates[0]["command"] if gates else None,
        },
    }
    data = {"load_average": {"start": load_start, "end": load_end}, "arms": summaries}
    out = c.Report(name="real_gate", quick=args.quick, params=params, data={**data, "gates": gates})
    c.note(f"wrote {out.write(text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
