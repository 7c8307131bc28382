"""The report stage: result.json, steps.csv, endpoints.csv, summary.md, junit.xml and index.html.

Rendering is a pure function of a :class:`~perfgate.models.RunResult`, so ``perfgate report
RESULT_JSON`` re-creates every file from a saved result without load. matplotlib and jinja2 are
imported only when a report is written, which keeps the CLI quick to start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Any

from perfgate.models import BaselineRef, RunResult, from_jsonable, to_jsonable
from perfgate.report.console_text import console_summary, console_verdict
from perfgate.report.files import (
    append_text,
    atomic_write_text,
    endpoints_csv_text,
    load_result,
    make_dir,
    result_json_text,
    steps_csv_text,
)
from perfgate.report.junit import junit_xml
from perfgate.report.markdown import summary_md

__all__ = [
    "ReportFiles",
    "console_summary",
    "console_verdict",
    "load_result",
    "redact_result",
    "write_report",
]

REDACTED = "***"


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
    history: tuple[BaselineRef, ...] = (),
    secrets: tuple[str, ...] = (),
) -> ReportFiles:
    """Write every report file into ``out_dir`` atomically; OutputError names the failing path.

    ``history`` holds the scenario's stored baselines for the history chart. ``secrets`` are
    exact strings redacted as ``***`` from every output. When ``$GITHUB_STEP_SUMMARY`` is set,
    summary.md is appended to it too.
    """
    from perfgate.report.html import render_html  # matplotlib + jinja2: only when rendering

    secrets = tuple(s for s in secrets if s)
    result = redact_result(result, secrets)
    history = tuple(_redact_data(BaselineRef, b, secrets) for b in history) if secrets else history
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
        atomic_write_text(path, _scrub(render(), secrets))
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        append_text(Path(step_summary), _scrub(summary, secrets) + "\n")
    return files


def redact_result(result: RunResult, secrets: tuple[str, ...]) -> RunResult:
    """``result`` with every exact occurrence of a secret in any string replaced by ``***``."""
    secrets = tuple(s for s in secrets if s)
    if not secrets:
        return result
    redacted = _redact_data(RunResult, result, secrets)
    assert isinstance(redacted, RunResult)
    return redacted


def _redact_data(cls: type[Any], record: Any, secrets: tuple[str, ...]) -> Any:
    data = to_jsonable(record)
    redacted = _redact_value(data, secrets)
    return record if redacted == data else from_jsonable(cls, redacted)


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _replace_all(value, secrets)
    if isinstance(value, list):
        return [_redact_value(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_replace_all(k, secrets): _redact_value(v, secrets) for k, v in value.items()}
    return value


def _replace_all(text: str, secrets: tuple[str, ...]) -> str:
    # Longest first, so a secret that contains another is removed whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Last line of defence on the finished text: raw, HTML- and JSON-escaped forms."""
    if not secrets:
        return text
    forms: set[str] = set()
    for secret in secrets:
        forms |= {
            secret,
            html_escape(secret, quote=True),
            html_escape(secret, quote=False),
            json.dumps(secret, ensure_ascii=False)[1:-1],
            json.dumps(secret)[1:-1],
        }
    return _replace_all(text, tuple(f for f in forms if f))
