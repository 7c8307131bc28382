"""The report stage: files, result.json round trip, HTML content and escaping, CI outputs."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from perfgate import fmt
from perfgate.analysis import degraded_first
from perfgate.errors import OutputError, ResultFileError
from perfgate.models import RESULT_SCHEMA, EndpointStats, RunResult, to_jsonable
from perfgate.report import ReportFiles, console_summary, load_result, write_report
from perfgate.report.charts import clean_svg
from perfgate.report.junit import junit_xml
from perfgate.report.markdown import summary_md

try:
    from report_fixtures import ENDPOINTS, fingerprint, make_history, make_result
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import ENDPOINTS, fingerprint, make_history, make_result

DATA = Path(__file__).parent / "data"
EVIL = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CI runner sets this; the tests decide themselves when it is set.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def _variants() -> dict[str, RunResult]:
    return {
        "block": make_result(verdict="block"),
        "pass-no-baseline": make_result(verdict="pass", with_baseline=False),
        "inconclusive": make_result(verdict="inconclusive", limited_above_users=150),
        "censored": make_result(verdict="pass", censored=True),
        "aborted": make_result(verdict="inconclusive", aborted=True),
    }


VARIANTS = _variants()


def _render(result: RunResult, tmp_path: Path, **kwargs: object) -> tuple[ReportFiles, str]:
    files = write_report(result, tmp_path / "report", **kwargs)  # type: ignore[arg-type]
    return files, files.html.read_text(encoding="utf-8")


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, flags=re.S)


# ---------------------------------------------------------------------------------------------
# Files and result.json
# ---------------------------------------------------------------------------------------------


def test_write_report_writes_every_file_atomically(tmp_path: Path) -> None:
    files, _ = _render(VARIANTS["block"], tmp_path)
    expected = {
        "result.json",
        "steps.csv",
        "endpoints.csv",
        "summary.md",
        "junit.xml",
        "index.html",
    }
    assert {p.name for p in files.dir.iterdir()} == expected  # no temp files left behind
    for path in (files.html, files.json, files.junit, files.markdown, files.csv):
        assert path.parent == files.dir and path.stat().st_size > 0
    umask = os.umask(0)
    os.umask(umask)
    assert files.html.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any other file


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_result_json_round_trips(name: str, tmp_path: Path) -> None:
    result = VARIANTS[name]
    files, _ = _render(result, tmp_path)
    assert load_result(files.json) == result


def test_result_json_has_the_design_keys(tmp_path: Path) -> None:
    files, _ = _render(VARIANTS["block"], tmp_path)
    data = json.loads(files.json.read_text(encoding="utf-8"))
    for key in (
        "schema", "scenario", "release", "verdict", "reasons", "saturation", "baseline", "steps",
        "generator", "started_at", "finished_at", "perfgate_version",
    ):  # fmt: skip
        assert key in data
    assert data["schema"] == RESULT_SCHEMA
    assert {"users", "throughput_rps", "broken", "reason"} <= data["saturation"].keys()
    assert data["baseline"]["release"] == "v1.4.0"
    assert {"users", "throughput_rps"} <= data["baseline"]["saturation"].keys()
    step = data["steps"][0]
    for key in (
        "users", "duration_s", "requests", "failures", "throughput_rps", "p50_ms", "p95_ms",
        "p99_ms", "error_rate", "slo_ok", "histogram", "endpoints",
    ):  # fmt: skip
        assert key in step
    assert step["histogram"], "histograms are kept for re-analysis"


def test_result_json_keeps_flat_records_on_one_line(tmp_path: Path) -> None:
    files, _ = _render(VARIANTS["block"], tmp_path)
    text = files.json.read_text(encoding="utf-8")
    plain = json.dumps(json.loads(text), indent=2)  # one line per histogram bucket
    assert text.count("\n") * 3 < plain.count("\n")
    assert re.search(r'^\s+"histogram": \{"\d+": \d+', text, flags=re.M)


def test_steps_and_endpoints_csv(tmp_path: Path) -> None:
    result = VARIANTS["block"]
    files, _ = _render(result, tmp_path)
    rows = list(csv.DictReader(files.csv.read_text(encoding="utf-8").splitlines()))
    assert len(rows) == len(result.steps)
    assert [int(r["users"]) for r in rows] == [s.users for s in result.steps]
    assert float(rows[-1]["p95_ms"]) == pytest.approx(result.steps[-1].p95_ms, rel=1e-5)
    assert rows[-1]["slo_ok"] == "false" and rows[0]["slo_ok"] == "true"
    ep_rows = list(csv.DictReader(files.endpoints_csv.read_text(encoding="utf-8").splitlines()))
    assert len(ep_rows) == len(result.steps) * len(ENDPOINTS)
    assert {r["name"] for r in ep_rows} == {e[1] for e in ENDPOINTS}


def test_saved_fixtures_load_and_render(tmp_path: Path) -> None:
    saved = sorted(DATA.glob("result_*.json"))
    assert len(saved) >= 2
    for path in saved:
        result = load_result(path)
        files = write_report(result, tmp_path / path.stem)
        assert load_result(files.json) == result


# ---------------------------------------------------------------------------------------------
# load_result errors
# ---------------------------------------------------------------------------------------------


def _bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "result.json"
    path.write_text(text, encoding="utf-8")
    return path


def _good_data() -> dict[str, object]:
    data = to_jsonable(VARIANTS["block"])
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # one reader (perfgate.store.load_result) for `perfgate report` and `baseline promote`
        (None, "file not found"),
        ("{not json", "not valid JSON (line 1 column 2"),
        ("[1, 2]", "not a JSON object (found an array)"),
        ('{"schema": 2, "scenario": "x"}', "written by a newer perfgate (schema 2)"),
        ('{"scenario": "x"}', "missing key 'schema'"),
        ('{"schema": 1, "verdict": NaN}', "NaN is not valid JSON"),
        ("wrong-steps", "key 'steps': expected a list"),
        ("missing-verdict", "missing key 'verdict'"),
        ("bad-verdict", "key 'verdict': 'maybe' is not one of"),
    ],
)
def test_load_result_errors_are_one_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    if content is None:
        path = tmp_path / "missing" / "result.json"
    elif content == "wrong-steps":
        path = _bad(tmp_path, json.dumps({**_good_data(), "steps": "many"}))
    elif content == "missing-verdict":
        data = _good_data()
        del data["verdict"]
        path = _bad(tmp_path, json.dumps(data))
    elif content == "bad-verdict":
        path = _bad(tmp_path, json.dumps({**_good_data(), "verdict": "maybe"}))
    else:
        path = _bad(tmp_path, content)
    with pytest.raises(ResultFileError) as info:
        load_result(path)
    message = str(info.value)
    assert expected in message
    assert message.startswith(f"result file {path}: ")
    assert "\n" not in message
    assert info.value.exit_code == 2


# ---------------------------------------------------------------------------------------------
# HTML content
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_html_shows_verdict_rules_and_reasons(name: str, tmp_path: Path) -> None:
    result = VARIANTS[name]
    _, html = _render(result, tmp_path)
    word = {
        "block": "BLOCKED",
        "pass-no-baseline": "PASS",
        "inconclusive": "INCONCLUSIVE",
        "censored": "PASS",
        "aborted": "ABORTED",
    }[name]
    assert f'<div class="word">{word}</div>' in html
    assert result.rules
    for rule in result.rules:
        row = re.search(
            rf"<td><strong>{re.escape(rule.name)}</strong></td>.*?</tr>", html, flags=re.S
        )
        assert row, rule.name
        assert f"o-{rule.outcome}" in row.group(0)
        for number in (fmt.value(rule.value), fmt.value(rule.threshold), fmt.margin(rule.margin)):
            assert f">{number}</td>" in row.group(0)
    messages = {rule.message for rule in result.rules}
    for reason in result.reasons:
        assert _esc(reason) in html
        # Reasons the rules table already shows are not repeated as a list.
        assert (f"<li>{_esc(reason)}</li>" in html) == (reason not in messages)


def _esc(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


def test_html_has_one_labelled_svg_per_chart(tmp_path: Path) -> None:
    _, html = _render(VARIANTS["block"], tmp_path, history=make_history())
    svgs = _svgs(html)
    # throughput, latency, latency-throughput, errors, timeline, endpoints, generator, history
    assert len(svgs) == 8
    for svg in svgs:
        assert 'role="img"' in svg and 'aria-label="' in svg and "<title>" in svg
        assert "<?xml" not in svg and "DOCTYPE" not in svg
    ids = re.findall(r' id="([^"]+)"', "".join(svgs))
    assert len(ids) == len(set(ids)), "several inline SVGs must not share ids"
    refs = re.findall(r'(?:href="#|url\(#)([^")]+)', html)
    assert refs and set(refs) <= set(re.findall(r' id="([^"]+)"', html))


def test_html_marks_slo_saturation_and_failing_steps(tmp_path: Path) -> None:
    _, html = _render(VARIANTS["block"], tmp_path)
    charts_text = "".join(_svgs(html))
    assert "SLO p95 250 ms" in charts_text
    assert "SLO errors 1 %" in charts_text
    assert "SLO failed" in charts_text
    sat = VARIANTS["block"].saturation
    assert f"saturation {sat.users:.4g} users" in charts_text
    assert "saturation 95 % CI" in charts_text
    assert f"{sat.users:g} users" in html  # the banner's number
    assert 'class="bad"' in html  # failing rows in the step table


def test_baseline_overlay_only_with_a_baseline(tmp_path: Path) -> None:
    _, with_base = _render(VARIANTS["block"], tmp_path / "a")
    _, without = _render(VARIANTS["pass-no-baseline"], tmp_path / "b")
    assert "baseline v1.4.0" in "".join(_svgs(with_base))
    assert "baseline saturation" in "".join(_svgs(with_base))
    assert "baseline" not in "".join(_svgs(without))
    assert "No baseline yet" in without


def test_html_has_timeline_endpoints_diagnostics_history_environment(tmp_path: Path) -> None:
    result = VARIANTS["block"]
    _, html = _render(result, tmp_path, history=make_history())
    assert 'aria-label="Timeline: users, throughput and p95 latency over time"' in html
    first = degraded_first(result.steps, result.slo.p95_ms)
    assert first is not None and first.name == "order book"
    assert "GET order book degraded first: p95" in html
    assert "(first to degrade)" in html  # on the small multiple
    for title in ("Little&#39;s law check", "Universal Scalability Law fit", "Kneedle knee"):
        assert title in html
    assert "Closed-system knee" in html and "Gate ratio" in html
    assert "0.888 (0.85–0.92)" in html
    assert "History of the saturation point" in html
    for release in ("v1.1.0", "v1.2.0", "v1.3.0"):
        assert release in "".join(_svgs(html))
    assert "like for like" in html
    assert "embedded exchange on 127.0.0.1" in html  # staging details
    assert f"<pre>{result.command}</pre>" in html


def test_fingerprint_difference_is_noted(tmp_path: Path) -> None:
    cpus = make_result(baseline_fingerprint=fingerprint(cpu_count=8))
    _, html = _render(cpus, tmp_path / "a")
    assert "Environment differs (CPUs)" in html
    slo = make_result(baseline_fingerprint=fingerprint(slo="p95<=300ms,errors<=1%"))
    _, html = _render(slo, tmp_path / "b")
    assert "Not comparable" in html and "different SLO" in html


def test_censored_aborted_and_ramp_runs(tmp_path: Path) -> None:
    _, censored = _render(VARIANTS["censored"], tmp_path / "c")
    assert "≥ 195 users" in censored and "the SLO never broke" in censored
    assert "SLO held up to the highest level" in censored
    _, aborted = _render(VARIANTS["aborted"], tmp_path / "a")
    assert "v-aborted" in aborted and "partial result" in aborted
    assert "interrupted by SIGINT" in aborted
    ramp = dataclasses.replace(VARIANTS["pass-no-baseline"], mode="ramp", rules=())
    _, html = _render(ramp, tmp_path / "r")
    assert '<div class="word">MANUAL RAMP</div>' in html and "v-ramp" in html


def test_generator_limited_steps_are_flagged(tmp_path: Path) -> None:
    _, html = _render(VARIANTS["inconclusive"], tmp_path)
    assert "The generator was the limit at 3 of 14 steps (first at 165 users)" in html
    assert "generator-limited" in html


def test_minimal_result_renders(tmp_path: Path) -> None:
    """An aborted run with no steps, no timeline and no diagnostics still gets a report."""
    empty = dataclasses.replace(
        VARIANTS["aborted"], steps=(), timeline=(), diagnostics={}, rules=(), baseline_steps=()
    )
    files, html = _render(empty, tmp_path)
    assert "No load level was measured." in html and "<svg" not in html
    assert load_result(files.json) == empty


def test_sparse_adaptive_result_renders(tmp_path: Path) -> None:
    """No endpoints, generator, timeline or fingerprints; levels measured twice, a p95 missing."""
    base = VARIANTS["block"]
    steps = [
        dataclasses.replace(s, endpoints=(), generator=None, histogram={}, phase="bisect")
        for s in base.steps
    ]
    steps.append(dataclasses.replace(steps[5], index=99, phase="replicate"))
    steps[0] = dataclasses.replace(steps[0], p95_ms=None, p50_ms=None, p99_ms=None)
    assert base.baseline is not None
    sparse = dataclasses.replace(
        base,
        steps=tuple(steps),
        timeline=(),
        fingerprint=None,
        baseline=dataclasses.replace(base.baseline, fingerprint=None),
        strategy="adaptive",
        diagnostics={"something_new": [1, 2, 3]},
    )
    files, html = _render(sparse, tmp_path)
    assert "per step (no timeline recorded)" in html
    assert "comparability cannot be checked" in html
    assert "Something new" in html and "[1, 2, 3]" in html
    assert 'id="endpoints"' not in html and "Load generator health" not in html
    assert len(_svgs(html)) == 5  # four against load + the timeline
    assert load_result(files.json) == sparse


# ---------------------------------------------------------------------------------------------
# Escaping, self-containment, redaction
# ---------------------------------------------------------------------------------------------


def _evil_result() -> RunResult:
    endpoints = ((("GET", EVIL, 3, 1.4)), ("POST", "price $5 & <b>bold</b>", 1, 1.0))
    result = make_result(endpoints=endpoints)
    return dataclasses.replace(
        result,
        scenario=f"shop{EVIL}",
        release="v2<img src=x onerror=alert(1)>",
        reasons=(*result.reasons, f"reason {EVIL}"),
        rules=(
            *result.rules,
            dataclasses.replace(result.rules[0], name=f"rule{EVIL}", message=f"msg {EVIL}"),
        ),
        command=f"perfgate run --release '{EVIL}'",
        abort_reason=EVIL,
        aborted=True,
        diagnostics={**result.diagnostics, EVIL: {"meaning": EVIL, EVIL: EVIL}},
        generator={EVIL: EVIL},
    )


def test_everything_is_escaped(tmp_path: Path) -> None:
    files, html = _render(_evil_result(), tmp_path, history=make_history())
    assert "<script" not in html.lower()  # not one script tag, not even our own
    assert "<img" not in html.lower() and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    charts_text = "".join(_svgs(html))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in charts_text  # the endpoint's chart title
    assert "price $5 &amp; &lt;b&gt;bold&lt;/b&gt;" in charts_text  # '$' is not mathtext
    root = ET.fromstring(files.junit.read_text(encoding="utf-8"))
    names = [tc.get("name") for tc in root.iter("testcase")]
    assert f"rule{EVIL}" in names
    summary = files.markdown.read_text(encoding="utf-8")
    # every tag-like '<' is backslash-escaped (literal text in GFM), never an HTML entity
    assert not re.search(r"(?<!\\)<[A-Za-z/!?]", summary)
    assert "\\<script>" in summary
    assert "&lt;" not in summary and "&gt;" not in summary and "&amp;" not in summary


class _Tags(HTMLParser):
    """Every real tag and attribute of a page (text that merely looks like a tag is not one)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    handle_startendtag = handle_starttag


