"""Symbolic links (and special files) inside a baseline folder: refused, never followed.

Real links on disk, one per case, through the CLI in process (``test_cli``'s ``env``: the load
stage is the simulator, everything else is real), through ``python -m perfgate`` where the
failure would be a hang (a FIFO), and through a git-branch store whose tree carries a link.
Each case checks the exit code, the one-line error naming the link and what it points to, and
that the link's target is byte-identical afterwards (and the link still the same link).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import perfgate
import perfgate.pipeline.run as pipeline_run

try:
    from test_cli import Env, FakeRunner, Ran, _stored, env, target
    from test_gitstore import BRANCH, cli, commits, git, one_error, remote, result_json, spec_of
except ImportError:  # tests/ imported as a package
    from tests.test_cli import Env, FakeRunner, Ran, _stored, env, target  # noqa: F401 (fixtures)
    from tests.test_gitstore import (  # noqa: F401 (fixtures)
        BRANCH,
        cli,
        commits,
        git,
        one_error,
        remote,
        result_json,
        spec_of,
    )

REPO = Path(perfgate.__file__).resolve().parents[1]
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n"
LINK_RULE = "perfgate follows no links inside a baseline folder"


def _tree(folder: Path) -> dict[str, tuple[str, ...]]:
    """Every entry under ``folder`` without following links: files by content and mtime, links
    by where they point, so that a test sees any write, replacement or re-pointing."""
    out: dict[str, tuple[str, ...]] = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(top) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                out[key] = ("link", os.readlink(path))
            elif path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[key] = ("file", digest, str(path.stat().st_mtime_ns))
            else:
                out[key] = ("folder",)
    return out


def _secret(env: Env) -> Path:
    """A private file outside the baseline folder, the kind a hostile link points at."""
    home = env.tmp / "home"
    home.mkdir(exist_ok=True)
    path = home / "id_rsa"
    path.write_bytes(SECRET)
    return path


def _refused(ran: Ran, link: Path) -> str:
    """The one error line of ``ran`` (exit 2) names ``link`` and where it points."""
    assert ran.code == 2, ran.err
    line = ran.error
    assert f"{link} is a symbolic link (to {os.readlink(link)!r})" in line, line
    assert LINK_RULE in line
    return line


def _copy_as(stored: Path, release: str) -> Path:
    """A second valid baseline: ``stored`` saved again as release ``release``."""
    data = json.loads(stored.read_text())
    data["release"] = release
    path = stored.parent / f"{release}.json"
    path.write_text(json.dumps(data))
    return path


def _run_result(env: Env, release: str, *, as_release: str | None = None) -> Path:
    """The result.json of the (only) run of ``release``; ``as_release``: a copy claiming that
    release, in a run folder of its own, for ``baseline promote``."""
    (found,) = sorted(env.reports.glob(f"cli/{release}-*/result.json"))
    if as_release is None:
        return found
    data = json.loads(found.read_text())
    data["release"] = as_release
    copy = env.tmp / "saved" / as_release / "result.json"
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps(data))
    return copy


# ---------------------------------------------------------------------------------------------
# A scenario folder that is a link
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["outside", "another scenario"])
def test_a_linked_scenario_folder_is_refused_by_every_command(env: Env, where: str) -> None:
    stored = _stored(env, "r1")
    result = _run_result(env, "r1")
    link = env.baselines / "cli"
    if where == "outside":  # the target even holds a valid baseline: reading it would "work"
        real = env.tmp / "elsewhere" / "cli"
        real.parent.mkdir()
        shutil.move(stored.parent, real)
        link.symlink_to(real)
    else:  # a link into another scenario's folder, inside the baseline folder
        real = env.baselines / "other"
        stored.parent.rename(real)
        link.symlink_to("other")
    watched = (env.baselines, real)
    before = [_tree(f) for f in watched]
    created = FakeRunner.created
    for extra, release in (((), "r2"), (("--promote",), "r2"), (("--promote", "--force"), "r1")):
        _refused(env.gate(*extra, release=release), link)
    assert FakeRunner.created == created, "refused before the load"
    where_ = ("--baseline-dir", str(env.baselines))
    scenario = ("--scenario", "cli")
    for command in (
        ("baseline", "show", "r1", *scenario),
        ("baseline", "show", *scenario),
        ("baseline", "diff", "r1", "r1", *scenario),
        ("baseline", "mark-reference", "r1", *scenario),
        ("baseline", "promote", str(result), "--force"),
    ):
        _refused(env.run(*command, *where_), link)
    listed = env.run("baseline", "list", *where_)
    assert listed.code == 2, listed.err
    assert f"unreadable: {link} is a symbolic link" in listed.out
    history = env.run("history", *scenario, *where_, "--report-dir", str(env.reports))
    assert history.code == 2
    assert history.error == f"perfgate: error: no releases of scenario 'cli' under {env.baselines}"
    warnings = [ln for ln in history.err.splitlines() if "warning: left out" in ln]
    assert len(warnings) == 1 and f"{link} is a symbolic link" in warnings[0], history.err
    assert [_tree(f) for f in watched] == before, "nothing written, moved or re-pointed"


# ---------------------------------------------------------------------------------------------
# A stored file that is a link
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["a private file", "another scenario's baseline"])
def test_a_linked_release_file_is_refused_and_its_target_untouched(env: Env, to: str) -> None:
    path = _copy_as(_stored(env, "r0"), "r1")
    result = _run_result(env, "r0", as_release="r1")
    if to == "a private file":
        target_file = _secret(env)
    else:  # a valid baseline of this scenario, kept in another scenario's folder
        target_file = env.baselines / "other" / "r1.json"
        target_file.parent.mkdir()
        target_file.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target_file)
    watched = (env.baselines, target_file.parent)
    before = [_tree(f) for f in watched]
    created = FakeRunner.created
    for extra, release in (((), "r2"), (("--promote", "--force"), "r1")):
        _refused(env.gate(*extra, release=release), path)
    assert FakeRunner.created == created, "refused before the load"
    where_ = ("--baseline-dir", str(env.baselines))
    for command in (
        ("baseline", "show", "r1", "--scenario", "cli"),
        ("baseline", "mark-reference", "r1", "--scenario", "cli"),
        ("baseline", "promote", str(result), "--force"),
    ):
        _refused(env.run(*command, *where_), path)
    listed = env.run("baseline", "list", *where_)
    assert listed.code == 2, listed.err
    assert f"unreadable: {path} is a symbolic link" in listed.out and "r0" in listed.out
    assert "PRIVATE KEY" not in listed.out + listed.err
    # the history leaves it out with a warning and shows the rest
    history = env.run("history", "--scenario", "cli", "--json", *where_)
    assert history.code == 0, history.err
    assert f"perfgate: warning: left out {path}: {path} is a symbolic link" in history.err
    assert '"release": "r0"' in history.out and '"release": "r1"' not in history.out
    assert [_tree(f) for f in watched] == before
    if to == "a private file":
        assert target_file.read_bytes() == SECRET


@pytest.mark.parametrize("name", ["noise.json", "drift-reference.json", ".lock"])
def test_a_linked_noise_model_reference_or_lock_is_never_written_through(
    env: Env, name: str
) -> None:
    _stored(env, "r1")
    secret = _secret(env)
    link = env.baselines / "cli" / name
    link.unlink(missing_ok=True)  # the promotion's lock file stays behind
    link.symlink_to(secret)
    before = _tree(env.tmp / "home"), _tree(env.baselines)
    created = FakeRunner.created
    _refused(env.gate("--promote", release="r2"), link)  # reads all three, promotes under the lock
    assert FakeRunner.created == created, "refused before the load"
    where_ = ("--baseline-dir", str(env.baselines))
    if name == "noise.json":  # `perfgate calibrate` reads the old model, then replaces it
        runs = ("calibrate", "-s", str(env.scenario), "--target", env.target, "--runs", "3")
        _refused(env.run(*runs, *where_), link)
    else:  # marking the reference writes the marker under the lock
        _refused(env.run("baseline", "mark-reference", "r1", "--scenario", "cli", *where_), link)
    assert (_tree(env.tmp / "home"), _tree(env.baselines)) == before
    assert secret.read_bytes() == SECRET


def test_a_fifo_in_the_baseline_folder_is_refused_instead_of_hanging(env: Env) -> None:
    """Reading a FIFO blocks until someone writes to it: the real CLI, with a timeout."""
    stored = _stored(env, "r1")
    fifo = stored.parent / "r2.json"
    os.mkfifo(fifo)
    child_env = {**os.environ, "PYTHONPATH": str(REPO)}
    child_env.pop("PERFGATE_DEBUG", None)
    for command in (("baseline", "show", "r2", "--scenario", "cli"), ("baseline", "list")):
        done = subprocess.run(
            [sys.executable, "-m", "perfgate", *command, "--baseline-dir", str(env.baselines)],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"{fifo} is a named pipe (FIFO), not a file or folder" in done.stdout + done.stderr


def test_a_linked_baseline_root_is_the_users_choice(env: Env) -> None:
    """``--baseline-dir`` itself may be a link (users link whole folders): used as a folder."""
    real = env.tmp / "shared-baselines"
    real.mkdir()
    env.baselines.symlink_to(real)
    _stored(env, "r1")
    assert (real / "cli" / "r1.json").is_file() and env.baselines.is_symlink()
    listed = env.run("baseline", "list", "--baseline-dir", str(env.baselines))
    assert listed.code == 0, listed.err
    assert "r1" in listed.out


# ---------------------------------------------------------------------------------------------
# A git-branch store whose tree carries a link
# ---------------------------------------------------------------------------------------------


def test_a_link_pushed_to_a_git_store_is_refused(
    tmp_path: Path, remote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_of(remote)
    code, _, err = cli(
        capsys, "baseline", "promote", str(result_json(tmp_path, "v0")), "--baseline-dir", spec
    )
    assert code == 0, err
    secret = tmp_path / "id_rsa"
    secret.write_bytes(SECRET)
    work = tmp_path / "work"
    git("clone", "-q", "--branch", BRANCH, str(remote), str(work))
    (work / "shop" / "v1.json").symlink_to(secret)
    git("add", "shop/v1.json", cwd=work)
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "a link", cwd=work)
    git("push", "-q", "origin", BRANCH, cwd=work)
    pushed = commits(remote)

    code, _, err = cli(
        capsys, "baseline", "show", "v1", "--scenario", "shop", "--baseline-dir", spec
    )
    assert code == 2
    line = one_error(err)
    assert "shop/v1.json is a symbolic link (to " in line and str(secret) in line, line
    code, out, err = cli(capsys, "baseline", "list", "--baseline-dir", spec)
    assert code == 2 and "shop/v1.json is a symbolic link" in out, out + err
    promoted = result_json(tmp_path, "v1")
    code, _, err = cli(
        capsys, "baseline", "promote", str(promoted), "--force", "--baseline-dir", spec
    )
    assert code == 2 and LINK_RULE in one_error(err)
    assert commits(remote) == pushed, "nothing committed or pushed"
    assert secret.read_bytes() == SECRET


# ---------------------------------------------------------------------------------------------
# Report folders
# ---------------------------------------------------------------------------------------------


class _FixedClock(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _FixedClock:  # type: ignore[override]
        return cls(2026, 12, 7, 6, 0, 0, tzinfo=UTC)


def test_a_link_at_the_run_folders_name_is_not_followed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder is claimed with ``mkdir`` (no ``exist_ok``): a link at its exact name
    (dangling or not) makes the run take the next name, never write through the link."""
    monkeypatch.setattr(pipeline_run, "datetime", _FixedClock)
    elsewhere = env.tmp / "elsewhere"
    elsewhere.mkdir()
    run_dir = env.reports / "cli" / "r2-20261207T060000Z"
    run_dir.parent.mkdir(parents=True)
    run_dir.symlink_to(elsewhere)
    (env.reports / "cli" / f"{run_dir.name}-2").symlink_to(env.tmp / "dangling")
    ran = env.gate()
    assert ran.code == 0, ran.err
    taken = env.reports / "cli" / f"{run_dir.name}-3"
    assert taken.is_dir() and not taken.is_symlink() and (taken / "result.json").is_file()
    assert f"report: {taken / 'index.html'}" in ran.err
    assert not list(elsewhere.iterdir()) and not (env.tmp / "dangling").exists()
    assert os.readlink(run_dir) == str(elsewhere)


def test_the_history_chart_does_not_follow_a_linked_scenario_report_folder(env: Env) -> None:
    _stored(env, "r1")
    elsewhere = env.tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(env.reports / "cli")
    (env.reports / "cli").symlink_to(elsewhere)
    ran = env.run(
        "history",
        "--scenario",
        "cli",
        "--baseline-dir",
        str(env.baselines),
        "--report-dir",
        str(env.reports),
    )
    assert ran.code == 3, ran.err
    assert ran.error.startswith(
        f"perfgate: error: refusing to write the history chart to {env.reports / 'cli'}: it is a "
        f"symbolic link to {elsewhere}"
    )
    assert not list(elsewhere.iterdir())
