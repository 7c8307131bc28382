# ruff: noqa: F811  the fixtures ``env`` and ``target`` come from test_cli (imported by name)
"""CLI conventions: --version, PERFGATE_<OPTION> variables, choices, --start-users, contradictory
ramp overrides, --quiet, --json on validate and baseline list/show, --host/--locustfile.

In-process through ``perfgate.cli._main`` with the simulator in the load stage's seat (the
fixtures of ``test_cli``); a locustfile is imported by the real engine child.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import perfgate
import perfgate.load.check as locustfile_check
from perfgate import __version__
from perfgate.cli import app
from perfgate.errors import InputError
from perfgate.pipeline import RunOptions, prepare_scenario
from perfgate.scenario import DEFAULT_SCENARIO, SERVICE_SCENARIO
from tests.test_cli import Env, FakeRunner, _stored, env, target  # noqa: F401  fixtures

GOOD_LOCUSTFILE = """\
from locust import HttpUser, task


class Shopper(HttpUser):
    @task
    def home(self):
        self.client.get("/")
"""


def _steps(ran_out: str) -> list[int]:
    return [s["users"] for s in json.loads(ran_out)["steps"]]


def test_version_exits_0_in_a_real_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "perfgate", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"perfgate {__version__}"


@pytest.mark.parametrize("command", ["run", "ramp"])
def test_every_option_names_its_environment_variable_in_help(env: Env, command: str) -> None:
    ran = env.run(command, "--help")
    assert ran.code == 0
    text = " ".join(ran.out.split())
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    options = [p for p in click_command.params if p.name not in ("help",)]
    assert len(options) > 15
    for param in options:
        expected = "PERFGATE_JSON" if param.name == "as_json" else f"PERFGATE_{param.name.upper()}"
        assert f"env var: {expected}" in text, param.name


def test_options_come_from_the_environment_and_the_command_line_wins(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERFGATE_MAX_USERS", "60")
    monkeypatch.setenv("PERFGATE_JSON", "1")
    ran = env.gate()
    assert ran.code == 0, ran.err
    assert max(_steps(ran.out)) == 60
    ran = env.gate("--max-users", "100")
    assert ran.code == 0, ran.err
    assert max(_steps(ran.out)) > 60


def test_start_users_overrides_the_first_level(env: Env) -> None:
    ran = env.gate("--start-users", "40", "--json")
    assert ran.code == 0, ran.err
    assert min(_steps(ran.out)) == 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-users", "10"), "--max-users 10 is below the scenario's ramp.start_users 20"),
        (("--start-users", "300"), "--start-users 300 is above the scenario's ramp.max_users 200"),
        (("--start-users", "50", "--max-users", "40"), "--max-users 40 is below --start-users 50"),
    ],
)
def test_contradictory_ramp_overrides_are_refused_not_clamped(
    env: Env, args: tuple[str, ...], message: str
) -> None:
    ran = env.gate(*args)
    assert ran.code == 2
    assert ran.error.startswith(f"perfgate: error: {message}")
    assert FakeRunner.created == 0


@pytest.mark.parametrize(
    ("option", "value", "choices"),
    [
        ("--staging", "cloud", "'none', 'embedded', 'kubernetes'"),
        ("--strategy", "random", "'linear', 'adaptive'"),
    ],
)
def test_enumerations_are_choices(env: Env, option: str, value: str, choices: str) -> None:
    ran = env.gate(option, value)
    assert ran.code == 2
    assert f"'{value}' is not one of {choices}" in ran.err
    assert FakeRunner.created == 0


def test_quiet_prints_only_the_verdict_line(env: Env) -> None:
    ran = env.gate("--quiet")
    assert ran.code == 0, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("perfgate: cli @ r2: PASS")
    assert "report: " in lines[0]


def test_baseline_list_and_show_as_json(env: Env) -> None:
    _stored(env, "r1")
    ran = env.run("baseline", "list", "--json", "--baseline-dir", str(env.baselines))
    assert ran.code == 0, ran.err
    listed = json.loads(ran.out)
    assert [(b["scenario"], b["release"]) for b in listed["baselines"]] == [("cli", "r1")]
    assert listed["problems"] == []
    ran = env.run(
        "baseline", "show", "--json", "--scenario", "cli", "--baseline-dir", str(env.baselines)
    )
    assert ran.code == 0, ran.err
    shown = json.loads(ran.out)
    assert (shown["scenario"], shown["release"]) == ("cli", "r1")


def test_validate_json(env: Env) -> None:
    ran = env.run("validate", str(env.scenario), "--json")
    assert ran.code == 0, ran.err
    record = json.loads(ran.out)
    assert record["ok"] is True
    assert record["name"] == "cli"
    assert record["requests"] == [{"name": "work", "method": "GET", "weight": 1}]
    env.scenario.write_text("name: cli\nusers: {requests: []}\nbogus: 1\n")
    ran = env.run("validate", str(env.scenario), "--json")
    assert ran.code == 2
    record = json.loads(ran.out)
    assert record["ok"] is False
    assert "bogus" in record["error"]
    assert "bogus" in ran.error


def test_validate_imports_the_locustfile_in_a_child(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.py"
    good.write_text(GOOD_LOCUSTFILE)
    ran = env.run("validate", str(env.scenario), "--locustfile", str(good))
    assert ran.code == 0, ran.err
    assert "locustfile good.py (Shopper)" in ran.out
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nraise RuntimeError('no config for ' + os.sep + 'etc')\n")
    ran = env.run("validate", str(env.scenario), "-f", str(bad))
    assert ran.code == 2
    assert ran.error == (
        f"perfgate: error: users.locustfile {bad} could not be loaded: "
        "RuntimeError: no config for /etc"
    )
    hangs = tmp_path / "hangs.py"
    hangs.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(locustfile_check, "LOCUSTFILE_TIMEOUT_S", 3.0)
    ran = env.run("validate", str(env.scenario), "-f", str(hangs))
    assert ran.code == 2
    assert "importing it did not finish within 3 s" in ran.error


def test_locustfile_option_replaces_the_requests(env: Env, tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(GOOD_LOCUSTFILE)
    scen = prepare_scenario(RunOptions(scenario=env.scenario, locustfile=good))
    assert scen.users.locustfile == str(good.resolve())
    assert scen.users.requests == ()
    with pytest.raises(InputError, match="must be an existing Python file"):
        prepare_scenario(RunOptions(scenario=env.scenario, locustfile=tmp_path / "none.py"))


def test_a_scenario_without_staging_loads_the_given_host_never_the_demo(env: Env) -> None:
    env.scenario.write_text(
        "name: mine\nusers:\n  requests:\n    - {name: work, path: /work}\n"
        "ramp: {start_users: 20, step_users: 20, max_users: 200, step_seconds: 2}\n"
        "slo: {p95_ms: 200}\n"
    )
    base = ("run", "-s", str(env.scenario), "--report-dir", str(env.reports))
    ran = env.run(*base, "--baseline-dir", str(env.baselines))
    assert ran.code == 2
    assert "needs a target URL: --target/--host URL, PERFGATE_TARGET or the scenario" in ran.error
    ran = env.run(*base, "--baseline-dir", str(env.baselines), "-H", env.target, "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["target"] == env.target


def test_the_default_scenario_is_packaged_and_is_the_repositorys_file() -> None:
    root = Path(__file__).resolve().parents[1]
    assert DEFAULT_SCENARIO.is_file()
    assert DEFAULT_SCENARIO.parent.parent == Path(perfgate.__file__).resolve().parent
    # one file: the repository's scenarios/exchange.yaml is a symlink to the packaged one
    assert (root / "scenarios" / "exchange.yaml").resolve() == DEFAULT_SCENARIO


def test_run_finds_the_default_scenario_from_any_folder(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(env.tmp)
    ran = env.run("run", "--max-users", "10")  # refused after the scenario was read: no load
    assert ran.code == 2
    assert f"ramp.start_users 50 ({DEFAULT_SCENARIO})" in ran.error


def test_a_url_or_locustfile_without_a_scenario_is_your_service_not_the_exchange(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(env.tmp)  # no ./perfgate.yaml here
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(GOOD_LOCUSTFILE)
    base = ("run", "--json", "--report-dir", str(env.reports), "--baseline-dir", str(env.baselines))
    ran = env.run(*base, "--host", env.target)
    assert ran.code == 0, ran.err
    result = json.loads(ran.out)
    assert (result["scenario"], result["target"]) == ("service", env.target)
    assert "no scenario given: the generic service scenario" in ran.err
    ran = env.run(*base, "-f", str(locustfile), "--max-users", "5")  # --locustfile alone too
    assert ran.code == 2 and "--max-users 5 is below the scenario's ramp.start_users 10" in ran.err
    assert f"({SERVICE_SCENARIO})" in ran.err  # chosen before anything ran
    scen = prepare_scenario(RunOptions(scenario=SERVICE_SCENARIO, locustfile=locustfile))
    assert scen.staging.provider == "none" and scen.gate.min_users is None
    assert scen.users.locustfile == str(locustfile.resolve())
