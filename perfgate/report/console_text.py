"""The compact one-screen summary the CLI prints after a run (ASCII where a terminal may not
have the glyphs: '>=', '->', 'x')."""

from __future__ import annotations

from pathlib import Path

from perfgate import fmt
from perfgate.models import BaselineRef, RunResult, Saturation
from perfgate.report.common import (
    comparison_text,
    deciding_rule,
    first_degraded,
    sorted_steps,
    verdict_word,
)
from perfgate.report.why import console_lines as why_lines

__all__ = ["console_summary", "console_verdict", "first_errors"]


def console_verdict(result: RunResult, report_dir: Path | None) -> str:
    """The one line ``--quiet`` prints: verdict, the deciding rule, the report's path."""
    line = f"perfgate: {result.scenario} @ {result.release}: {verdict_word(result)}"
    decided = deciding_rule(result)
    if decided:
        line += f": {decided}"
    if report_dir is not None:
        line += f" (report: {report_dir / 'index.html'})"
    return fmt.printable(line)


def console_summary(result: RunResult, report_dir: Path | None) -> str:
    """Compact one-screen text: verdict, each rule with numbers, saturation, baseline, report."""
    sat = result.saturation
    lines = [f"perfgate: {result.scenario} @ {result.release}: {verdict_word(result)}"]
    if result.aborted:
        lines.append(f"  aborted: partial result ({result.abort_reason or 'no reason given'})")
    decided = deciding_rule(result)
    if decided:
        lines.append(f"  {decided}")
    lines += _rule_lines(result)
    lines += why_lines(result)
    line = f"  saturation: {fmt.saturation(sat, with_ci=True, ascii_only=True)}"
    if sat.reason:
        line += f"; {sat.reason}"
    lines.append(line)
    if result.baseline:
        lines.append("  " + _baseline_line(result.baseline, sat))
        lines.append(f"  {comparison_text(result)}")
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
    first = first_degraded(result)
    if first:
        lines.append(f"  {first.text}".replace("→", "->").replace("×", "x"))
    if report_dir is not None:
        lines.append(f"  report: {report_dir / 'index.html'}")
    return "\n".join(fmt.printable(line) for line in lines)


def _rule_lines(result: RunResult) -> list[str]:
    """Each rule with its numbers, then the reasons no rule already says."""
    lines = []
    for r in result.rules:
        numbers = ""
        if r.value is not None or r.threshold is not None:
            numbers = (
                f" [value {fmt.value(r.value)}, threshold {fmt.value(r.threshold)}, "
                f"margin {fmt.margin(r.margin)}]"
            )
        label = "" if r.message.startswith(f"{r.name}:") else f"{r.name}: "
        lines.append(f"  {r.outcome.upper():<12} {label}{r.message}{numbers}")
    said = {r.message for r in result.rules}
    lines += [f"  - {reason}" for reason in result.reasons if reason not in said]
    return lines


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
                text += f"; requests time out after {fmt.value(timeout)} s (load.request_timeout_s)"
            return text
    return ""


def _baseline_line(base: BaselineRef, sat: Saturation) -> str:
    b = base.saturation
    return (
        f"baseline: {base.release}: {fmt.saturation(b, ascii_only=True)} "
        f"(this run {fmt.change(sat.users, b.users)} users, "
        f"{fmt.change(sat.throughput_rps, b.throughput_rps)} req/s)"
    )
