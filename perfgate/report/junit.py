"""junit.xml: the verdict as test cases, for CI systems that show JUnit results.

Every gate rule is one test case: ``fail`` → ``<failure type="block">``, ``inconclusive`` →
``<error type="inconclusive">`` (CI shows it red, but a script can tell it from a block),
``skipped`` → ``<skipped>``, ``pass`` → a passing case. A result without rules gets one
``verdict`` case instead, and an aborted run one extra ``run completed`` case with
``<error type="aborted">``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from perfgate import fmt
from perfgate.models import RunResult
from perfgate.report.common import duration_s, verdict_word

__all__ = ["junit_xml"]

# XML 1.0 forbids most control characters even when escaped.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Case = tuple[str, str | None, str, str]  # name, element (failure/error/skipped/None), type, message


def _x(text: object) -> str:
    return _XML_BAD.sub("?", str(text))


def _cases(result: RunResult) -> list[Case]:
    cases: list[Case] = []
    for rule in result.rules:
        kind = {"fail": "failure", "inconclusive": "error", "skipped": "skipped"}.get(rule.outcome)
        ctype = {"fail": "block", "inconclusive": "inconclusive"}.get(rule.outcome, "")
        numbers = (
            f" (value {fmt.value(rule.value)}, threshold {fmt.value(rule.threshold)}, "
            f"margin {fmt.margin(rule.margin)})"
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
    return cases


def junit_xml(result: RunResult) -> str:
    """junit.xml: one testsuite ``perfgate.<scenario>``, one testcase per gate rule."""
    suite_name = f"perfgate.{result.scenario}"
    cases = _cases(result)
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
        ("saturation_users", fmt.users(result.saturation.users)),
        ("saturation_throughput_rps", fmt.rps(result.saturation.throughput_rps)),
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
