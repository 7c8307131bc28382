"""The history table: one row per release, built with pandas (the only module that imports it).

Input is plain records (:class:`Entry`, one per stored baseline or saved result.json); output is
:class:`perfgate.models.HistoryRow` records, so what crosses the boundary to the gate and the
report is plain data. pandas does the table work: keeping one row per release (the stored
baseline over a result.json of the same release, the newest result otherwise), ordering by
time, p95 at fixed user levels from every release's steps (a median per level, interpolated),
the system under test's resources at the boundary where telemetry recorded them, and the CSV
export.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from perfgate.gate.drift import MIN_LINK_SE
from perfgate.models import HistoryRow, Link, Saturation, StepStats
from perfgate.readings import by_series

__all__ = ["Entry", "build_rows", "p95_levels", "to_csv"]

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class Entry:
    """One release as stored: a baseline file or a saved result.json."""

    release: str
    time: str
    source: str  # baseline | result
    verdict: str
    saturation: Saturation
    steps: tuple[StepStats, ...]
    link: Link | None


def _frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """One row per release, oldest first: a baseline wins over results of its release."""
    df = pd.DataFrame(
        {
            "release": [e.release for e in entries],
            "time": pd.to_datetime([e.time for e in entries], utc=True, format="ISO8601"),
            "is_baseline": [e.source == "baseline" for e in entries],
            "entry": list(range(len(entries))),
        }
    )
    df = df.sort_values(["is_baseline", "time"]).drop_duplicates("release", keep="last")
    return df.sort_values(["time", "entry"]).reset_index(drop=True)


def p95_levels(entries: Sequence[Entry]) -> tuple[int, ...]:
    """Three fixed user levels for the p95 columns: ½, ¾ and 1 × the median saturation users,
    rounded to tens (so every release is read at the same loads)."""
    users = pd.Series([e.saturation.users for e in entries], dtype="float64").dropna()
    if users.empty:
        return ()
    median = float(users.median())
    levels = {max(1, round(median * f / 10.0) * 10) for f in (0.5, 0.75, 1.0)}
    return tuple(sorted(levels))


def _p95_at(entries: Sequence[Entry], levels: tuple[int, ...]) -> dict[int, list[float | None]]:
    """Each entry's p95 at ``levels``, interpolated between its measured levels (repeated
    levels: their median); None outside what it measured."""
    steps = pd.DataFrame(
        [
            (i, s.users, s.p95_ms)
            for i, e in enumerate(entries)
            for s in e.steps
            if s.p95_ms is not None
        ],
        columns=["entry", "users", "p95_ms"],
    )
    curves = steps.groupby(["entry", "users"])["p95_ms"].median().reset_index()
    out: dict[int, list[float | None]] = {}
    for i in range(len(entries)):
        curve = curves[curves["entry"] == i]
        xs, ys = curve["users"].to_numpy(float), curve["p95_ms"].to_numpy(float)
        out[i] = [
            float(np.interp(level, xs, ys)) if len(xs) and xs[0] <= level <= xs[-1] else None
            for level in levels
        ]
    return out


def _resources(e: Entry) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    """The system under test's CPU and resource utilisations at the boundary: the highest
    passing level at or below the saturation point (where telemetry recorded them)."""
    users = e.saturation.users
    passing = [s for s in e.steps if s.slo_ok and (users is None or s.users <= users)]
    step = max(passing, key=lambda s: s.users, default=None)
    if step is None or step.resources is None:
        return None, ()
    found = tuple(  # by series: one column per workload, whatever its pods were called
        (name, r.utilisation)
        for name, r in by_series(step.resources).items()
        if r.utilisation is not None
    )
    return step.resources.cpu_cores, found


def _log_x(s: Saturation) -> float | None:
    x = s.throughput_rps
    return math.log(x) if x is not None and x > 0 else None


def build_rows(
    entries: Sequence[Entry], *, between_sd: float, reference: str | None
) -> tuple[tuple[HistoryRow, ...], tuple[int, ...]]:
    """The history's rows (oldest first) and the user levels of their p95 columns.

    Each row's level is chained from its parent: the release its gate judged it against, with
    that gate's estimate (side by side, stored or replicates; its standard error at least
    ``MIN_LINK_SE``) when the parent is in the table;
    otherwise the previous row, by the two stored throughputs with the between-session SD
    ``between_sd`` on each (the stored-numbers comparison).
    """
    df = _frame(entries)
    kept = [entries[int(i)] for i in df["entry"]]
    levels = p95_levels(kept)
    p95 = _p95_at(kept, levels)
    rows: list[HistoryRow] = []
    by_name: dict[str, HistoryRow] = {}
    for i, e in enumerate(kept):
        parent, change, se, how = _chain(e, rows, by_name, between_sd)
        base_level = by_name[parent].level_log if parent else 0.0
        base_se = by_name[parent].level_se if parent else 0.0
        cpu, utilisation = _resources(e)
        row = HistoryRow(
            release=e.release,
            time=df["time"].iloc[i].isoformat(),
            source="baseline" if e.source == "baseline" else "result",
            verdict=e.verdict,
            users=e.saturation.users,
            users_ci=e.saturation.users_ci,
            throughput_rps=e.saturation.throughput_rps,
            throughput_ci=e.saturation.throughput_ci,
            censored=e.saturation.censored,
            parent=parent,
            change_log=change,
            change_se=se,
            change_how=how,
            level_log=base_level + (change or 0.0),
            level_se=math.hypot(base_se, se or 0.0),
            p95_ms=tuple(zip(levels, p95[i], strict=True)),
            cpu_cores=cpu,
            utilisation=utilisation,
            reference=e.release == reference,
        )
        rows.append(row)
        by_name[e.release] = row
    return tuple(rows), levels


def _chain(
    e: Entry, rows: list[HistoryRow], by_name: dict[str, HistoryRow], between_sd: float
) -> tuple[str | None, float | None, float | None, str]:
    """(parent, ln change, its SE, how it was measured) of ``e`` given the rows before it."""
    if e.link is not None and e.link.release in by_name:
        se = max(e.link.se_log, MIN_LINK_SE)
        return e.link.release, e.link.log_ratio, se, e.link.mode
    if not rows:
        return None, None, None, ""
    prev = rows[-1]
    here = _log_x(e.saturation)
    there = math.log(prev.throughput_rps) if prev.throughput_rps else None
    if here is None or there is None:
        return prev.release, None, None, "not measured"
    return prev.release, here - there, math.sqrt(2.0) * between_sd, "stored numbers"


def to_csv(rows: Sequence[HistoryRow], levels: Sequence[int]) -> str:
    """The table as CSV: one line per release, intervals as lo/hi columns, p95 per level."""

    def pair(v: tuple[float, float] | None, k: int) -> float | None:
        return v[k] if v is not None else None

    df = pd.DataFrame(
        {
            "release": [r.release for r in rows],
            "time": [r.time for r in rows],
            "source": [r.source for r in rows],
            "verdict": [r.verdict for r in rows],
            "users": [r.users for r in rows],
            "users_lo": [pair(r.users_ci, 0) for r in rows],
            "users_hi": [pair(r.users_ci, 1) for r in rows],
            "throughput_rps": [r.throughput_rps for r in rows],
            "throughput_lo": [pair(r.throughput_ci, 0) for r in rows],
            "throughput_hi": [pair(r.throughput_ci, 1) for r in rows],
            "censored": [r.censored for r in rows],
            "parent": [r.parent for r in rows],
            "change": [None if r.change_log is None else math.expm1(r.change_log) for r in rows],
            "change_se_log": [r.change_se for r in rows],
            "change_how": [r.change_how for r in rows],
            "level": [math.exp(r.level_log) for r in rows],
            "level_se_log": [r.level_se for r in rows],
            "change_point": [r.change_point for r in rows],
            "reference": [r.reference for r in rows],
        }
    )
    for k, level in enumerate(levels):
        df[f"p95_ms_at_{level}"] = [r.p95_ms[k][1] if k < len(r.p95_ms) else None for r in rows]
    df["cpu_cores"] = [r.cpu_cores for r in rows]
    used = pd.DataFrame([dict(r.utilisation) for r in rows], index=df.index)
    for name in used.columns:
        df[f"utilisation: {name}"] = used[name]
    return str(df.to_csv(index=False, lineterminator="\n"))
