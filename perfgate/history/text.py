"""What ``perfgate history`` prints: the table, its change points, the change since a reference."""

from __future__ import annotations

import math
from collections.abc import Callable

from perfgate import fmt
from perfgate.baseline.text import Column, text_table
from perfgate.models import History, HistoryRow

__all__ = ["format_history"]


def _interval(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return fmt.MISSING
    text = f"{value:,.0f}"
    return f"{text} ({ci[0]:,.0f}–{ci[1]:,.0f})" if ci is not None else text


def _change(r: HistoryRow) -> str:
    if r.change_log is None:
        return "-" if r.parent is None else f"? ({r.change_how})"
    se = f" ±{100 * (r.change_se or 0):.1f}" if r.change_se is not None else ""
    return f"{fmt.percent(100 * math.expm1(r.change_log))}{se} {r.change_how}"


def _p95_cell(k: int) -> Callable[[HistoryRow], str]:
    def cell(r: HistoryRow) -> str:
        return fmt.ms(r.p95_ms[k][1]) if k < len(r.p95_ms) else fmt.MISSING

    return cell


def _mark(r: HistoryRow) -> str:
    return ("◆ change" if r.change_point else "") + (" ★ reference" if r.reference else "")


def format_history(history: History) -> str:
    """The history table: one line per release, oldest first, then its change points."""
    rows = history.rows
    if not rows:
        return f"{history.scenario}: no releases stored"
    ref = next((r for r in rows if r.release == history.reference), rows[0])
    columns: list[Column[HistoryRow]] = [
        ("release", lambda r: r.release),
        ("stored (UTC)", lambda r: r.time[:16].replace("T", " ")),
        ("users (95 % CI)", lambda r: _interval(r.users, r.users_ci)),
        ("req/s (95 % CI)", lambda r: _interval(r.throughput_rps, r.throughput_ci)),
        ("vs parent (± SE, how)", _change),
        (f"vs {ref.release}", lambda r: fmt.percent(100 * math.expm1(r.level_log - ref.level_log))),
    ]
    for k, level in enumerate(history.p95_levels):
        columns.append((f"p95 @{level}", _p95_cell(k)))
    if any(r.cpu_cores is not None for r in rows):
        columns.append(
            ("SUT CPU", lambda r: fmt.MISSING if r.cpu_cores is None else f"{r.cpu_cores:.2f}")
        )
    if any(_mark(r) for r in rows):
        columns.append(("", _mark))
    lines = [f"{history.scenario}:", text_table(columns, rows)]
    if history.change_points:
        for p in history.change_points:
            test = (
                f"permutation p = {p.p_value:.3f}"
                if p.tested
                else "too few releases for the permutation test"
            )
            lines.append(
                f"change point: {p.release} ({fmt.percent(100 * p.change)}, {p.z:.1f} SE, {test})"
            )
    else:
        lines.append("no change point")
    last = rows[-1]
    lines.append(
        f"since {ref.release}{' (the marked reference)' if ref.reference else ''}: "
        f"{fmt.percent(100 * math.expm1(last.level_log - ref.level_log))} at {last.release} "
        f"(± {100 * math.sqrt(max(last.level_se**2 - ref.level_se**2, 0.0)):.1f} % SE)"
    )
    return "\n".join(lines)
