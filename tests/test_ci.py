"""CI integration: the pull request comment, its one-comment upsert against a fake forge API on
127.0.0.1, and the GitHub Action's and GitLab template's steps run with a fake CI environment.

act is not available here, so the composite action's shell steps are taken from action.yml,
their ``${{ }}`` expressions filled in from a fake ``inputs``/``github``/``steps`` context, and
run with bash as GitHub runs them (``bash --noprofile --norc -eo pipefail``). The ``uses:``
steps (setup-python, upload-artifact) are GitHub's own and are only checked for their inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

import perfgate
from perfgate import ci
from perfgate.errors import InputError
from perfgate.models import LookRecord, RunResult, to_jsonable

try:
    from report_fixtures import make_result
    from test_gitstore import FAKE_LOAD_CLI, _Ok, branch_files, serve
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import make_result
    from tests.test_gitstore import FAKE_LOAD_CLI, _Ok, branch_files, serve

REPO = Path(perfgate.__file__).resolve().parents[1]
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
GITLAB = yaml.safe_load((REPO / "ci" / "gitlab" / "perfgate.gitlab-ci.yml").read_text())
TOKEN = "ghs_t0ken_for_tests"


# ---------------------------------------------------------------------------------------------
# A fake forge: GitHub's issue comments and GitLab's merge request notes
# ---------------------------------------------------------------------------------------------


class Forge:
    def __init__(self) -> None:
        self.comments: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, path, auth header
        self.next_id = 1000
        self.fail_with: int | None = None

    def add(self, body: str) -> int:
        self.next_id += 1
        self.comments[self.next_id] = {"id": self.next_id, "body": body}
        return self.next_id


def _handler(forge: Forge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length", "0"))
            return dict(json.loads(self.rfile.read(length) or b"{}"))

        def _serve(self, method: str) -> None:
            auth = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN") or ""
            path, _, query = self.path.partition("?")
            forge.requests.append((method, path, auth))
            if forge.fail_with:
                self._answer(forge.fail_with, {"message": "no"})
                return
            item = re.search(r"/(?:comments|notes)/(\d+)$", path)
            if item and method in ("PATCH", "PUT"):
                comment = forge.comments[int(item.group(1))]
                comment["body"] = self._body()["body"]
                self._answer(200, comment)
            elif method == "POST":
                cid = forge.add(self._body()["body"])
                self._answer(201, forge.comments[cid])
            else:
                params = dict(p.split("=") for p in query.split("&") if p)
                page, size = int(params.get("page", 1)), int(params.get("per_page", 30))
                items = list(forge.comments.values())[(page - 1) * size : page * size]
                self._answer(200, items)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def forge() -> Iterator[tuple[Forge, str]]:
    state = Forge()
    for address in serve(_handler(state)):
        yield state, f"http://{address}"


def passing_result(**changes: Any) -> RunResult:
    result = make_result(verdict="pass", with_histograms=False)
    return dataclasses.replace(result, aborted=False, **changes)


def write_result(path: Path, result: RunResult) -> Path:
    path.write_text(json.dumps(to_jsonable(result)))
    return path


# ---------------------------------------------------------------------------------------------
# The comment body
# ---------------------------------------------------------------------------------------------


def test_a_blocked_comment_leads_with_the_deciding_rule_and_the_change() -> None:
    result = make_result(verdict="block", with_histograms=False)
    body = ci.comment_body(result, report_url="https://ci.example/run/1")
    lines = body.splitlines()
    assert lines[0] == ci.marker(result.scenario)
    assert "BLOCKED" in lines[1] and "❌" in lines[1]
    decided = next(r for r in result.rules if r.outcome == "fail")
    assert lines[3].startswith("**decided by") and decided.name in lines[3]
    assert result.baseline is not None
    old, new = result.baseline.saturation.users, result.saturation.users
    assert old and new
    change = f"{(new / old - 1) * 100:+.1f}"
    assert "| Saturation (users) |" in body and change in body
    assert "[Full report](https://ci.example/run/1)" in body
    assert "&lt;" not in lines[1]


def test_the_comment_says_why_it_broke_when_telemetry_ran() -> None:
    from perfgate.models import Bottleneck, Cost

    why = Bottleneck(
        kind="resource", confidence="high", resource="exchange slot pool",
        sentence="The exchange slot pool reached 100 % of its 16 slots at 50 users",
        cost=Cost(cpu_cores=0.1, throughput_rps=270, rps_per_core=2700, cpu_ms_per_request=0.4,
                  text="0.4 ms of CPU per request"),
    )  # fmt: skip
    result = make_result(verdict="block", with_histograms=False)
    body = ci.comment_body(dataclasses.replace(result, bottleneck=why))
    assert "Why: The exchange slot pool reached 100 % of its 16 slots at 50 users" in body
    assert "Cost: 0.4 ms of CPU per request" in body
    assert "Why:" not in ci.comment_body(make_result(verdict="block", with_histograms=False))


def test_a_pass_without_baseline_says_so_and_side_by_side_shows_the_ratio() -> None:
    first = passing_result(baseline=None)
    body = ci.comment_body(first)
    assert "PASS" in body and "No previous release to compare with yet" in body
    numbers = {"ratio": 0.987, "ratio_lo": 0.95, "ratio_hi": 1.02, "se_log": 0.01, "df": 10}
    look = LookRecord(
        index=2, pairs=6, alpha_block=0.01, alpha_pass=0.05, outcome="pass", elapsed_s=90, **numbers
    )
    body = ci.comment_body(passing_result(looks=(look,)))
    assert "| Goodput ratio side by side | 0.987 | 1 | -1.3 %" in body
    assert "bounds 0.950–1.020" in body


# ---------------------------------------------------------------------------------------------
# One comment per request: found by its marker, updated, never duplicated
# ---------------------------------------------------------------------------------------------


def github(api: str, number: int = 7) -> ci.Forge:
    env = {"GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": api}
    return ci.forge_from_env(env, number=number)


def test_the_comment_is_created_once_then_updated(forge: tuple[Forge, str]) -> None:
    state, api = forge
    for i in range(150):  # the marker's comment sits on the second page
        state.add(f"someone else's comment {i}")
    body = ci.comment_body(passing_result())
    assert ci.upsert_comment(github(api), body)[0] == "created"
    for i in range(5):
        state.add(f"later comment {i}")
    done, cid = ci.upsert_comment(github(api), body.replace("PASS", "BLOCKED"))
    assert done == "updated"
    ours = [c for c in state.comments.values() if ci.marker("exchange") in c["body"]]
    assert len(ours) == 1 and ours[0]["id"] == cid and "BLOCKED" in ours[0]["body"]
    assert len(state.comments) == 156
    assert ("PATCH", f"/repos/o/r/issues/comments/{cid}", f"Bearer {TOKEN}") in state.requests
    # another scenario's comment on the same request is its own
    other = ci.comment_body(passing_result(scenario="search"))
    assert ci.upsert_comment(github(api), other)[0] == "created"


def test_gitlab_notes_are_upserted_the_same_way(forge: tuple[Forge, str]) -> None:
    state, api = forge
    env = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": api,
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "7",
        "PERFGATE_GITLAB_TOKEN": TOKEN,
    }
    body = ci.comment_body(passing_result())
    assert ci.upsert_comment(ci.forge_from_env(env), body)[0] == "created"
    done, cid = ci.upsert_comment(ci.forge_from_env(env), body)
    assert done == "updated" and len(state.comments) == 1
    assert ("PUT", f"/projects/42/merge_requests/7/notes/{cid}", TOKEN) in state.requests


def test_a_refused_token_is_one_line_exit_3_without_the_token(forge: tuple[Forge, str]) -> None:
    state, api = forge
    state.fail_with = 403
    with pytest.raises(ci.CommentError) as info:
        ci.upsert_comment(github(api), "body")
    assert info.value.exit_code == 3 and "HTTP 403" in str(info.value)
    assert TOKEN not in str(info.value) and "\n" not in str(info.value)


def test_outside_a_pull_request_there_is_nothing_to_comment_on(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main"}))
    env = {"GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": TOKEN, "GITHUB_EVENT_PATH": str(event)}
    with pytest.raises(InputError, match="not for a pull request"):
        ci.forge_from_env(env)
    with pytest.raises(InputError, match="GITHUB_TOKEN"):
        ci.forge_from_env({"GITHUB_REPOSITORY": "o/r"})


# ---------------------------------------------------------------------------------------------
# The composite action's steps, run as GitHub runs them
# ---------------------------------------------------------------------------------------------


def lookup(path: str, ctx: dict[str, Any]) -> str:
    value: Any = ctx
    for key in path.strip().split("."):
        value = value.get(key, "") if isinstance(value, dict) else ""
    return "" if value is None else str(value)


def expand(text: str, ctx: dict[str, Any]) -> str:
    """``${{ a.b || c.d || 'text' }}``: dotted context paths and quoted strings (all that
    action.yml's env values use)."""

    def one(match: re.Match[str]) -> str:
        for path in match.group(1).split("||"):
            quoted = re.fullmatch(r"\s*'([^']*)'\s*", path)
            value = quoted.group(1) if quoted else lookup(path, ctx)
            if value:
                return value
        return ""

    return re.sub(r"\$\{\{\s*(.+?)\s*\}\}", one, str(text))


def step(step_id: str) -> dict[str, Any]:
    return next(s for s in ACTION["runs"]["steps"] if s.get("id") == step_id)


def step_named(name: str) -> dict[str, Any]:
    return next(s for s in ACTION["runs"]["steps"] if s["name"] == name)


@dataclasses.dataclass
class Ran:
    code: int
    out: str
    err: str
    outputs: dict[str, str]
    summary: str


class Runner:
    """Runs action.yml's shell steps in a fake GitHub Actions environment."""

    def __init__(self, tmp: Path, inputs: dict[str, str], github: dict[str, Any]) -> None:
        self.tmp = tmp
        defaults = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
        self.ctx: dict[str, Any] = {
            "inputs": {**defaults, **inputs},
            "github": {"action_path": str(REPO), "token": TOKEN, **github},
            "steps": {},
        }
        self.ctx["inputs"] = {k: expand(v, self.ctx) for k, v in self.ctx["inputs"].items()}
        event = tmp / "event.json"
        event.write_text(json.dumps(github.get("event", {})))
        self.summary = tmp / "step-summary.md"
        self.summary.touch()
        self.env = {
            **os.environ,
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": github.get("event_name", "push"),
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_REF": github.get("ref", "refs/heads/main"),
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_RUN_ID": "99",
            "GITHUB_JOB": "gate",
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "RUNNER_TEMP": str(tmp),
            "PYTHONPATH": str(REPO),
        }

    def run(self, spec: dict[str, Any], *, path: str | None = None, **env: str) -> Ran:
        assert spec["shell"] == "bash"
        outputs = self.tmp / "github-output"
        outputs.write_text("")
        script = self.tmp / "step.sh"
        script.write_text(spec["run"])
        step_env = {k: expand(v, self.ctx) for k, v in spec.get("env", {}).items()}
        full = {**self.env, **step_env, **env, "GITHUB_OUTPUT": str(outputs)}
        if path is not None:
            full["PATH"] = f"{path}:{full['PATH']}"
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            env=full, capture_output=True, text=True, timeout=120, cwd=self.tmp,
        )  # fmt: skip
        found = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
        if spec.get("id"):
            self.ctx["steps"][spec["id"]] = {"outputs": found}
        return Ran(done.returncode, done.stdout, done.stderr, found, self.summary.read_text())


