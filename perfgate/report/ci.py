"""CI outputs: junit.xml, summary.md and the console summary, plus the number formats they share.

junit.xml maps every gate rule to one test case: ``fail`` → ``<failure type="block">``,
``inconclusive`` → ``<error type="inconclusive">`` (CI shows it red, but a script can tell it
from a block), ``skipped`` → ``<skipped>``, ``pass`` → a passing case. A result without rules gets
one ``verdict`` case instead, and an aborted run one extra ``run completed`` case with
``<error type="aborted">``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from perfgate.models import BaselineRef, RunResult, Saturation, StepStats

VERDICT_WORDS = {"pass": "PASS", "block": "BLOCKED", "inconclusive": "INCONCLUSIVE"}


def verdict_word(result: RunResult) -> str:
    """The status word shown everywhere: PASS, BLOCKED, INCONCLUSIVE, ABORTED or MANUAL RAMP."""
    if result.aborted:
        return "ABORTED"
    if getattr(result, "mode", "run") == "ramp":
        return "MANUAL RAMP"
    return VERDICT_WORDS.get(result.verdict, result.verdict.upper())


def verdict_class(result: RunResult) -> str:
    """pass | block | inconclusive | aborted | ramp: picks the banner colour."""
    if result.aborted:
        return "aborted"
    if getattr(result, "mode", "run") == "ramp":
        return "ramp"
    return result.verdict


# ---------------------------------------------------------------------------------------------
# Number formats (shared by the HTML report)
# ---------------------------------------------------------------------------------------------


def fmt_value(value: float | None) -> str:
    """A rule's value or threshold: integers as such, otherwise 4 significant digits."""
    if value is None or value != value:
        return "–"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def fmt_margin(value: float | None) -> str:
    """A rule's margin with its sign: + is room left, - is by how much it was missed."""
    if value is None or value != value:
        return "–"
    text = fmt_value(abs(value))
    return ("+" if value >= 0 else "-") + text


def fmt_ms(value: float | None) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def fmt_rps(value: float | None) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def fmt_rate(value: float | None) -> str:
    """An error rate (fraction) as a percentage with 3 significant digits: '1 %', '0.25 %'."""
    if value is None or value != value:
        return "–"
    pct = value * 100
    if pct == 0:
        return "0 %"
    return f"{pct:.3g} %" if pct < 100 else f"{pct:.0f} %"


def fmt_users(value: float | None) -> str:
    if value is None or value != value:
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def fmt_change(new: float | None, old: float | None) -> str:
    """Relative change new vs old, e.g. '-12.3 %'."""
    if new is None or old is None or old == 0:
        return "–"
    return f"{(new / old - 1) * 100:+.1f} %"


def sat_users_text(sat: Saturation, *, ascii_only: bool = False) -> str:
    """Saturation users with its censoring: '114.2', '≥ 600' (never broke), '< 10'."""
    if sat.users is None:
        return "–"
    text = fmt_users(sat.users)
    if sat.censored == "above_max" or not sat.broken:
        return (">= " if ascii_only else "≥ ") + text
    if sat.censored == "below_start":
        return "< " + text
    return text


def ci_text(ci: tuple[float, float] | None, fmt=fmt_users, *, ascii_only: bool = False) -> str:
    """A confidence interval as '110–118' ('' when absent)."""
    if ci is None:
        return ""
    dash = "-" if ascii_only else "–"
    return f"{fmt(ci[0])}{dash}{fmt(ci[1])}"


def duration_s(result: RunResult) -> float | None:
    """Wall time of the run from its ISO timestamps (None if they do not parse)."""
    try:
        start = datetime.fromisoformat(result.started_at)
        end = datetime.fromisoformat(result.finished_at)
        return max(0.0, (end - start).total_seconds())
    except (TypeError, ValueError):
        return None


def sorted_steps(steps: tuple[StepStats, ...]) -> tuple[StepStats, ...]:
    """Steps in load order (adaptive search measures out of order)."""
    return tuple(sorted(steps, key=lambda s: (s.users, s.index)))


# ---------------------------------------------------------------------------------------------
# Which request type degraded first
# ---------------------------------------------------------------------------------------------


DISTINCT_GROWTH = 1.15  # the top growth must beat the runner-up by 15 % to be named


