"""Change points and the drift rule on simulated release histories (the figures in docs/history.md).

Each history is 12 releases. A release's link — its gate's estimate against the one before —
is the true change plus noise of the SD the published gates show (docs/verdict.md §6, the A/A
spread of the estimate): side by side 0.27 % (`shared`, the tuning profile), 0.44 %
(`proc-drift`), 0.82 % (`throttled`), 2.15 % (`process-episodes`, the worst held-out profile);
or no link at all, only stored numbers across sessions at 6.85 % (the stored-numbers arm). Every
history goes through the code `perfgate history` and the gate run: `perfgate.history.build`
(the table, E-divisive change points) and `perfgate.gate.drift.drift_rule`.

Arms, per noise level, 500 histories each:

* **noise only**: no change. A change point anywhere is false.
* **three 4 % steps** at releases 4, 7 and 10: how often exactly those three are found, and
  how often a change point is found anywhere else.
* **drift rule** (``max_drift`` 10 %, reference the best of the last 10): each release gated
  with the history before it. Three 4 % steps (11.5 % below the start from release 10 on): how
  often release 10 (the crossing) and release 11 are blocked. Two 4 % steps (7.8 %, within the
  allowance): how often any release is blocked (false).

    python benchmarks/history_changepoints.py            # 500 histories per arm, ~3 min
    python benchmarks/history_changepoints.py --histories 100
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfgate import history as hist  # noqa: E402
from perfgate.gate import drift  # noqa: E402
from perfgate.history.table import Entry  # noqa: E402
from perfgate.models import GateSpec, Link, Saturation  # noqa: E402
from perfgate.simulate import clopper_pearson  # noqa: E402

RELEASES = 12
STEP = math.log(0.96)
STEPS_AT = (4, 7, 10)
# (name, SD of a link's log ratio, or None: stored numbers only with this between-session SD)
NOISE = (
    ("side by side, shared (tuning)", 0.0027, None),
    ("side by side, proc-drift", 0.0044, None),
    ("side by side, throttled", 0.0082, None),
    ("side by side, process-episodes", 0.0215, None),
    ("stored numbers only", None, 0.0685),
)


def entries_of(
    changes: list[float], link_sd: float | None, stored_sd: float | None, rng: np.random.Generator
) -> list[Entry]:
    """One simulated history: true ln changes per release, observed with the arm's noise."""
    entries, level = [], 0.0
    for i, d in enumerate(changes):
        level += d
        x = 1000.0 * math.exp(level + (rng.normal(0, stored_sd) if stored_sd else 0.0))
        link = None
        if i and link_sd is not None:
            seen = d + float(rng.normal(0, link_sd))
            link = Link(release=f"r{i - 1}", mode="side-by-side", log_ratio=seen, se_log=link_sd)
        sat = Saturation(users=x / 2, throughput_rps=x, broken=True, reason="")
        entries.append(
            Entry(
                release=f"r{i}",
                time=f"2026-01-{i + 1:02d}T00:00:00Z",
                source="baseline",
                verdict="pass",
                saturation=sat,
                steps=(),
                link=link,
            )
        )
    return entries


def build(entries: list[Entry], stored_sd: float | None, seed: int) -> hist.History:
    return hist.build("bench", entries, between_sd=stored_sd or 0.04, seed=seed)


def steps(n_steps: int) -> list[float]:
    return [STEP if i in STEPS_AT[:n_steps] else 0.0 for i in range(RELEASES)]


def drift_blocks(
    entries: list[Entry], stored_sd: float | None, seed: int, releases: range
) -> list[int]:
    """Releases k gated against k−1 with rows 0…k−1 stored (and their own change points), the
    gate's estimate being release k's link: those the drift rule blocks."""
    spec = GateSpec(max_drift=0.10)
    full = build(entries, stored_sd, seed)
    blocked = []
    for k in releases:
        row = full.rows[k]
        if row.change_log is None:
            continue
        past = build(entries[:k], stored_sd, seed)
        rule = drift.drift_rule(
            gate=spec,
            history=past,
            baseline_release=f"r{k - 1}",
            m=row.change_log,
            se=row.change_se,
        )
        if rule.outcome == "fail":
            blocked.append(k)
    return blocked


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n)
    return {"count": k, "of": n, "rate": k / n, "ci95": [lo, hi]}


def run_arm(name: str, link_sd: float | None, stored_sd: float | None, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(2026)
    false_any = exact = elsewhere = cross = after = false_drift = 0
    for t in range(n):
        noise = build(entries_of(steps(0), link_sd, stored_sd, rng), stored_sd, t)
        false_any += bool(noise.change_points)
        three_entries = entries_of(steps(3), link_sd, stored_sd, rng)
        found = [p.index for p in build(three_entries, stored_sd, t).change_points]
        exact += found == list(STEPS_AT)
        elsewhere += any(i not in STEPS_AT for i in found)
        blocked = drift_blocks(three_entries, stored_sd, t, range(10, RELEASES))
        cross += 10 in blocked
        after += 11 in blocked
        two = entries_of(steps(2), link_sd, stored_sd, rng)
        false_drift += bool(drift_blocks(two, stored_sd, t, range(1, RELEASES)))
    return {
        "noise": name,
        "link_sd": link_sd,
        "stored_sd": stored_sd,
        "noise_only_false_change_point": rate(false_any, n),
        "three_steps_found_exactly": rate(exact, n),
        "three_steps_change_point_elsewhere": rate(elsewhere, n),
        "drift_blocks_the_crossing_release": rate(cross, n),
        "drift_blocks_the_release_after": rate(after, n),
        "two_steps_any_release_blocked": rate(false_drift, n),
    }


def pct(r: dict[str, Any]) -> str:
    return f"{100 * r['rate']:.1f} % [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/history.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    arms = [run_arm(name, link, stored, args.histories) for name, link, stored in NOISE]
    print(
        "| noise (SD per release) | false change point, noise only | three 4 % steps found "
        "exactly | change point elsewhere | drift blocks release 10 (11.5 %) | release 11 "
        "| false drift block, two steps (7.8 %) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for a in arms:
        sd = a["link_sd"] if a["link_sd"] is not None else a["stored_sd"]
        print(
            f"| {a['noise']} ({100 * sd:.2f} %) | {pct(a['noise_only_false_change_point'])} "
            f"| {pct(a['three_steps_found_exactly'])} "
            f"| {pct(a['three_steps_change_point_elsewhere'])} "
            f"| {pct(a['drift_blocks_the_crossing_release'])} "
            f"| {pct(a['drift_blocks_the_release_after'])} "
            f"| {pct(a['two_steps_any_release_blocked'])} |"
        )
    wall = time.perf_counter() - t0
    doc = {
        "benchmark": "history_changepoints",
        "histories": args.histories,
        "command": "python " + " ".join(sys.argv),
        "wall_s": round(wall, 1),
        "arms": arms,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{wall:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
