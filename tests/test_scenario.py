"""The config stage: every bad input is one ScenarioError naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfgate.errors import ScenarioError
from perfgate.scenario import load_scenario, parse_scenario

MINIMAL = """\
name: shop
users:
  requests:
    - {name: home, path: /}
slo: {p95_ms: 100}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, env=env or {})
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert message.startswith(str(path)), "errors name the file"
    return message


def test_repository_scenarios_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "scenarios").glob("*.yaml"))
    assert root / "scenarios" / "exchange.yaml" in files
    for f in files:
        scen = load_scenario(f, env={"EXCHANGE_TOKEN": "secret-token-value"})
        assert scen.name and scen.slo.p95_ms > 0


def test_minimal_scenario_gets_defaults(tmp_path: Path) -> None:
    scen = load_scenario(write(tmp_path, MINIMAL))
    assert scen.name == "shop"
    assert scen.staging.provider == "none"  # the user's service at --target, not the demo
    assert scen.users.requests[0].method == "GET"
    assert scen.ramp.strategy == "linear"
    assert scen.slo.error_rate == 0.01
    assert scen.gate.min_users is None
    assert len(scen.content_hash) == 64


def test_content_hash_changes_with_content(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, MINIMAL, "a.yaml"))
    b = load_scenario(write(tmp_path, MINIMAL.replace("100", "120"), "b.yaml"))
    assert a.content_hash != b.content_hash


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "rampp: {}\n", "rampp: unknown key"),
        (
            MINIMAL + "ramp: {max_user: 5}\n",
            "ramp.max_user: unknown key (did you mean 'max_users'?)",
        ),
        (MINIMAL + "ramp: {max_users: ten}\n", "ramp.max_users: expected an integer"),
        (MINIMAL + "ramp: {step_users: 0}\n", "ramp.step_users: must be ≥ 1, got 0"),
        (MINIMAL + "ramp: {start_users: -5}\n", "ramp.start_users: must be ≥ 1, got -5"),
        (
            MINIMAL + "ramp: {start_users: 50, max_users: 10}\n",
            "ramp.max_users: must be ≥ ramp.start_users (50)",
        ),
        (MINIMAL + "ramp: {step_seconds: 0}\n", "ramp.step_seconds: must be > 0"),
        (MINIMAL + "ramp: {strategy: random}\n", "ramp.strategy: must be one of linear, adaptive"),
        (MINIMAL + "ramp: {max_users: 99999999999}\n", "ramp.max_users: is implausibly large"),
        (MINIMAL + "gate: {max_regression: 2}\n", "gate.max_regression: must be ≤ 1"),
        (
            MINIMAL.replace("slo: {p95_ms: 100}", "slo: {p95_ms: .nan}"),
            "slo.p95_ms: must be a finite number",
        ),
        (MINIMAL.replace("slo: {p95_ms: 100}", "slo: {error_rate: 0.1}"), "slo.p95_ms: required"),
        (MINIMAL.replace("name: shop", "name: ../etc"), "name: '../etc'"),
        (MINIMAL.replace("name: shop\n", ""), "name: required"),
        ("name: x\nusers:\n  requests: []\nslo: {p95_ms: 1}\n", "users.requests: is empty"),
        (
            "name: x\nusers: {requests: {a: 1}}\nslo: {p95_ms: 1}\n",
            "users.requests: expected a list",
        ),
        (MINIMAL.replace("path: /", "path: http://evil.example/"), "users.requests[0].path"),
        (MINIMAL.replace("path: /", "path: //evil.example/x"), "must be a path on the target"),
        (
            MINIMAL.replace("path: /", "path: /, method: TELEPORT"),
            "users.requests[0].method: must be one of",
        ),
        (MINIMAL.replace("path: /", "path: /, weight: 0"), "users.requests[0].weight: must be ≥ 1"),
        (
            MINIMAL.replace("{name: home, path: /}", "{name: home}"),
            "users.requests[0].path: required",
        ),
        (MINIMAL + "staging: {provider: kubernetes}\n", "staging.kubernetes: required"),
        (MINIMAL + "staging: {provider: docker}\n", "staging.provider: must be one of"),
        (MINIMAL + "load: {workers: 0}\n", "load.workers: must be ≥ 1"),
        (MINIMAL + "schema: 2\n", "schema: scenario schema 2 is newer"),
        ("name: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        (MINIMAL + "name: again\n", "duplicate key 'name'"),
        (
            "name: x\nusers: {locustfile: nothere.py}\nslo: {p95_ms: 1}\n",
            "users.locustfile: nothere.py: no such file",
        ),
    ],
)
def test_bad_input_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    assert "not UTF-8 text" in error_of(tmp_path, b"name: caf\xe9\n")


