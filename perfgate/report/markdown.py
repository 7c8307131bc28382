"""summary.md: the verdict in GitHub-flavoured Markdown (PR comments, $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

import re
from pathlib import Path

from perfgate import fmt
from perfgate.models import RunResult
from perfgate.report import tables
from perfgate.report.common import (
    comparison_text,
    deciding_rule,
    first_degraded,
    sorted_steps,
    verdict_word,
)
from perfgate.report.events import EVENT_COLUMNS, event_rows
from perfgate.report.why import why

__all__ = ["md", "summary_md"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")
# what would start raw HTML (a tag, comment, declaration) or a character reference
_HTML_START = re.compile(r"([<&])(?=[A-Za-z/!?#])")


def md(text: object) -> str:
    """Plain text for a GFM table cell or line: markup and HTML neutralised with backslash
    escapes (no HTML entities, so the file reads as plain text), no line breaks."""
    s = _MD_SPECIAL.sub(r"\\\1", fmt.printable(" ".join(str(text).split())))
    s = _HTML_START.sub(r"\\\1", s)
    return "\\" + s if s.startswith(">") else s  # not a block quote


def _code(text: str) -> str:
    """A GFM code span (paths keep their underscores); falls back to escaped text."""
    if "`" in text or fmt.printable(text) != text:
        return md(text)
    return f"`{text}`"


def summary_md(result: RunResult, report_dir: Path | None = None) -> str:
    """summary.md: verdict, rules, saturation against the baseline, compact step table."""
    lines = [
        f"### perfgate: {md(result.scenario)} @ {md(result.release)} — **{verdict_word(result)}**",
        "",
    ]
    if result.aborted:
        reason = f": {md(result.abort_reason)}" if result.abort_reason else ""
        lines += [f"**Aborted — partial result{reason}.** Verdict so far: {result.verdict}.", ""]
    decided, compared = deciding_rule(result), comparison_text(result)
    lines += [f"**{md(text)}**" for text in (decided,) if text]
    lines += [f"_{md(text)}_" for text in (compared,) if text]
    if decided or compared:
        lines.append("")
    lines += _why(result)
    lines += [f"- {md(r)}" for r in result.reasons]
    if result.reasons:
        lines.append("")
    lines += _rules(result)
    lines += _saturation(result)
    first = first_degraded(result)
    if first:
        lines += [f"{md(first.text)}.", ""]
    lines += _errors(result)
    lines += _steps(result)
    lines += _events(result)
    if report_dir is not None:
        lines.append(
            f"Full report: {_code(str(report_dir / 'index.html'))} (in the report artifact)."
        )
    else:
        lines.append("Full report: index.html in this folder.")
    return "\n".join(lines) + "\n"


def _why(result: RunResult) -> list[str]:
    w = why(result)
    if w is None:
        return []
    lines = ["**Why it broke:** " + md(w.sentence) + f" _(confidence {w.confidence})_", ""]
    if w.cost:
        lines += [f"Cost: {md(w.cost)}", ""]
    lines += [f"- {md(e)}" for e in w.events]
    lines += [f"- not measured: {md(m)}" for m in w.missing]
    if w.events or w.missing:
        lines.append("")
    return lines


def _rules(result: RunResult) -> list[str]:
    if not result.rules:
        return []
    lines = [
        "| Rule | Outcome | Value | Threshold | Margin | Message |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in result.rules:
        lines.append(
            f"| {md(r.name)} | {r.outcome.upper()} | {fmt.value(r.value)} | "
            f"{fmt.value(r.threshold)} | {fmt.margin(r.margin)} | {md(r.message)} |"
        )
    return [*lines, ""]


def _saturation(result: RunResult) -> list[str]:
    """This run's saturation point against the baseline's, and the SLO it was measured with."""
    sat, base = result.saturation, result.baseline
    lines = [
        f"| | This run ({md(result.release)}) |"
        + (f" Baseline ({md(base.release)}) | Change |" if base else ""),
        "|---|---:|" + ("---:|---:|" if base else ""),
    ]
    users_cell = fmt.saturation_users(sat) + (
        f" (CI {fmt.interval(sat.users_ci)})" if sat.users_ci else ""
    )
    rps_cell = fmt.rps(sat.throughput_rps) + (
        f" (CI {fmt.interval(sat.throughput_ci, fmt.rps)})" if sat.throughput_ci else ""
    )
    if base:
        b = base.saturation
        lines.append(
            f"| Saturation users | {users_cell} | {fmt.saturation_users(b)} | "
            f"{fmt.change(sat.users, b.users)} |"
        )
        lines.append(
            f"| Throughput at SLO (req/s) | {rps_cell} | {fmt.rps(b.throughput_rps)} | "
            f"{fmt.change(sat.throughput_rps, b.throughput_rps)} |"
        )
    else:
        lines.append(f"| Saturation users | {users_cell} |")
        lines.append(f"| Throughput at SLO (req/s) | {rps_cell} |")
    lines.append("")
    slo = f"SLO: p95 ≤ {fmt.ms(result.slo.p95_ms)} ms, errors ≤ {fmt.rate(result.slo.error_rate)}."
    event_slo = fmt.event_slo(result.slo.event_p95_ms, result.slo.event_loss_rate)
    if event_slo:
        slo += f" {event_slo}."
        if sat.broken_by:
            slo += f" The {sat.broken_by} SLO broke first."
    if sat.reason:
        slo += f" {md(sat.reason)}."
    if not base:
        slo += " No baseline yet: the floor alone decides."
    return [*lines, slo, ""]


def _steps(result: RunResult) -> list[str]:
    """Each level: throughput, the response-time distribution, errors and traffic."""
    steps = sorted_steps(result.steps)
    if not steps:
        return []
    dist = {(d.users, d.phase, d.requests): d for d in tables.distribution(steps)}
    labels = [label for label, _ in tables.DISTRIBUTION]
    lines = _section(
        f"Steps ({len(steps)})",
        [
            ("Users", "n"),
            ("req/s", "n"),
            *((f"{label} ms", "n") for label in labels),
            ("Errors", "n"),
            ("Sent", "n"),
            ("Received", "n"),
            ("SLO", ""),
        ],
    )
    for s in steps:
        d = dist.get((s.users, s.phase, s.requests))
        cells = d.cells if d else tuple(fmt.MISSING for _ in labels)
        traffic = (d.sent, d.received) if d else (fmt.MISSING, fmt.MISSING)
        lines.append(
            f"| {s.users} | {fmt.rps(s.throughput_rps)} | {' | '.join(cells)} | "
            f"{fmt.rate(s.error_rate)} | {traffic[0]} | {traffic[1]} | "
            f"{'ok' if s.slo_ok else 'FAIL'} |"
        )
    return [*lines, ""]


def _events(result: RunResult) -> list[str]:
    """Each level's awaited events (users.streams) beside its request p95."""
    rows = event_rows(sorted_steps(result.steps))
    if not rows:
        return []
    lines = _section(
        "Events", [(heading, "" if key == "slo" else "n") for heading, key in EVENT_COLUMNS]
    )
    lines += ["| " + " | ".join(md(r[key]) for _, key in EVENT_COLUMNS) + " |" for r in rows]
    return [*lines, ""]


def _errors(result: RunResult) -> list[str]:
    """Status or exception × request × level, first seen (nothing without errors)."""
    levels, rows = tables.error_table(result.steps)
    if not rows:
        return []
    lines = _section(
        "Errors",
        [
            ("Status / exception", ""),
            ("Request", ""),
            *((f"{u} users", "n") for u in levels),
            ("Total", "n"),
            ("First seen", ""),
        ],
    )
    for r in rows:
        counts = " | ".join(str(n) if n else "" for n in r.counts)
        lines.append(
            f"| {md(r.kind)} | {md(r.request)} | {counts} | {r.total} | "
            f"{r.first_users} users, {r.first_s:.1f} s into the run |"
        )
    return [*lines, ""]


def _section(title: str, columns: list[tuple[str, str]]) -> list[str]:
    """A heading and a table head; a column aligned "n" is numeric (right-aligned)."""
    head = "| " + " | ".join(name for name, _ in columns) + " |"
    rule = "|" + "".join("---:|" if align == "n" else "---|" for _, align in columns)
    return [f"#### {title}", "", head, rule]
