"""The harness's results in words and Markdown (what `perfgate simulate` prints)."""

from __future__ import annotations

from typing import Any


def _part(out: dict[str, Any], name: str) -> str:
    lo, hi = out[f"{name}_ci"]
    return f"{name} {out[name]:.1%} [{lo:.1%}, {hi:.1%}]"


def format_result(out: dict[str, Any]) -> str:
    """One :func:`~perfgate.simulate.simulate` result in one line."""
    design = "windows" if out["repeat"] == 1 else f"repeat {out['repeat']}"
    cal = "calibrated" if out["calibrated"] else "no calibration"
    staging = f"{out['staging']} staging"
    if out["crossover"]:
        staging += f" (cross-over, {out['swap_seconds']:g} s a swap)"
    return (
        f"{out['trials']} simulated gates, capacity loss {out['regression']:.1%} "
        f"({out['mode']}, {design}, {out['interleave']}, {staging}, {cal}, "
        f"{out['strategy']} search, "
        f"{out['noise']['name']} noise, seed {out['seed']}): "
        f"{_part(out, 'block')}, {_part(out, 'pass')}, {_part(out, 'inconclusive')} "
        f"(95 % Clopper-Pearson); load per gate: mean {out['mean_simulated_seconds'] / 60:.1f} "
        f"min, 90th percentile {out['p90_simulated_seconds'] / 60:.1f} min"
    )


def format_table(table: dict[str, Any]) -> str:
    """The operating-characteristic table as Markdown."""
    lines = [
        "| capacity loss | trials | block | pass | inconclusive | mean min / gate | p90 min |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['regression']:.1%} | {r['trials']} | {r['block']:.1%} "
            f"[{r['block_ci'][0]:.1%}, {r['block_ci'][1]:.1%}] | {r['pass']:.1%} "
            f"[{r['pass_ci'][0]:.1%}, {r['pass_ci'][1]:.1%}] | {r['inconclusive']:.1%} | "
            f"{r['mean_simulated_seconds'] / 60:.1f} | {r['p90_simulated_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)