@dataclass(frozen=True, slots=True, kw_only=True)
class Degradation:
    """The request type that degraded first, and why it was picked."""

    method: str  # "" with name "": no single request type stands out
    name: str
    users: int | None  # first load level whose p95 crossed the SLO (None: none crossed)
    growth: float | None  # p95 at the highest level / p95 at the lowest level
    text: str


def _label(method: str, name: str) -> str:
    """``GET order book``; a name that already starts with its method (the default) once."""
    return name if name.startswith(f"{method} ") else f"{method} {name}"


def degraded_first(steps: tuple[StepStats, ...], slo_p95_ms: float) -> Degradation | None:
    """First endpoint whose p95 crosses the SLO; else the one whose p95 grew most."""
    ordered = [s for s in sorted_steps(steps) if s.endpoints]
    if not ordered:
        return None
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for step in ordered:
        for ep in step.endpoints:
            if ep.p95_ms is not None and ep.requests > 0:
                series.setdefault((ep.method, ep.name), []).append((step.users, ep.p95_ms))
    if not series:
        return None
    crossings = []
    for key, points in series.items():
        for users, p95 in points:
            if p95 > slo_p95_ms:
                crossings.append((users, -p95 / slo_p95_ms, key, p95))
                break
    if crossings:
        users, _, (method, name), p95 = min(crossings)
        others = sum(1 for c in crossings if c[0] == users) - 1
        tie = f" (with {others} other request type(s) at the same level)" if others else ""
        return Degradation(
            method=method,
            name=name,
            users=users,
            growth=None,
            text=(
                f"{_label(method, name)} degraded first: p95 {fmt_ms(p95)} ms > SLO "
                f"{fmt_ms(slo_p95_ms)} ms at {users} users{tie}"
            ),
        )
    growths = []
    for key, points in series.items():
        first, last = points[0], points[-1]
        if len(points) >= 2 and first[1] > 0:
            growths.append((last[1] / first[1], key, first, last))
    if not growths:
        return None
    growths.sort(reverse=True)
    growth, (method, name), first, last = growths[0]
    if len(growths) > 1 and growth < growths[1][0] * DISTINCT_GROWTH:
        # Every request type slowed alike: naming one would point engineers at noise.
        return Degradation(
            method="",
            name="",
            users=None,
            growth=growth,
            text=(
                f"No request type's p95 crossed the SLO; p95 grew alike for all of them "
                f"(up to ×{growth:.1f} from {first[0]} to {last[0]} users)"
            ),
        )
    return Degradation(
        method=method,
        name=name,
        users=None,
        growth=growth,
        text=(
            f"No request type's p95 crossed the SLO; {_label(method, name)} grew most: p95 "
            f"{fmt_ms(first[1])} → {fmt_ms(last[1])} ms (×{growth:.1f}) from {first[0]} to "
            f"{last[0]} users"
        ),
    )


# ---------------------------------------------------------------------------------------------
# junit.xml
# ---------------------------------------------------------------------------------------------

# XML 1.0 forbids most control characters even when escaped.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: object) -> str:
    return _XML_BAD.sub("?", str(text))