def test_no_external_resources(tmp_path: Path) -> None:
    _, html = _render(_evil_result(), tmp_path, history=make_history())
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert {"link", "iframe", "object", "embed", "image", "foreignobject"}.isdisjoint(parser.tags)
    links = [v for k, v in parser.attrs if k in ("src", "href", "xlink:href", "action", "data")]
    assert links, "the table of contents links at least"
    for value in links:
        assert value.startswith("#"), value  # only in-page anchors
    for key, value in parser.attrs:
        assert not key.startswith("on"), key  # no event handlers
        if key == "xmlns" or key.startswith("xmlns:"):
            assert value.startswith("http://www.w3.org/")
        else:
            assert "url(" not in value or "url(#" in value, value
    assert "@import" not in html and "url(http" not in html


def test_secrets_are_redacted_from_every_output(tmp_path: Path, monkeypatch) -> None:
    secret = "s3cr3t&<tok>"
    result = make_result()
    result = dataclasses.replace(
        result,
        command=f"perfgate run --header 'Authorization: Bearer {secret}'",
        reasons=(*result.reasons, f"target said {secret}"),
        target=f"http://user:{secret}@127.0.0.1:41234",
        steps=tuple(
            dataclasses.replace(
                s,
                errors=((f"401 for token {secret}", 3),),
                endpoints=(
                    *s.endpoints,
                    EndpointStats(
                        name=f"GET /login?token={secret}",
                        method="GET",
                        requests=10,
                        failures=0,
                        throughput_rps=1.0,
                        p50_ms=5.0,
                        p95_ms=6.0,
                        p99_ms=7.0,
                        mean_ms=5.0,
                        error_rate=0.0,
                    ),
                ),
            )
            for s in result.steps
        ),
    )
    summary_file = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    files = write_report(result, tmp_path / "out", secrets=(secret, ""))
    outputs = [*files.dir.iterdir(), summary_file]
    for path in outputs:
        text = path.read_text(encoding="utf-8")
        for form in (secret, "s3cr3t&amp;&lt;tok&gt;", "s3cr3t"):
            assert form not in text, path.name
    assert "Bearer ***" in files.json.read_text(encoding="utf-8")
    assert "Bearer ***" in files.html.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# CI outputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_junit_has_one_testcase_per_rule(name: str) -> None:
    result = VARIANTS[name]
    root = ET.fromstring(junit_xml(result))
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "perfgate.exchange"
    cases = suites[0].findall("testcase")
    extra = 1 if result.aborted else 0
    assert len(cases) == len(result.rules) + extra
    for case, rule in zip(cases, result.rules, strict=False):
        assert case.get("name") == rule.name
        failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
        assert (failure is not None) == (rule.outcome == "fail")
        assert (error is not None) == (rule.outcome == "inconclusive")
        assert (skipped is not None) == (rule.outcome == "skipped")
        if failure is not None:
            assert failure.get("type") == "block" and rule.message in failure.get("message", "")
        if error is not None:
            assert error.get("type") == "inconclusive"
    if result.aborted:
        assert cases[-1].get("name") == "run completed"
        assert cases[-1].find("error").get("type") == "aborted"  # type: ignore[union-attr]
    fails = sum(r.outcome == "fail" for r in result.rules)
    assert suites[0].get("failures") == str(fails)
    assert suites[0].get("tests") == str(len(cases))


