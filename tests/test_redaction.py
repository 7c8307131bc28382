"""perfgate.redaction: what is a secret, and that only secrets are hidden (field by field)."""

from __future__ import annotations

import dataclasses

import pytest

from perfgate import redaction
from perfgate.models import BaselineRef, RunResult, Saturation, StepStats


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("proxy-authorization", True),
        ("Cookie", True),
        ("X-Api-Key", True),
        ("X-CSRF-Token", True),
        ("X-Client-Secret", True),
        ("Accept", False),
        ("X-Trace", False),
        ("Content-Type", False),
    ],
)
def test_secret_header_names(name: str, secret: bool) -> None:
    assert redaction.is_secret_header(name) is secret


def test_short_secrets_only_where_they_stand_alone() -> None:
    text = "GET /work/7: 1747 req/s at 17 users, p95 7 ms"
    assert redaction.redact_text(text, ["7"]) == "GET /work/***: 1747 req/s at 17 users, p95 *** ms"
    assert redaction.redact_text("Bearer tok-1234 tok-12345", ["tok-1234"]) == "Bearer *** ***5"


@pytest.mark.parametrize(
    ("url", "shown", "password"),
    [
        ("http://bob:s3cret@h:81/x", "http://bob:***@h:81/x", "s3cret"),
        ("http://bob:p@ss@h/x", "http://bob:***@h/x", "p@ss"),
        ("http://u:hunter2@[::1:80", "http://u:***@[::1:80", "hunter2"),  # urllib raises here
        ("http://bob@h/x", "http://bob@h/x", None),
        ("http://h:80/x", "http://h:80/x", None),
    ],
)
def test_url_passwords(url: str, shown: str, password: str | None) -> None:
    assert redaction.redact_url(url) == shown
    assert redaction.url_password(url) == password


def _result(**changes: object) -> RunResult:
    sat = Saturation(users=111.0, throughput_rps=1.5, broken=True, reason="p95 1 ms > 1 ms")
    step = StepStats(
        users=1,
        duration_s=1.0,
        requests=11,
        failures=1,
        throughput_rps=1.0,
        p50_ms=1.0,
        p95_ms=1.0,
        p99_ms=1.0,
        error_rate=0.1,
        slo_ok=True,
        errors=(("GET /x/1: HTTP 500", 1),),
    )
    base = BaselineRef(release="r1", saturation=sat, path="baselines/s1/r1.json")
    result = RunResult(
        scenario="s1",
        release="r1",
        verdict="pass",
        reasons=("saturation 1 users",),
        saturation=sat,
        baseline=base,
        steps=(step,),
        generator={"workers": 1, "note": "1 worker"},
        started_at="2026-01-01T00:00:01+00:00",
        finished_at="2026-01-01T00:00:11+00:00",
        perfgate_version="0.1.0",
    )
    return dataclasses.replace(result, **changes)


def test_records_are_redacted_field_by_field() -> None:
    """Numbers, enumerations and names are data; free text loses the secret."""
    result = _result()
    out = redaction.redact_record(result, ["1", "pass"])
    assert (out.scenario, out.release, out.verdict) == ("s1", "r1", "pass")
    assert out.baseline is not None and out.baseline.release == "r1"
    assert out.baseline.path == "baselines/s1/r1.json"
    assert out.steps[0].requests == 11 and out.saturation.users == 111.0
    assert out.started_at == result.started_at and out.perfgate_version == "0.1.0"
    assert out.reasons == ("saturation *** users",)
    assert out.steps[0].errors == (("GET /x/***: HTTP 500", 1),)
    assert out.generator == {"workers": 1, "note": "*** worker"}
    assert redaction.redact_record(result, []) is result
