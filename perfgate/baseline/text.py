"""What ``perfgate baseline list|show|diff`` print: plain-text tables.

Numbers are written by :mod:`perfgate.fmt`, as everywhere else, so the report and these commands
show the same baseline with the same figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

from perfgate import fmt
from perfgate.baseline.compare import BaselineDiff, StepDiff
from perfgate.baseline.files import BaselineScan, StoredBaseline, parse_time
from perfgate.baseline.fingerprints import fingerprint_id
from perfgate.errors import BaselineError
from perfgate.models import StepStats, to_jsonable

T = TypeVar("T")

__all__ = [
    "format_diff",
    "format_list",
    "format_show",
    "list_record",
    "show_json",
    "text_table",
]


def _date(created_at: str) -> str:
    try:
        return parse_time(created_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created_at


# A table column: its header and how an item's cell is written.
Column = tuple[str, Callable[[T], str]]


def text_table(columns: Sequence[Column[T]], items: Iterable[T]) -> str:
    """A plain-text table: the headers, a rule, a row per item; columns as wide as their text."""
    rows = [tuple(cell(item) for _, cell in columns) for item in items]
    header = tuple(name for name, _ in columns)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_list(
    baselines: Iterable[StoredBaseline], *, problems: Iterable[tuple[Path, str]] = ()
) -> str:
    """Table of baselines: release, saturation users, req/s, date, fingerprint id."""
    items = list(baselines)
    columns: list[Column[StoredBaseline]] = [
        ("release", lambda b: b.release),
        ("users", lambda b: fmt.saturation_users(b.saturation)),
        ("req/s", lambda b: fmt.rps(b.saturation.throughput_rps)),
        ("stored (UTC)", lambda b: _date(b.created_at)),
        ("fingerprint", lambda b: fingerprint_id(b.fingerprint)),
    ]
    out = text_table(columns, items) if items else "no baselines stored"
    broken = [f"unreadable: {message}" for _, message in problems]
    return "\n".join([out, *broken])


def list_record(scans: Mapping[str, BaselineScan]) -> dict[str, Any]:
    """``baseline list --json``: every baseline (oldest first per scenario) and every problem."""
    return {
        "baselines": [
            {
                "scenario": b.scenario,
                "release": b.release,
                "created_at": b.created_at,
                "saturation": to_jsonable(b.saturation),
                "fingerprint": fingerprint_id(b.fingerprint),
                "path": b.where or str(b.path),
            }
            for scan in scans.values()
            for b in scan.baselines
        ],
        "problems": [
            {"scenario": name, "file": str(path), "error": message}
            for name, scan in scans.items()
            for path, message in scan.problems
        ],
    }


def show_json(b: StoredBaseline) -> str:
    """``baseline show --json``: the baseline file's own JSON, as stored (already redacted)."""
    try:
        return json.dumps(json.loads(b.path.read_text(encoding="utf-8")), indent=2)
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{b.path}: cannot be read again: {exc}") from None


_STEP_COLUMNS: tuple[Column[StepStats], ...] = (
    ("users", lambda st: str(st.users)),
    ("req/s", lambda st: fmt.rps(st.throughput_rps)),
    ("p50 ms", lambda st: fmt.ms(st.p50_ms)),
    ("p95 ms", lambda st: fmt.ms(st.p95_ms)),
    ("p99 ms", lambda st: fmt.ms(st.p99_ms)),
    ("errors", lambda st: fmt.rate(st.error_rate)),
    ("SLO", lambda st: "ok" if st.slo_ok else "broken"),
)


def format_show(b: StoredBaseline, *, where: str = "") -> str:
    """Everything in one baseline, for ``perfgate baseline show`` (``where``: its file's name)."""
    s = b.saturation
    lines = [
        f"baseline     {b.scenario} / {b.release}",
        f"file         {where or b.where or b.path}",
        f"stored       {b.created_at}" + (f" (measured {b.measured_at})" if b.measured_at else ""),
        f"verdict      {b.verdict}",
        f"source       {b.source or '-'}",
        f"saturation   {fmt.saturation(s)}"
        + (f" (bracket {s.bracket[0]}-{s.bracket[1]} users)" if s.bracket else ""),
        f"reason       {s.reason or '-'}",
    ]
    if b.replicates:
        reps = ", ".join(fmt.saturation_users(r) for r in b.replicates)
        lines.append(f"replicates   {reps}")
    fp = b.fingerprint
    if fp is None:
        lines.append("fingerprint  - (none recorded)")
    else:
        lines.append(
            f"fingerprint  {fingerprint_id(fp)}: scenario {fp.scenario_hash[:12]}, {fp.slo}, "
            f"perfgate {fp.perfgate_version}, {fp.cpu_count} CPUs, provider {fp.provider or '-'}, "
            f"target {fp.target or '-'}, python {fp.python or '-'}, {fp.machine or '-'}"
        )
    change = b.scenario_change
    if change:
        lines.append(
            f"scenario     {change.get('summary', 'changed')} since "
            f"{change.get('previous_release', '?')} ({change.get('handled', '?')}"
            + (f": {change['reason']}" if change.get("reason") else "")
            + ")"
        )
    if b.steps:
        lines += ["", text_table(_STEP_COLUMNS, b.steps)]
    return "\n".join(lines)


def format_diff(d: BaselineDiff) -> str:
    """The comparison of two baselines, for ``perfgate baseline diff A B``."""
    a, b = d.a.release, d.b.release
    users_delta = fmt.signed(d.users_delta, fmt.users)
    rps_delta = fmt.signed(d.throughput_delta_rps, fmt.rps)
    lines = [
        f"{a} → {b}" + (f" (scenario {d.scenario_a})" if d.scenario_a == d.scenario_b else ""),
        f"saturation users  {fmt.saturation_users(d.a.saturation)} → "
        f"{fmt.saturation_users(d.b.saturation)}  ({users_delta}, {fmt.percent(d.users_pct)})",
        f"throughput req/s  {fmt.rps(d.throughput_a_rps)} → {fmt.rps(d.throughput_b_rps)}"
        f"  ({rps_delta}, {fmt.percent(d.throughput_pct)})",
    ]
    if d.slo_a != d.slo_b:
        lines.append(f"SLO               {d.slo_a or '-'} → {d.slo_b or '-'}")
    # The note already starts with "not comparable:" / "comparable; differs in" when it matters.
    lines.append(f"environment       {d.note or 'identical fingerprints'}")
    if d.steps:
        columns: list[Column[StepDiff]] = [
            ("users", lambda r: str(r.users)),
            (f"{a} req/s", lambda r: fmt.rps(r.throughput_a_rps)),
            (f"{b} req/s", lambda r: fmt.rps(r.throughput_b_rps)),
            ("Δ", lambda r: fmt.percent(r.throughput_pct)),
            (f"{a} p95", lambda r: fmt.ms(r.p95_a_ms)),
            (f"{b} p95", lambda r: fmt.ms(r.p95_b_ms)),
            ("Δ p95", lambda r: fmt.percent(r.p95_pct)),
        ]
        lines += ["", text_table(columns, d.steps)]
    else:
        lines.append("no common user levels to compare step by step")
    return "\n".join(lines)
