"""The report stage: result.json, steps.csv, endpoints.csv, summary.md, junit.xml and index.html.

Rendering is a pure function of a :class:`~perfgate.models.RunResult`, so ``perfgate report
RESULT_JSON`` re-creates every file from a saved result without load. matplotlib and jinja2 are
imported only when a report is written, which keeps the CLI quick to start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfgate import redaction
from perfgate.models import History, RunResult
from perfgate.report.console_text import console_summary, console_verdict
from perfgate.report.files import (
    append_text,
    atomic_write_text,
    endpoints_csv_text,
    inside,
    load_result,
    make_dir,
    new_run_dir,
    result_json_text,
    steps_csv_text,
)
from perfgate.report.junit import junit_xml
from perfgate.report.markdown import summary_md

__all__ = [
    "ReportFiles",
    "console_summary",
    "console_verdict",
    "history_svg",
    "inside",
    "load_result",
    "new_run_dir",
    "redact_result",
    "write_report",
]

REDACTED = redaction.REDACTED


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFiles:
    """Where write_report put each file."""

    dir: Path
    html: Path
    json: Path
    junit: Path
    markdown: Path
    csv: Path
    endpoints_csv: Path


def write_report(
    result: RunResult,
    out_dir: Path,
    *,
    history: History | None = None,
    secrets: tuple[str, ...] = (),
) -> ReportFiles:
    """Write every report file into ``out_dir`` atomically; OutputError names the failing path.

    ``history`` is the scenario's release history (:mod:`perfgate.history`) for its chart.
    ``secrets`` are redacted from the records before anything is rendered
    (:mod:`perfgate.redaction`); the rendered text is never searched and replaced. When
    ``$GITHUB_STEP_SUMMARY`` is set, summary.md is appended to it too.
    """
    from perfgate.report.html import render_html  # matplotlib + jinja2: only when rendering

    result = redact_result(result, secrets)
    if history is not None:
        history = redaction.redact_record(history, secrets)
    out_dir = Path(out_dir)
    files = ReportFiles(
        dir=out_dir,
        html=out_dir / "index.html",
        json=out_dir / "result.json",
        junit=out_dir / "junit.xml",
        markdown=out_dir / "summary.md",
        csv=out_dir / "steps.csv",
        endpoints_csv=out_dir / "endpoints.csv",
    )
    make_dir(out_dir)
    summary = summary_md(result, out_dir)
    outputs: tuple[tuple[Path, Any], ...] = (
        (files.json, lambda: result_json_text(result)),
        (files.csv, lambda: steps_csv_text(result.steps)),
        (files.endpoints_csv, lambda: endpoints_csv_text(result.steps)),
        (files.junit, lambda: junit_xml(result)),
        (files.markdown, lambda: summary),
        # Last, rendered only once the others are on disk: the slowest (a second Ctrl-C
        # lands here), and the file people open; the data is safe by then.
        (files.html, lambda: render_html(result, history=history)),
    )
    for path, render in outputs:
        atomic_write_text(path, render())
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        append_text(Path(step_summary), summary + "\n")
    return files


def history_svg(history: History) -> str:
    """``perfgate history``'s chart: the report's history chart on its own, as an SVG file."""
    from perfgate.report.charts import history_chart  # matplotlib: only when drawing

    chart = history_chart(history.rows, reference=history.reference)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + chart.svg + "\n"


def redact_result(result: RunResult, secrets: tuple[str, ...]) -> RunResult:
    """``result`` with its free-text fields redacted (:func:`perfgate.redaction.redact_record`)."""
    return redaction.redact_record(result, secrets)