def shim(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def fake_load_perfgate(folder: Path) -> Path:
    """`perfgate` = the real CLI with simulated load (deterministic verdicts, no Locust)."""
    (folder.parent / "fake_load.py").write_text(FAKE_LOAD_CLI)
    return shim(
        folder, "perfgate", f'exec "{sys.executable}" "{folder.parent}/fake_load.py" "$@"\n'
    )


def canned_perfgate(folder: Path, result: Path, code: int) -> Path:
    """`perfgate run` prints a prepared result.json and exits ``code``; other commands are real."""
    return shim(
        folder,
        "perfgate",
        f'if [ "$1" = run ]; then echo "$@" > "{folder}/args"; env > "{folder}/env"\n'
        f'  cat "{result}"; exit {code}; fi\n'
        f'exec "{sys.executable}" -m perfgate "$@"\n',
    )


def test_the_action_declares_its_inputs_outputs_and_github_steps() -> None:
    assert ACTION["runs"]["using"] == "composite"
    names = [s["name"] for s in ACTION["runs"]["steps"]]
    assert names == [
        "Set up Python",
        "Install perfgate",
        "Run the gate",
        "Upload the report",
        "Comment on the pull request",
        "Apply the verdict",
    ]
    upload = step("upload")
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "${{ inputs.report-dir }}"
    assert upload["if"].startswith("always()")
    assert set(ACTION["outputs"]) == {"verdict", "exit-code", "result"}
    # the gate runs side by side by default: nothing in the action turns it off
    assert "--no-side-by-side" not in (REPO / "action.yml").read_text()


def test_the_install_step_installs_this_actions_perfgate(tmp_path: Path) -> None:
    bin_dir = shim(tmp_path / "bin", "python", f'echo "$@" >> "{tmp_path}/pip-args"\n')
    shim(bin_dir, "perfgate", 'echo "perfgate 0.0-test"\n')
    ran = Runner(tmp_path, {}, {}).run(step("install"), path=str(bin_dir))
    assert ran.code == 0, ran.err
    assert (tmp_path / "pip-args").read_text().split()[-1] == str(REPO)
    assert "perfgate 0.0-test" in ran.out
    Runner(tmp_path, {"install": "perfgate==9.9"}, {}).run(step("install"), path=str(bin_dir))
    assert (tmp_path / "pip-args").read_text().splitlines()[-1].endswith("perfgate==9.9")


def test_a_push_to_the_default_branch_gates_promotes_and_writes_the_summary(
    tmp_path: Path,
) -> None:
    try:
        from test_cli import SCENARIO
    except ImportError:
        from tests.test_cli import SCENARIO

    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    scenario = tmp_path / "cli.yaml"
    scenario.write_text(SCENARIO)
    for address in serve(_Ok):
        runner = Runner(
            tmp_path,
            {
                "scenario": str(scenario),
                "target": f"http://{address}",
                "baseline-dir": f"git+file://{remote}#perfgate-baselines",
            },
            {
                "event_name": "push",
                "ref": "refs/heads/main",
                "sha": "abc123",
                "event": {"repository": {"default_branch": "main"}},
            },
        )
        ran = runner.run(step("gate"), path=str(fake_load_perfgate(tmp_path / "bin")))
    assert ran.code == 0, ran.err
    assert ran.outputs["exit-code"] == "0" and ran.outputs["verdict"] == "pass"
    assert json.loads(Path(ran.outputs["result"]).read_text())["release"] == "abc123"
    assert "no baseline-target" in ran.out  # a --target run without the previous release
    assert "perfgate: cli @ abc123" in ran.summary  # summary.md, appended by perfgate
    assert branch_files(remote) == ["cli/abc123.json"]  # promoted into the git store
    verdict = runner.run(step_named("Apply the verdict"))
    assert verdict.code == 0 and "::notice title=perfgate::pass" in verdict.out


def test_a_pull_request_posts_one_comment_and_a_rerun_updates_it(
    tmp_path: Path, forge: tuple[Forge, str]
) -> None:
    state, api = forge
    state.add("a reviewer's comment")
    result = write_result(tmp_path / "canned.json", make_result(verdict="block"))
    github_ctx = {
        "event_name": "pull_request",
        "ref": "refs/pull/7/merge",
        "sha": "merge-sha",
        "event": {"pull_request": {"number": 7, "head": {"sha": "head-sha"}},
                  "repository": {"default_branch": "main"}},
    }  # fmt: skip
    runner = Runner(tmp_path, {}, github_ctx)
    runner.env["GITHUB_API_URL"] = api
    bin_dir = canned_perfgate(tmp_path / "bin", result, 1)
    comment = step_named("Comment on the pull request")
    assert "github.event_name == 'pull_request'" in comment["if"]
    for _ in range(2):
        gate = runner.run(step("gate"), path=str(bin_dir))
        assert gate.code == 0 and gate.outputs["exit-code"] == "1", gate.err
        args = (bin_dir / "args").read_text()
        assert "--release head-sha" in args and "--promote" not in args
        assert "--scenario" not in args  # empty input: perfgate's packaged default
        env = (bin_dir / "env").read_text()
        store = f"PERFGATE_BASELINE_DIR=git+https://x-access-token:{TOKEN}@github.example/o/r.git#perfgate-baselines"
        assert store in env
        posted = runner.run(comment, path=str(bin_dir))
        assert posted.code == 0, posted.err
        assert TOKEN not in posted.out + posted.err
    ours = [c for c in state.comments.values() if ci.marker("default scenario") in c["body"]]
    assert len(state.comments) == 2 and len(ours) == 1
    assert "BLOCKED" in ours[0]["body"] and "decided by" in ours[0]["body"]
    assert "github.example/o/r/actions/runs/99" in ours[0]["body"]
    assert [m for m, *_ in state.requests if m != "GET"] == ["POST", "PATCH"]
    verdict = runner.run(step_named("Apply the verdict"))
    assert verdict.code == 1 and "release blocked" in verdict.out
    # a later run that stops before a verdict replaces the old verdict, in the same comment
    broken = shim(
        tmp_path / "broken",
        "perfgate",
        f'[ "$1" = run ] && exit 3\nexec "{sys.executable}" -m perfgate "$@"\n',
    )
    gate = runner.run(step("gate"), path=str(broken))
    assert gate.outputs == {"exit-code": "3"}
    assert runner.run(comment, path=str(broken)).code == 0
    assert len(state.comments) == 2 and "BLOCKED" not in ours[0]["body"]
    assert "no verdict** (exit 3: infrastructure" in ours[0]["body"]


@pytest.mark.parametrize(
    ("code", "allow", "expected"),
    [("0", "false", 0), ("1", "false", 1), ("4", "false", 4), ("4", "true", 0),
     ("2", "true", 2), ("3", "false", 3), ("", "false", 3)],
)  # fmt: skip
def test_the_verdict_step_maps_exit_codes(
    tmp_path: Path, code: str, allow: str, expected: int
) -> None:
    runner = Runner(tmp_path, {"allow-inconclusive": allow}, {})
    runner.ctx["steps"]["gate"] = {"outputs": {"exit-code": code}}
    assert runner.run(step_named("Apply the verdict")).code == expected


def test_a_gate_that_fails_before_a_verdict_leaves_a_summary_line(tmp_path: Path) -> None:
    bin_dir = shim(tmp_path / "bin", "perfgate", "echo 'perfgate: error: bad' >&2; exit 2\n")
    ran = Runner(tmp_path, {}, {"event_name": "push"}).run(step("gate"), path=str(bin_dir))
    assert ran.code == 0 and ran.outputs == {"exit-code": "2"}
    assert "failed before a verdict (exit 2)" in ran.summary


# ---------------------------------------------------------------------------------------------
# The GitLab template
# ---------------------------------------------------------------------------------------------


def test_the_gitlab_template_gates_promotes_on_main_and_posts_the_note(
    tmp_path: Path, forge: tuple[Forge, str]
) -> None:
    state, api = forge
    job = GITLAB[".perfgate"]
    assert job["allow_failure"] == {"exit_codes": [4]}
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "perfgate-reports/*/*/junit.xml"
    result = write_result(tmp_path / "canned.json", passing_result())
    run_folder = tmp_path / "perfgate-reports" / "exchange" / "abc-1"
    run_folder.mkdir(parents=True)
    (run_folder / "summary.md").write_text("### perfgate summary for the log\n")
    bin_dir = canned_perfgate(tmp_path / "bin", result, 0)
    env = {
        **os.environ,
        **{k: str(v) for k, v in job["variables"].items()},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "GITLAB_CI": "true",
        "CI_COMMIT_BRANCH": "main",
        "CI_DEFAULT_BRANCH": "main",
        "CI_SERVER_HOST": "gitlab.example",
        "CI_PROJECT_PATH": "g/p",
        "CI_API_V4_URL": api,
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "7",
        "PERFGATE_GIT_TOKEN": "glpat-git",
        "PERFGATE_GITLAB_TOKEN": TOKEN,
    }
    script = "\n".join(job["script"])
    for _ in range(2):
        done = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert "perfgate summary for the log" in done.stdout and "perfgate: pass" in done.stdout
    seen = (bin_dir / "env").read_text()
    assert "PERFGATE_PROMOTE=1" in seen
    assert (
        "PERFGATE_BASELINE_DIR=git+https://oauth2:glpat-git@gitlab.example/g/p.git#perfgate-baselines"
        in seen
    )
    (note,) = state.comments.values()
    assert note["body"].startswith(ci.marker("default scenario")) and "PASS" in note["body"]
    assert TOKEN not in done.stdout + done.stderr
    # a run that stops before a verdict replaces it
    shim(
        bin_dir, "perfgate", f'[ "$1" = run ] && exit 3\nexec "{sys.executable}" -m perfgate "$@"\n'
    )
    (tmp_path / "perfgate-result.json").unlink()
    done = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 3 and "failed with exit code 3" in done.stdout
    (note,) = state.comments.values()
    assert "no verdict** (exit 3" in note["body"]


def test_the_documented_workflows_use_only_the_actions_inputs() -> None:
    """docs/ci.md's and the README's jobs parse, and every `with:` key is an input of action.yml."""
    checked = 0
    for doc in (REPO / "docs" / "ci.md", REPO / "README.md"):
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
            data = yaml.safe_load(block)
            steps = [s for job in (data.get("jobs") or {}).values() for s in job["steps"]]
            steps += data.get("steps") or []
            for s in steps:
                if "/perfgate@" in str(s.get("uses", "")):
                    assert set(s.get("with") or {}) <= set(ACTION["inputs"]), (doc, s)
                    checked += 1
    assert checked == 2


def test_the_comment_command_prints_the_body_and_refuses_half_a_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from perfgate.cli import _main

    path = write_result(tmp_path / "result.json", passing_result())
    assert _main(["ci", "comment", str(path), "--key", "shop.yaml", "--report-url", "u"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(ci.marker("shop.yaml")) and "[Full report](u)" in out
    assert _main(["ci", "comment", "--failed", "3"]) == 2
    assert "give --key" in capsys.readouterr().err
    assert _main(["ci", "comment", "--failed", "2", "--key", "shop.yaml"]) == 0
    assert "no verdict** (exit 2: bad input" in capsys.readouterr().out