def test_oversized_file(tmp_path: Path) -> None:
    assert "larger than" in error_of(tmp_path, "# " + "x" * (1 << 20) + "\n")


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [lol, lol]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 60)]
    text = MINIMAL + "staging:\n  embedded:\n" + "".join(f"    {ln}\n" for ln in lines)
    assert "alias bomb" in error_of(tmp_path, text)


def test_env_substitution_and_secrets(tmp_path: Path) -> None:
    text = MINIMAL.replace("users:\n", "users:\n  headers: {Authorization: 'Bearer ${TOKEN}'}\n")
    scen = load_scenario(write(tmp_path, text), env={"TOKEN": "s3cr3t-value"})
    assert scen.users.headers == {"Authorization": "Bearer s3cr3t-value"}
    assert "s3cr3t-value" in scen.users.secret_values
    assert "Bearer s3cr3t-value" in scen.users.secret_values
    assert "s3cr3t" not in repr(scen), "secrets stay out of repr"
    assert "s3cr3t" not in scen.content_hash


def test_what_is_a_secret(tmp_path: Path) -> None:
    """perfgate.redaction's rules: ${VAR} values, authorization-like and `secret: true` headers."""
    headers = (
        "  headers:\n"
        "    Accept: application/json\n"
        "    X-Trace: '1'\n"
        "    Cookie: session=abc\n"
        "    X-Auth-Token: t0k\n"
        "    X-Tenant: {value: tenant-77, secret: true}\n"
        "    X-Region: {value: eu}\n"
        "    X-Short: '${SHORT}'\n"
    )
    scen = load_scenario(
        write(tmp_path, MINIMAL.replace("users:\n", "users:\n" + headers)), env={"SHORT": "7"}
    )
    assert scen.users.headers["X-Tenant"] == "tenant-77"
    assert set(scen.users.secret_values) == {"session=abc", "t0k", "tenant-77", "7"}
    bad = MINIMAL.replace("users:\n", "users:\n  headers: {X-A: {value: a, secret: 'yes'}}\n")
    assert "users.headers.X-A.secret: expected true or false" in error_of(tmp_path, bad)


def test_a_short_secret_is_not_quoted_in_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace("path: /", "path: '${P}/x'")
    message = error_of(tmp_path, text, env={"P": "ab"})
    assert "'***/x'" in message and "ab/x" not in message


def test_missing_env_var_names_it(tmp_path: Path) -> None:
    text = MINIMAL.replace("users:\n", "users:\n  headers: {X-Token: '${NOPE_TOKEN}'}\n")
    assert "users.headers.X-Token: environment variable NOPE_TOKEN is not set" in error_of(
        tmp_path, text
    )


def test_header_injection_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace("users:\n", "users:\n  headers: {X-A: '${V}'}\n")
    assert "line breaks" in error_of(tmp_path, text, env={"V": "a\r\nX-Evil: 1"})


def test_relative_paths_resolve_from_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "lf.py").write_text("from locust import User\n")
    text = "name: x\nusers: {locustfile: lf.py}\nslo: {p95_ms: 5}\n"
    scen = load_scenario(write(tmp_path, text))
    assert scen.users.locustfile == str((tmp_path / "lf.py").resolve())
    assert scen.users.requests == ()


def test_requests_and_locustfile_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "lf.py").write_text("")
    text = MINIMAL.replace("users:\n", "users:\n  locustfile: lf.py\n")
    assert "either `requests` or `locustfile`" in error_of(tmp_path, text)


def test_parse_scenario_without_file() -> None:
    scen = parse_scenario(MINIMAL, source="inline")
    assert scen.path == "inline"


def test_content_hash_ignores_staging_and_gate(tmp_path: Path) -> None:
    """Releases differ in their staging; the same load test must stay comparable."""
    a = load_scenario(write(tmp_path, MINIMAL + "staging: {embedded: {cache: true}}\n", "a.yaml"))
    b = load_scenario(
        write(
            tmp_path,
            MINIMAL + "staging: {embedded: {cache: false}}\ngate: {min_users: 5}\n",
            "b.yaml",
        )
    )
    assert a.content_hash == b.content_hash