def test_junit_without_rules_has_a_verdict_case() -> None:
    result = dataclasses.replace(VARIANTS["block"], rules=())
    root = ET.fromstring(junit_xml(result))
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["verdict"]
    assert cases[0].find("failure") is not None


def test_junit_survives_control_characters() -> None:
    result = dataclasses.replace(VARIANTS["block"], reasons=("bell \x07 and nul \x00",))
    ET.fromstring(junit_xml(result))


def test_summary_md(tmp_path: Path) -> None:
    result = VARIANTS["block"]
    text = summary_md(result, tmp_path / "run")
    assert text.startswith("### perfgate: exchange @ v1\\.5\\.0-rc\\.2 — **BLOCKED**") or (
        "**BLOCKED**" in text.splitlines()[0]
    )
    assert "| Rule | Outcome | Value | Threshold | Margin | Message |" in text
    for rule in result.rules:
        assert f"| {rule.name} | {rule.outcome.upper()} | {fmt.value(rule.value)} |" in text
    assert "| Saturation users |" in text and "Baseline (v1.4.0)" in text
    assert "-11.2 %" in text  # saturation change against the baseline
    assert f"#### Steps ({len(result.steps)})" in text
    assert "<" not in text and "&gt;" not in text  # plain-text Markdown: no HTML, no entities
    assert str(tmp_path / "run" / "index.html") in text
    assert "GET order book degraded first: p95" in text
    no_base = summary_md(VARIANTS["pass-no-baseline"], None)
    assert "**PASS**" in no_base and "No baseline yet" in no_base and "Baseline (" not in no_base


