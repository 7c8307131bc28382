"""The git-branch baseline store against real git repositories (a bare repository on disk).

Promotion is driven by ``perfgate baseline promote`` of a result.json fixture (the behaviour is
the store's, not the load's); one ``perfgate run --promote`` goes through the whole pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import perfgate
import perfgate.report.html
from perfgate import baseline, gitstore, store
from perfgate.cli import _main
from perfgate.errors import InputError
from perfgate.models import RunResult, to_jsonable

try:
    from report_fixtures import make_result
    from test_cli import Env, env, target
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import make_result
    from tests.test_cli import Env, env, target  # noqa: F401 (fixtures)

REPO = Path(perfgate.__file__).resolve().parents[1]
BRANCH = "perfgate-baselines"


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """An empty bare repository: the remote every test promotes into."""
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(path))
    return path


def spec_of(remote: Path) -> str:
    return f"git+file://{remote}#{BRANCH}"


def branch_files(remote: Path) -> list[str]:
    out = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", BRANCH)
    return sorted(out.split())


def commits(remote: Path) -> list[str]:
    return git("--git-dir", str(remote), "log", "--format=%s", BRANCH).splitlines()


def passing(release: str, scenario: str = "shop") -> RunResult:
    result = make_result(verdict="pass", with_baseline=False, with_histograms=False)
    return dataclasses.replace(result, release=release, scenario=scenario, aborted=False)


def result_json(tmp_path: Path, release: str) -> Path:
    folder = tmp_path / "reports" / release
    folder.mkdir(parents=True)
    path = folder / "result.json"
    path.write_text(json.dumps(to_jsonable(passing(release))))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = _main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("perfgate: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitstore, "BACKOFF_S", 0.01)


# ---------------------------------------------------------------------------------------------
# Reading and writing through every baseline command
# ---------------------------------------------------------------------------------------------


def test_promote_creates_the_branch_and_every_reader_reads_it(
    tmp_path: Path, remote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_of(remote)
    for release in ("v1", "v2"):
        code, out, err = cli(
            capsys,
            "baseline",
            "promote",
            str(result_json(tmp_path, release)),
            "--baseline-dir",
            spec,
        )
        assert code == 0, err
        assert f"stored {spec}:shop/{release}.json" in out
    assert branch_files(remote) == ["shop/v1.json", "shop/v2.json"]
    assert commits(remote) == [
        "perfgate: baseline of shop for release v2",
        "perfgate: baseline of shop for release v1",
    ]

    code, out, _ = cli(capsys, "baseline", "list", "--baseline-dir", spec)
    assert code == 0 and "shop:" in out and "v1" in out and "v2" in out
    code, out, _ = cli(capsys, "baseline", "show", "--scenario", "shop", "--baseline-dir", spec)
    assert code == 0 and "shop / v2" in out and f"{spec}:shop/v2.json" in out
    code, out, err = cli(
        capsys, "baseline", "diff", "v1", "v2", "--scenario", "shop", "--baseline-dir", spec
    )
    assert code == 0, err

    code, out, _ = cli(capsys, "baseline", "list", "--json", "--baseline-dir", spec)
    assert [b["path"] for b in json.loads(out)["baselines"]] == [
        f"{spec}:shop/v1.json",
        f"{spec}:shop/v2.json",
    ]

    with store.read_only(spec) as folder:  # a local folder, for any reader
        names = [b.release for b in baseline.list_baselines(folder, "shop")]
    assert names == ["v1", "v2"] and not folder.exists()  # the clone is gone afterwards
    scans = baseline.scan_store(spec)  # read into memory: what `perfgate history` needs
    assert list(scans) == ["shop"] and not scans["shop"].problems
    assert [b.where for b in scans["shop"].baselines] == [
        f"{spec}:shop/v1.json",
        f"{spec}:shop/v2.json",
    ]


def test_the_store_comes_from_the_environment(
    tmp_path: Path,
    remote: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERFGATE_BASELINE_DIR", spec_of(remote))
    code, _, err = cli(capsys, "baseline", "promote", str(result_json(tmp_path, "v1")))
    assert code == 0, err
    assert branch_files(remote) == ["shop/v1.json"]


def test_an_existing_release_is_refused_and_force_replaces_it(
    tmp_path: Path, remote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, spec = result_json(tmp_path, "v1"), spec_of(remote)
    assert cli(capsys, "baseline", "promote", str(path), "--baseline-dir", spec)[0] == 0
    code, _, err = cli(capsys, "baseline", "promote", str(path), "--baseline-dir", spec)
    assert code == 2 and "already exists" in one_error(err)
    code, _, err = cli(capsys, "baseline", "promote", str(path), "--baseline-dir", spec, "--force")
    assert code == 0, err
    assert len(commits(remote)) == 2


# ---------------------------------------------------------------------------------------------
# Concurrency: two pipelines promoting at once both land
# ---------------------------------------------------------------------------------------------


def test_two_stores_fetched_at_once_both_land(remote: Path) -> None:
    """The second pusher is rejected (the first moved the branch), fetches and lands on top."""
    spec, log = spec_of(remote), []
    with store.open_store(spec) as first, store.open_store(spec, log=log.append) as second:
        a = baseline.publish_baseline(passing("v1"), first, keep_to=Path("unused"))
        b = baseline.publish_baseline(passing("v2"), second, keep_to=Path("unused"))
    assert a.endswith("shop/v1.json") and b.endswith("shop/v2.json")
    assert any("rejected" in m and "retrying" in m for m in log), log
    assert branch_files(remote) == ["shop/v1.json", "shop/v2.json"]
    assert len(commits(remote)) == 2


def test_the_same_release_promoted_twice_at_once_lands_once(remote: Path) -> None:
    spec = spec_of(remote)
    with store.open_store(spec) as first, store.open_store(spec) as second:
        baseline.publish_baseline(passing("v1"), first, keep_to=Path("unused"))
        with pytest.raises(baseline.BaselineError, match="already exists"):
            baseline.publish_baseline(passing("v1"), second, keep_to=Path("unused"))
    assert branch_files(remote) == ["shop/v1.json"] and len(commits(remote)) == 1


# The real CLI in a child process, with the simulated load of tests/test_cli.py in Locust's
# place: the verdict is deterministic (pass) however busy the machine is; everything else
# (pipeline, report files, git) is real but index.html's charts (matplotlib: seconds a run).
FAKE_LOAD_CLI = """\
import sys
import perfgate.pipeline.run as run
import perfgate.report.html as html
from tests.test_cli import FakeRunner
from perfgate.cli import main
run.LocustRunner = FakeRunner
html.render_html = lambda result, **kw: "<html></html>"
main(sys.argv[1:])
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def service() -> Iterator[str]:
    yield from serve(_Ok)


