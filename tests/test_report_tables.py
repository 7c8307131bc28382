"""The report's shared tables: the deciding rule in one sentence, the errors table (status or
exception × request × level, first seen), the response-time distribution per level with p99.9,
max and bytes, in index.html, summary.md and result.json."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from perfgate import fmt
from perfgate.histogram import Histogram
from perfgate.models import ErrorKind, RunResult
from perfgate.report import write_report
from perfgate.report.common import deciding_rule
from perfgate.report.tables import distribution, error_table
from tests.test_report import VARIANTS


def _with_errors(result: RunResult) -> RunResult:
    """The block variant with recorded error kinds at two levels and traffic counts."""
    steps = list(result.steps)
    steps[-2] = dataclasses.replace(
        steps[-2],
        error_kinds=(
            ErrorKind(method="GET", name="order book", kind="HTTP 503", count=4, first_s=1.25),
        ),
        bytes_sent=2_500_000,
        bytes_received=12_345,
    )
    steps[-1] = dataclasses.replace(
        steps[-1],
        error_kinds=(
            ErrorKind(method="GET", name="order book", kind="HTTP 503", count=9, first_s=0.5),
            ErrorKind(
                method="POST",
                name="place order",
                kind="ConnectionResetError: reset",
                count=2,
                first_s=3.0,
            ),
        ),
    )
    return dataclasses.replace(result, steps=tuple(steps))


def test_the_deciding_rule_is_one_sentence_for_every_verdict() -> None:
    assert deciding_rule(VARIANTS["block"]) == (
        "decided by the regression rule: throughput at the SLO 793.5 req/s is 0.888× the "
        "baseline's 893.4 req/s (limit 0.9×)"
    )
    assert deciding_rule(VARIANTS["censored"]).startswith("decided by the regression rule: ")
    # no baseline: the floor let it pass
    assert deciding_rule(VARIANTS["pass-no-baseline"]) == (
        "decided by the floor rule: saturation 152.6 users vs floor 100 users"
    )
    assert deciding_rule(VARIANTS["inconclusive"]).startswith("decided by the regression rule")


def test_error_table_counts_each_kind_per_level_with_its_first_sighting() -> None:
    result = _with_errors(VARIANTS["block"])
    levels, rows = error_table(result.steps)
    assert levels == (180, 195)
    assert [(r.kind, r.request, r.counts, r.total, r.first_users) for r in rows] == [
        ("HTTP 503", "GET order book", (4, 9), 13, 180),
        ("ConnectionResetError: reset", "POST place order", (0, 2), 2, 195),
    ]
    assert rows[0].first_s == 122.5 + 1.25  # the step's window start + first sighting
    assert error_table(VARIANTS["pass-no-baseline"].steps) == ((), ())


def test_distribution_per_level_is_read_from_the_histograms() -> None:
    steps = VARIANTS["block"].steps
    rows = distribution(steps)
    assert [r.users for r in rows] == [s.users for s in steps]
    last = Histogram.from_dict(steps[-1].histogram)
    assert rows[-1].cells[-2] == fmt.ms(last.percentile(99.9))  # p99.9
    assert rows[-1].cells[-1] == fmt.ms(last.max)
    assert rows[-1].cells[3] == fmt.ms(last.percentile(95))


def test_html_and_markdown_show_the_tables(tmp_path: Path) -> None:
    result = _with_errors(VARIANTS["block"])
    files = write_report(result, tmp_path / "out")
    html = files.html.read_text(encoding="utf-8")
    assert 'id="latency"' in html and "p99.9 ms" in html and "2.5 MB" in html and "12.3 kB" in html
    assert 'id="errors"' in html and "ConnectionResetError: reset" in html
    assert "180 users, 123.8 s into the run" in html
    summary = files.markdown.read_text(encoding="utf-8")
    assert (
        "| Status / exception | Request | 180 users | 195 users | Total | First seen |" in summary
    )
    assert "| HTTP 503 | GET order book | 4 | 9 | 13 | 180 users, 123.8 s into the run |" in summary
    assert (
        "| Users | req/s | p50 ms | p75 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | max ms |"
        in summary
    )
    assert "<" not in summary and "&gt;" not in summary
    rows = list(csv.DictReader(files.csv.read_text(encoding="utf-8").splitlines()))
    assert (rows[-2]["bytes_sent"], rows[-2]["bytes_received"]) == ("2500000", "12345")
    assert "p999_ms" in rows[-1]
    saved = json.loads(files.json.read_text(encoding="utf-8"))
    step = saved["steps"][-2]
    assert step["bytes_sent"] == 2_500_000 and step["error_kinds"][0]["kind"] == "HTTP 503"
    assert "p999_ms" in step
