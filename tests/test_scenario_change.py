"""A scenario edited since the stored baseline: which keys changed, and the ways forward that
need no file deleted (side by side; ``--accept-scenario-change``). The real CLI in process, with
test_cli.py's simulated load in Locust's place (deterministic verdicts, a second or two each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import perfgate.report.html
from perfgate.baseline import load_baseline

try:
    from test_cli import SCENARIO, Env, env, target
except ImportError:  # tests/ imported as a package
    from tests.test_cli import SCENARIO, Env, env, target  # noqa: F401 (fixtures)

EDITED = SCENARIO.replace("max_users: 200", "max_users: 240").replace("p95_ms: 200", "p95_ms: 220")


@pytest.fixture(autouse=True)
def no_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    """index.html's charts (matplotlib: seconds a run) are not what these tests are about."""
    monkeypatch.setattr(perfgate.report.html, "render_html", lambda result, **kw: "<html></html>")


def result_of(env: Env, release: str) -> dict[str, Any]:
    (path,) = env.reports.glob(f"cli/{release}-*/result.json")
    return dict(json.loads(path.read_text()))


def rule(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in result["rules"] if r["name"] == name)


def edit(env: Env) -> None:
    assert EDITED != SCENARIO
    env.scenario.write_text(EDITED)


def test_stored_numbers_of_another_scenario_name_the_changed_keys_and_the_way_on(
    env: Env,
) -> None:
    assert env.gate("--promote", release="r1").code == 0
    edit(env)
    ran = env.gate(release="r2")
    assert ran.code == 4, ran.err
    message = rule(result_of(env, "r2"), "comparability")["message"]
    assert "ramp.max_users 200 → 240" in message and "slo.p95_ms 200 → 220" in message
    assert "side by side" in message and '--accept-scenario-change "why"' in message
    change = result_of(env, "r2")["scenario_change"]
    assert change["handled"] == "refused" and change["previous_release"] == "r1"
    assert {"key": "ramp.max_users", "old": "200", "new": "240"} in change["changes"]


def test_an_accepted_change_is_recorded_and_starts_the_new_baselines(env: Env) -> None:
    assert env.gate("--promote", release="r1").code == 0
    edit(env)
    ran = env.gate("--promote", "--accept-scenario-change", "raised max_users", release="r2")
    assert ran.code == 0, ran.err
    result = result_of(env, "r2")
    assert result["baseline"] is None  # r1's numbers were not judged
    assert result["scenario_change"]["reason"] == "raised max_users"
    assert result["scenario_change"]["handled"] == "accepted"
    regression = rule(result, "regression")
    assert (
        regression["outcome"] == "skipped"
        and "accepted (raised max_users)" in regression["message"]
    )
    assert any("accepted (raised max_users)" in r for r in result["reasons"])
    stored = load_baseline(env.baselines / "cli" / "r2.json")
    assert stored.scenario_change["reason"] == "raised max_users"
    assert stored.fingerprint is not None and stored.fingerprint.scenario["ramp.max_users"] == "240"
    # the next release is judged against r2, measured under the same (new) scenario
    ran = env.gate(release="r3")
    assert rule(result_of(env, "r3"), "comparability")["outcome"] == "pass", ran.err
    assert result_of(env, "r3")["scenario_change"] == {}


def test_accepting_a_change_that_did_not_happen_is_refused(env: Env) -> None:
    assert env.gate("--promote", release="r1").code == 0
    ran = env.gate("--accept-scenario-change", "just in case", release="r2")
    assert ran.code == 2
    assert "has not changed since r1's baseline: nothing to accept" in ran.error
    ran = env.gate("--accept-scenario-change", "  ", release="r2")
    assert ran.code == 2 and "give the reason" in ran.error


def test_side_by_side_measures_the_previous_release_under_the_new_scenario(env: Env) -> None:
    """The stored fingerprint does not lock a side-by-side gate: both builds run the new one."""
    assert env.gate("--promote", "--baseline-target", env.target, release="r1").code == 0
    edit(env)
    ran = env.gate("--baseline-target", env.target, release="r2")
    result = result_of(env, "r2")
    assert result["baseline"]["mode"] == "side-by-side"
    assert all(r["name"] != "comparability" for r in result["rules"])
    assert ran.code != 4 or "comparab" not in ran.err, ran.err
    assert any("was measured again under it, side by side" in r for r in result["reasons"])
    assert result["scenario_change"]["handled"] == "measured side by side"


def test_a_baseline_without_per_key_records_still_says_the_scenario_changed(env: Env) -> None:
    path = Path(env.baselines / "cli" / "r1.json")
    assert env.gate("--promote", release="r1").code == 0
    data = json.loads(path.read_text())
    del data["fingerprint"]["scenario"]  # as written by perfgate before the keys were recorded
    path.write_text(json.dumps(data))
    edit(env)
    assert env.gate(release="r2").code == 4
    message = rule(result_of(env, "r2"), "comparability")["message"]
    assert "scenario changed (hash " in message and "--accept-scenario-change" in message