def junit_xml(result: RunResult) -> str:
    """junit.xml: one testsuite ``perfgate.<scenario>``, one testcase per gate rule."""
    suite_name = f"perfgate.{result.scenario}"
    cases: list[tuple[str, str | None, str, str]] = []  # name, kind, type, message
    for rule in result.rules:
        kind = {"fail": "failure", "inconclusive": "error", "skipped": "skipped"}.get(rule.outcome)
        ctype = {"fail": "block", "inconclusive": "inconclusive"}.get(rule.outcome, "")
        numbers = (
            f" (value {fmt_value(rule.value)}, threshold {fmt_value(rule.threshold)}, "
            f"margin {fmt_margin(rule.margin)})"
            if rule.value is not None or rule.threshold is not None
            else ""
        )
        cases.append((rule.name, kind, ctype, rule.message + numbers))
    if not result.rules:
        kind = {"block": "failure", "inconclusive": "error"}.get(result.verdict)
        ctype = {"block": "block", "inconclusive": "inconclusive"}.get(result.verdict, "")
        cases.append(("verdict", kind, ctype, "; ".join(result.reasons) or result.verdict))
    if result.aborted:
        cases.append(
            ("run completed", "error", "aborted", result.abort_reason or "the run was aborted")
        )

    counts = {k: sum(1 for c in cases if c[1] == k) for k in ("failure", "error", "skipped")}
    elapsed = duration_s(result)
    root = ET.Element(
        "testsuites",
        name="perfgate",
        tests=str(len(cases)),
        failures=str(counts["failure"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_x(suite_name),
        tests=str(len(cases)),
        failures=str(counts["failure"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{elapsed:.3f}" if elapsed is not None else "0",
        timestamp=_x(result.started_at),
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("release", result.release),
        ("verdict", result.verdict),
        ("aborted", str(result.aborted).lower()),
        ("saturation_users", fmt_users(result.saturation.users)),
        ("saturation_throughput_rps", fmt_rps(result.saturation.throughput_rps)),
        ("baseline_release", result.baseline.release if result.baseline else ""),
        ("perfgate_version", result.perfgate_version),
    ):
        ET.SubElement(props, "property", name=key, value=_x(value))
    for name, kind, ctype, message in cases:
        case = ET.SubElement(suite, "testcase", classname=_x(suite_name), name=_x(name), time="0")
        if kind == "skipped":
            ET.SubElement(case, "skipped", message=_x(message))
        elif kind is not None:
            el = ET.SubElement(case, kind, message=_x(message), type=ctype)
            el.text = _x(message)
        else:
            ET.SubElement(case, "system-out").text = _x(message)
    out = ET.SubElement(suite, "system-out")
    out.text = _x("\n".join([f"verdict: {verdict_word(result)}", *result.reasons]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------------
# summary.md (GitHub-flavoured Markdown)
# ---------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def md(text: object) -> str:
    """Escape text for a GFM table cell or line: no HTML, no markup, no line breaks."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def _code(text: str) -> str:
    """A GFM code span (paths keep their underscores); falls back to escaped text."""
    if "`" in text or "\n" in text:
        return md(text)
    return f"`{text}`"


def summary_md(result: RunResult, report_dir: Path | None = None) -> str:
    """summary.md: verdict, rules, saturation against the baseline, compact step table."""
    sat = result.saturation
    lines = [
        f"### perfgate: {md(result.scenario)} @ {md(result.release)} — **{verdict_word(result)}**"
    ]
    lines.append("")
    if result.aborted:
        reason = f": {md(result.abort_reason)}" if result.abort_reason else ""
        lines += [f"**Aborted — partial result{reason}.** Verdict so far: {result.verdict}.", ""]
    lines += [f"- {md(r)}" for r in result.reasons]
    if result.reasons:
        lines.append("")
    if result.rules:
        lines += [
            "| Rule | Outcome | Value | Threshold | Margin | Message |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in result.rules:
            lines.append(
                f"| {md(r.name)} | {r.outcome.upper()} | {fmt_value(r.value)} | "
                f"{fmt_value(r.threshold)} | {fmt_margin(r.margin)} | {md(r.message)} |"
            )
        lines.append("")
    base = result.baseline
    head = f"| | This run ({md(result.release)}) |"
    lines.append(head + (f" Baseline ({md(base.release)}) | Change |" if base else ""))
    lines.append("|---|---:|" + ("---:|---:|" if base else ""))
    users_cell = sat_users_text(sat) + (f" (CI {ci_text(sat.users_ci)})" if sat.users_ci else "")
    rps_cell = fmt_rps(sat.throughput_rps) + (
        f" (CI {ci_text(sat.throughput_ci, fmt_rps)})" if sat.throughput_ci else ""
    )
    if base:
        b = base.saturation
        lines.append(
            f"| Saturation users | {users_cell} | {sat_users_text(b)} | "
            f"{fmt_change(sat.users, b.users)} |"
        )
        lines.append(
            f"| Throughput at SLO (req/s) | {rps_cell} | {fmt_rps(b.throughput_rps)} | "
            f"{fmt_change(sat.throughput_rps, b.throughput_rps)} |"
        )
    else:
        lines.append(f"| Saturation users | {users_cell} |")
        lines.append(f"| Throughput at SLO (req/s) | {rps_cell} |")
    lines.append("")
    slo = f"SLO: p95 ≤ {fmt_ms(result.slo.p95_ms)} ms, errors ≤ {fmt_rate(result.slo.error_rate)}."
    if sat.reason:
        slo += f" {md(sat.reason)}."
    if not base:
        slo += " No baseline yet: the floor alone decides."
    lines += [slo, ""]
    first = degraded_first(result.steps, result.slo.p95_ms)
    if first:
        lines += [f"{md(first.text)}.", ""]
    steps = sorted_steps(result.steps)
    if steps:
        lines += [
            f"<details><summary>Steps ({len(steps)})</summary>",
            "",
            "| Users | req/s | p50 ms | p95 ms | p99 ms | Errors | SLO |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in steps:
            lines.append(
                f"| {s.users} | {fmt_rps(s.throughput_rps)} | {fmt_ms(s.p50_ms)} | "
                f"{fmt_ms(s.p95_ms)} | {fmt_ms(s.p99_ms)} | {fmt_rate(s.error_rate)} | "
                f"{'ok' if s.slo_ok else 'FAIL'} |"
            )
        lines += ["", "</details>", ""]
    if report_dir is not None:
        lines.append(
            f"Full report: {_code(str(report_dir / 'index.html'))} (in the report artifact)."
        )
    else:
        lines.append("Full report: index.html in this folder.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Console summary
# ---------------------------------------------------------------------------------------------


def console_summary(result: RunResult, report_dir: Path | None) -> str:
    """Compact one-screen text: verdict, each rule with numbers, saturation, baseline, report."""
    sat = result.saturation
    lines = [f"perfgate: {result.scenario} @ {result.release}: {verdict_word(result)}"]
    if result.aborted:
        lines.append(f"  aborted: partial result ({result.abort_reason or 'no reason given'})")
    rule_messages = set()
    for r in result.rules:
        rule_messages.add(r.message)
        numbers = ""
        if r.value is not None or r.threshold is not None:
            numbers = (
                f" [value {fmt_value(r.value)}, threshold {fmt_value(r.threshold)}, "
                f"margin {fmt_margin(r.margin)}]"
            )
        label = "" if r.message.startswith(f"{r.name}:") else f"{r.name}: "
        lines.append(f"  {r.outcome.upper():<12} {label}{r.message}{numbers}")
    for reason in result.reasons:
        if reason not in rule_messages:
            lines.append(f"  - {reason}")
    users = sat_users_text(sat, ascii_only=True) + " users"
    if sat.users_ci:
        users += f" (CI {ci_text(sat.users_ci, ascii_only=True)})"
    line = f"  saturation: {users} at {fmt_rps(sat.throughput_rps)} req/s"
    if sat.reason:
        line += f"; {sat.reason}"
    lines.append(line)
    if result.baseline:
        lines.append("  " + _baseline_line(result.baseline, sat))
    elif getattr(result, "mode", "run") != "ramp":
        lines.append("  baseline: none stored yet (the floor alone decides)")
    limited = [s for s in result.steps if s.generator and s.generator.limited]
    if limited:
        lines.append(
            f"  generator: limited at {len(limited)} of {len(result.steps)} steps "
            f"(first at {min(s.users for s in limited)} users)"
        )
    errors = first_errors(result)
    if errors:
        lines.append(f"  {errors}")
    first = degraded_first(result.steps, result.slo.p95_ms)
    if first:
        lines.append(f"  {first.text}".replace("→", "->").replace("×", "x"))
    if report_dir is not None:
        lines.append(f"  report: {report_dir / 'index.html'}")
    return "\n".join(lines)


def first_errors(result: RunResult) -> str:
    """The most frequent error at the first level that had any, in words ("" without errors).

    A target that died, reset connections or answered 5xx breaks the SLO through its error
    rate; this names the cause, and the request timeout when requests timed out.
    """
    for s in sorted_steps(result.steps):
        if s.errors:
            message, count = s.errors[0]
            text = f"errors first at {s.users} users: {message} (x{count})"
            timeout = result.generator.get("request_timeout_s")
            if timeout is not None and "timed out" in message.lower():
                text += f"; requests time out after {fmt_value(timeout)} s (load.request_timeout_s)"
            return text
    return ""


def _baseline_line(base: BaselineRef, sat: Saturation) -> str:
    b = base.saturation
    return (
        f"baseline: {base.release}: {sat_users_text(b, ascii_only=True)} users at "
        f"{fmt_rps(b.throughput_rps)} req/s (this run {fmt_change(sat.users, b.users)} users, "
        f"{fmt_change(sat.throughput_rps, b.throughput_rps)} req/s)"
    )