def test_github_step_summary_is_appended(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "gh_summary.md"
    target.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    files = write_report(VARIANTS["block"], tmp_path / "out")
    text = target.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")
    assert files.markdown.read_text(encoding="utf-8") in text


def test_console_summary_fits_one_screen(tmp_path: Path) -> None:
    result = VARIANTS["block"]
    text = console_summary(result, tmp_path / "run")
    lines = text.splitlines()
    assert lines[0] == "perfgate: exchange @ v1.5.0-rc.2: BLOCKED"
    assert len(lines) <= 20 and max(len(line) for line in lines) < 200
    for rule in result.rules:
        assert f"{rule.outcome.upper():<12} {rule.name}:" in text
        assert f"margin {fmt.margin(rule.margin)}" in text
    assert f"saturation: {result.saturation.users:g} users (CI" in text
    assert "GET order book degraded first" in text
    assert "baseline: v1.4.0:" in text
    assert str(tmp_path / "run" / "index.html") in text
    censored = console_summary(VARIANTS["censored"], None)
    assert "saturation: >= 195 users" in censored
    assert "aborted: partial result" in console_summary(VARIANTS["aborted"], None)


# ---------------------------------------------------------------------------------------------
# Output errors
# ---------------------------------------------------------------------------------------------


def test_output_error_when_the_folder_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OutputError) as info:
        write_report(VARIANTS["block"], blocker / "report")
    assert str(blocker / "report") in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 3