def test_two_concurrent_run_promotions_both_land(
    tmp_path: Path, remote: Path, service: str
) -> None:
    """Two `perfgate run --promote` processes at once, as two CI pipelines would."""
    from tests.test_cli import SCENARIO

    # The hook holds each push for a moment, so that the two pushes overlap.
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 0.3\n")
    hook.chmod(0o755)
    scenario = tmp_path / "cli.yaml"
    scenario.write_text(SCENARIO)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PERFGATE_BASELINE_DIR": spec_of(remote)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                FAKE_LOAD_CLI,
                "run",
                "-s",
                str(scenario),
                "--promote",
                "--target",
                f"http://{service}",
                "--release",
                release,
                "--report-dir",
                str(tmp_path / "reports"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for release in ("r1", "r2")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for release, (_, err) in zip(("r1", "r2"), outs, strict=True):
        assert f"promoted as the baseline of {release}: {spec_of(remote)}:cli/{release}.json" in err
    assert branch_files(remote) == ["cli/r1.json", "cli/r2.json"]
    assert len(commits(remote)) == 2
    with store.read_only(spec_of(remote)) as folder:
        found = sorted(b.release for b in baseline.list_baselines(folder, "cli"))
    assert found == ["r1", "r2"]


# ---------------------------------------------------------------------------------------------
# Rejected pushes
# ---------------------------------------------------------------------------------------------


def reject_hook(
    remote: Path, *, times: int | None, why: str = "perfgate test: push refused by policy"
) -> None:
    """A pre-receive hook that rejects ``times`` pushes (None: every push), saying ``why``."""
    count = remote / "rejected"
    limit = "" if times is None else f'[ "$(wc -c < {count})" -ge {times} ] && exit 0\n'
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        f"touch {count}\n{limit}"
        f"printf x >> {count}\necho '{why}' >&2\nexit 1\n"
    )
    hook.chmod(0o755)


