"""Release history: every stored baseline (and optionally every saved result.json) of a scenario
as one table, its change points, and the figures the gate's drift rule reads.

- :mod:`~perfgate.history.table`: the table (pandas, confined there) — one row per release, its
  saturation point with intervals, p95 at fixed user levels, and its capacity *level*: chained
  through each release's gate estimate against the release it was judged against (side by side
  where it was measured so), so a slow creep of small losses adds up with honest error bars;
- :mod:`~perfgate.history.changepoints`: E-divisive means with a permutation test over the
  levels (the method of Apache Otava and MongoDB's signal-processing-algorithms).

Reading goes through the baseline store's reading API (:func:`perfgate.baseline.scan_baselines`)
and :func:`perfgate.store.load_result`; nothing here writes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

from perfgate import baseline, calibration, gate, store
from perfgate.baseline.files import parse_time
from perfgate.errors import BaselineError, PerfgateError
from perfgate.history import table
from perfgate.history.changepoints import e_divisive
from perfgate.models import ChangePoint, History, HistoryRow, RunResult, link_of, to_jsonable

__all__ = [
    "History",
    "HistoryRow",
    "Loaded",
    "build",
    "entry_of_baseline",
    "entry_of_result",
    "load",
    "to_csv",
    "to_json",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    history: History
    problems: tuple[tuple[Path, str], ...] = ()  # files that could not be read, and why


def entry_of_baseline(b: baseline.StoredBaseline) -> table.Entry:
    return table.Entry(
        release=b.release,
        time=b.created_at,
        source="baseline",
        verdict=b.verdict,
        saturation=b.saturation,
        steps=b.steps,
        link=b.link,
    )


def entry_of_result(r: RunResult) -> table.Entry:
    return table.Entry(
        release=r.release,
        time=r.finished_at,
        source="result",
        verdict=r.verdict,
        saturation=r.saturation,
        steps=r.steps,
        link=link_of(r),
    )


def build(
    scenario: str,
    entries: Sequence[table.Entry],
    *,
    reference: str | None = None,
    between_sd: float = gate.DEFAULT_BETWEEN_SD,
    seed: int = 0,
) -> History:
    """The history of ``scenario`` from its entries (any order), with its change points."""
    if not entries:
        return History(scenario=scenario, reference=reference)
    rows, levels = table.build_rows(entries, between_sd=between_sd, reference=reference)
    fallback = math.sqrt(2.0) * between_sd
    splits = e_divisive(
        [r.level_log for r in rows],
        [r.change_se if r.change_se is not None else fallback for r in rows],
        seed=seed,
    )
    points = tuple(
        ChangePoint(
            release=rows[s.index].release,
            index=s.index,
            change=s.change,
            p_value=s.p_value,
            z=s.z,
            tested=s.tested,
        )
        for s in splits
    )
    marked = {p.index for p in points}
    rows = tuple(
        dataclasses.replace(r, change_point=True) if i in marked else r for i, r in enumerate(rows)
    )
    return History(
        scenario=scenario, rows=rows, change_points=points, reference=reference, p95_levels=levels
    )


def load(
    baseline_dir: Path,
    scenario: str,
    *,
    report_dir: Path | None = None,
    seed: int = 0,
) -> Loaded:
    """The history of ``scenario`` from a baseline folder (and, given ``report_dir``, every
    saved result.json of full runs under ``<report_dir>/<scenario>/``).

    Unreadable files are listed in ``problems``, not fatal: a history shows what it can.
    """
    scan = baseline.scan_baselines(baseline_dir, scenario)
    entries = [entry_of_baseline(b) for b in scan.baselines]
    problems = list(scan.problems)
    if report_dir is not None:
        for path in sorted(Path(report_dir).glob(f"{scenario}/*/result.json")):
            try:
                result = store.load_result(path)
            except PerfgateError as exc:
                problems.append((path, str(exc)))
                continue
            if result.mode != "run" or result.aborted or result.scenario != scenario:
                continue
            try:
                parse_time(result.finished_at)
            except ValueError:
                problems.append((path, f"result file {path}: key 'finished_at' is not a time"))
                continue
            entries.append(entry_of_result(result))
    try:
        reference = baseline.read_reference(baseline_dir, scenario)
    except BaselineError as exc:
        problems.append((Path(baseline_dir) / scenario / baseline.REFERENCE_FILE, str(exc)))
        reference = None
    try:
        noise = calibration.load_noise(baseline_dir, scenario)
    except BaselineError as exc:  # the default priors serve: the history is still worth showing
        problems.append((Path(baseline_dir) / scenario / calibration.NOISE_FILE, str(exc)))
        noise = None
    history = build(
        scenario,
        entries,
        reference=reference,
        between_sd=gate.priors(noise).between_sd,
        seed=seed,
    )
    # a linked scenario folder is the one problem of all three reads: name it once
    unique: dict[str, tuple[Path, str]] = {}
    for path, message in problems:
        unique.setdefault(message, (path, message))
    return Loaded(history=history, problems=tuple(unique.values()))


def to_json(history: History) -> dict[str, object]:
    """``perfgate history --json``: the table's rows and the change points."""
    doc = to_jsonable(history)
    doc["change_points"] = [
        {**to_jsonable(p), "change_pct": round(100 * p.change, 2)} for p in history.change_points
    ]
    return {"kind": "perfgate-history", "schema": 1, **doc}


def to_csv(history: History) -> str:
    return table.to_csv(history.rows, history.p95_levels)