def test_output_error_when_a_write_fails(tmp_path: Path, monkeypatch) -> None:
    def disk_full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    out = tmp_path / "report"
    with pytest.raises(OutputError) as info:
        write_report(VARIANTS["block"], out)
    assert str(info.value) == f"cannot write {out / 'result.json'}: No space left on device"
    assert list(out.iterdir()) == []  # the temp file was cleaned up


def test_output_error_when_the_step_summary_cannot_be_appended(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing-dir" / "summary.md"))
    with pytest.raises(OutputError, match="cannot append the summary to"):
        write_report(VARIANTS["block"], tmp_path / "out")
    assert (tmp_path / "out" / "index.html").exists()  # the report itself was written first


# ---------------------------------------------------------------------------------------------
# Charts and helpers
# ---------------------------------------------------------------------------------------------


def test_clean_svg_prefixes_ids_and_drops_the_header() -> None:
    raw = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "x" "http://www.w3.org/x.dtd">\n'
        '<svg width="10pt" height="5pt" viewBox="0 0 10 5" xmlns="http://www.w3.org/2000/svg">'
        "<!-- c --><metadata>m</metadata><style>*{x}</style>"
        '<defs><path id="m1" d="M 0 0.123456 \nL 1 1"/><clipPath id="p2"><rect x="1.23456"/>'
        '</clipPath></defs><g id="figure_1"><use xlink:href="#m1" clip-path="url(#p2)"/></g></svg>'
    )
    svg = clean_svg(raw, "k", 'a "label" <x>')
    assert svg.startswith('<svg viewBox="0 0 10 5"')
    assert 'id="k-m1"' in svg and 'href="#k-m1"' in svg and "url(#k-p2)" in svg
    assert 'id="figure_1"' not in svg and "<!--" not in svg and "metadata" not in svg
    assert "<style" not in svg and 'x="1.23"' in svg and "0.12 L" in svg
    assert 'aria-label="a &quot;label&quot; &lt;x&gt;"' in svg


