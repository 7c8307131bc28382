"""What ``perfgate baseline list|show|diff`` print: plain-text tables.

Numbers are written by :mod:`perfgate.fmt`, as everywhere else, so the report and these commands
show the same baseline with the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC
from pathlib import Path

from perfgate import fmt
from perfgate.baseline.compare import BaselineDiff
from perfgate.baseline.files import StoredBaseline, parse_time
from perfgate.baseline.fingerprints import fingerprint_id

__all__ = ["format_diff", "format_list", "format_show"]


def _date(created_at: str) -> str:
    try:
        return parse_time(created_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created_at


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
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
    rows = [
        (
            b.release,
            fmt.saturation_users(b.saturation),
            fmt.rps(b.saturation.throughput_rps),
            _date(b.created_at),
            fingerprint_id(b.fingerprint),
        )
        for b in baselines
    ]
    out = (
        _table(("release", "users", "req/s", "stored (UTC)", "fingerprint"), rows)
        if rows
        else "no baselines stored"
    )
    broken = [f"unreadable: {message}" for _, message in problems]
    return "\n".join([out, *broken])


def format_show(b: StoredBaseline) -> str:
    """Everything in one baseline, for ``perfgate baseline show``."""
    s = b.saturation
    lines = [
        f"baseline     {b.scenario} / {b.release}",
        f"file         {b.path}",
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
    if b.steps:
        rows = [
            (
                str(st.users),
                fmt.rps(st.throughput_rps),
                fmt.ms(st.p50_ms),
                fmt.ms(st.p95_ms),
                fmt.ms(st.p99_ms),
                fmt.rate(st.error_rate),
                "ok" if st.slo_ok else "broken",
            )
            for st in b.steps
        ]
        lines += [
            "",
            _table(("users", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "SLO"), rows),
        ]
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
        rows = [
            (
                str(r.users),
                fmt.rps(r.throughput_a_rps),
                fmt.rps(r.throughput_b_rps),
                fmt.percent(r.throughput_pct),
                fmt.ms(r.p95_a_ms),
                fmt.ms(r.p95_b_ms),
                fmt.percent(r.p95_pct),
            )
            for r in d.steps
        ]
        header = ("users", f"{a} req/s", f"{b} req/s", "Δ", f"{a} p95", f"{b} p95", "Δ p95")
        lines += ["", _table(header, rows)]
    else:
        lines.append("no common user levels to compare step by step")
    return "\n".join(lines)