def test_a_push_rejected_once_is_retried_and_lands(
    tmp_path: Path, remote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reject_hook(remote, times=1)
    source = result_json(tmp_path, "v1")
    code, _, err = cli(
        capsys, "baseline", "promote", str(source), "--baseline-dir", spec_of(remote)
    )
    assert code == 0, err
    assert "push 1/5 rejected" in err and "push refused by policy" in err
    assert branch_files(remote) == ["shop/v1.json"]


def test_a_push_rejected_every_time_exits_3_and_keeps_the_baseline(
    tmp_path: Path, remote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reject_hook(remote, times=None)
    source = result_json(tmp_path, "v1")
    code, _, err = cli(
        capsys, "baseline", "promote", str(source), "--baseline-dir", spec_of(remote)
    )
    assert code == 3
    line = one_error(err)
    assert "push rejected 5 times" in line and "push refused by policy" in line
    kept = source.parent / "unpushed-baseline" / "shop" / "v1.json"
    assert f"kept at {kept}" in line
    assert baseline.load_baseline(kept, scenario="shop").release == "v1"
    assert (remote / "rejected").read_text() == "x" * 5
    with pytest.raises(subprocess.CalledProcessError):
        branch_files(remote)  # the branch was never created


def test_a_run_whose_push_is_always_rejected_exits_3_and_keeps_its_baseline(
    env: Env, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(perfgate.report.html, "render_html", lambda result, **kw: "<html></html>")
    reject_hook(remote, times=None)
    ran = env.gate("--promote", "--baseline-dir", spec_of(remote), release="r1")
    assert ran.code == 3
    assert "PASS" in ran.err  # the verdict and the report come first
    line = ran.error
    assert line.startswith("perfgate: error: not promoted: baseline store git+file://")
    assert "push rejected 5 times" in line
    (kept,) = env.reports.glob("cli/r1-*/unpushed-baseline/cli/r1.json")
    assert f"kept at {kept}" in line
    assert baseline.load_baseline(kept, scenario="cli").release == "r1"


def test_a_push_refused_for_lack_of_rights_is_not_retried(
    tmp_path: Path, remote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reject_hook(remote, times=None, why="Permission to o/r.git denied: Permission denied")
    source = result_json(tmp_path, "v1")
    code, _, err = cli(
        capsys, "baseline", "promote", str(source), "--baseline-dir", spec_of(remote)
    )
    assert code == 3 and "cannot push" in one_error(err) and "kept at" in one_error(err)
    assert (remote / "rejected").read_text() == "x"  # one attempt: retrying cannot help


# ---------------------------------------------------------------------------------------------
# Bad specs, unreachable remotes, credentials
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["git+file:///nowhere", "git+#main", "git+file:///x#bad..name"])
def test_a_malformed_store_is_bad_input(spec: str) -> None:
    with pytest.raises(InputError, match="baseline store"):
        gitstore.parse(spec)


def test_redact_hides_user_information_everywhere() -> None:
    text = "fatal: https://x-access-token:ghs_SECRET@github.com/o/r.git and ssh://git@host/r"
    assert gitstore.redact(text) == "fatal: https://***@github.com/o/r.git and ssh://***@host/r"
    spec = gitstore.parse("git+https://bot:p%40ss_word@example.com/r.git#b")
    assert spec.display() == "git+https://***@example.com/r.git#b"
    assert gitstore.redact("p@ss_word or p%40ss_word", spec.secrets()) == "*** or ***"
    assert gitstore.parse("git+https://ghp_abcdefgh123@github.com/r#b").secrets() == (
        "ghp_abcdefgh123",
    )
    assert gitstore.parse("git+ssh://git@host/r.git#b").secrets() == ()
    assert "p%40ss" not in repr(spec) and "bot" not in repr(spec)


class _Unauthorised(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def unauthorised() -> Iterator[str]:
    """A git HTTP server that refuses every credential (git would prompt for one)."""
    yield from serve(_Unauthorised)


@pytest.mark.parametrize("userinfo", ["", "bot:tok3n-s3cret@", "tok3n-s3cret@"])
def test_a_refused_login_never_prompts_and_never_prints_the_token(
    unauthorised: str, userinfo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"git+http://{userinfo}{unauthorised}/repo.git#{BRANCH}"
    code, out, err = cli(capsys, "baseline", "list", "--baseline-dir", spec)
    assert code == 3
    line = one_error(err)
    assert "cannot fetch the branch" in line and f"{unauthorised}/repo.git#{BRANCH}" in line
    assert "tok3n" not in out + err and "s3cret" not in out + err


def test_an_unreachable_remote_before_a_run_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"git+file://{tmp_path}/missing.git#{BRANCH}"
    scenario = REPO / "scenarios" / "exchange.yaml"
    code, _, err = cli(
        capsys,
        "run",
        "-s",
        str(scenario),
        "--baseline-dir",
        spec,
        "--report-dir",
        str(tmp_path / "reports"),
    )
    assert code == 3 and "cannot fetch the branch" in one_error(err)
    assert not (tmp_path / "reports").exists()  # nothing was run


def test_the_noise_model_lives_in_the_store_too(remote: Path) -> None:
    from perfgate import calibration
    from perfgate.models import Saturation

    runs = [
        Saturation(users=u, throughput_rps=10 * u, broken=True, reason="", bracket=(u - 5, u + 5))
        for u in (100, 104, 98, 101)
    ]
    model = calibration.estimate(runs, scenario="shop")
    with store.open_store(spec_of(remote)) as into:
        into.publish(
            lambda root: calibration.save_noise(model, root, "shop"),
            message="noise",
            keep_to=Path("unused"),
        )
    with store.read_only(spec_of(remote)) as folder:
        loaded = calibration.load_noise(folder, "shop")
        assert loaded is not None and loaded.runs == 4
        assert baseline.list_baselines(folder, "shop") == ()  # noise.json is not a baseline


def test_a_token_in_the_store_url_is_never_written_or_printed(
    env: Env, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`perfgate run --promote --baseline-dir git+https://bot:TOKEN@…` (git's insteadOf maps
    that URL to the bare repository): the token is in the command line, and nowhere else."""
    url = "https://bot:s3cr3t-t0ken@git.example.invalid/app.git"
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.file://{remote}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", url)
    monkeypatch.setattr(perfgate.report.html, "render_html", lambda result, **kw: "<html></html>")
    spec = f"git+{url}#{BRANCH}"
    # result.json's `command` is perfgate's own command line
    monkeypatch.setattr(sys, "argv", ["perfgate", "run", "--baseline-dir", spec])
    ran = env.gate("--promote", "--baseline-dir", spec, release="r1")
    assert ran.code == 0, ran.err
    assert "promoted as the baseline of r1: git+https://***@git.example.invalid/app.git" in ran.err
    assert branch_files(remote) == ["cli/r1.json"]
    written = [p.read_text() for p in env.reports.rglob("*") if p.is_file()]
    stored = git("--git-dir", str(remote), "show", f"{BRANCH}:cli/r1.json")
    for text in [ran.out, ran.err, stored, *written]:
        assert "s3cr3t-t0ken" not in text
    assert any("--baseline-dir" in text for text in written)  # the command line is kept, redacted