def test_degraded_first_falls_back_to_growth() -> None:
    """perfgate.analysis.degraded_first, whose result the report shows."""
    crossing = degraded_first(VARIANTS["block"].steps, 250.0)
    assert crossing is not None and crossing.users == 120 and crossing.name == "order book"
    alike = degraded_first(make_result(censored=True).steps, 250.0)  # nothing crosses the SLO
    assert alike is not None and alike.name == "" and "grew alike" in alike.text
    steps = list(make_result(censored=True).steps)
    last = steps[-1]
    slow = tuple(
        dataclasses.replace(e, p95_ms=(e.p95_ms or 0) * 3) if e.name == "balances" else e
        for e in last.endpoints
    )
    steps[-1] = dataclasses.replace(last, endpoints=slow)
    grew = degraded_first(tuple(steps), 250.0)
    assert grew is not None and grew.users is None and grew.name == "balances"
    assert "GET balances grew most" in grew.text


def test_report_shows_the_recorded_degradation_and_computes_none() -> None:
    """analysis.degraded_first decides; the report only reads result.diagnostics."""
    from html import escape

    from perfgate.report.html import render_html

    recorded = make_result(n_steps=6)
    assert "degraded_first" in recorded.diagnostics
    text = recorded.diagnostics["degraded_first"]["text"]
    diagnostics = {k: v for k, v in recorded.diagnostics.items() if k != "degraded_first"}
    bare = dataclasses.replace(recorded, diagnostics=diagnostics)  # e.g. an older result.json
    assert text in summary_md(recorded) and text not in summary_md(bare)
    assert "degraded first" not in summary_md(bare) and "grew" not in summary_md(bare)
    assert "degraded" not in console_summary(bare, None)
    shown = escape(text.rsplit(";", 1)[-1].strip())  # the part without an apostrophe
    page = render_html(recorded)
    assert shown in page
    assert "Degraded first" not in page  # not repeated as a knee diagnostic
    assert shown not in render_html(bare)
    odd = dataclasses.replace(recorded, diagnostics={**diagnostics, "degraded_first": [1]})
    assert "degraded" not in console_summary(odd, None)  # malformed: no line, no crash


def test_generator_chart_draws_the_threshold_steps_judge_by() -> None:
    from perfgate.report.charts import generator_chart
    from perfgate.steps import CPU_LIMIT_PERCENT

    chart = generator_chart(make_result(n_steps=4).steps)
    assert chart is not None
    assert f"limit {CPU_LIMIT_PERCENT:g} % of a core" in chart.svg


def test_rendering_never_imports_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys; sys.path[:0] = [sys.argv[1]]\n"
        "from report_fixtures import make_result\n"
        "from perfgate.report import write_report\n"
        "from pathlib import Path\n"
        "write_report(make_result(n_steps=4), Path(sys.argv[2]))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)],
        check=True,
        timeout=120,
    )


def test_hundred_step_report_stays_small(tmp_path: Path) -> None:
    result = make_result(n_steps=100, step_users=5, slots=31, limited_above_users=420)
    files, html = _render(result, tmp_path, history=make_history())
    assert files.html.stat().st_size < 2_000_000
    assert files.json.stat().st_size < 2_000_000
    assert len(_svgs(html)) == 8
