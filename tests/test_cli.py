"""The CLI's promise: every failure class is one line on stderr and its documented exit code.

In-process (``perfgate.cli._main``) with the load stage's seat filled by the closed-queue
simulator (``FakeRunner``), so each case takes milliseconds while scenario loading, staging,
analysis, verdict, report and baseline code run for real. Faults are injected with monkeypatch
(an ``OSError`` from ``os.fsync``/``os.open`` for one folder only, a fake interpreter that cannot
start the exchange, a bug in analysis); perfgate itself has no test hooks. Real processes,
signals and real load are in ``test_faults.py``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import perfgate.pipeline.run as pipeline_run
import perfgate.staging as staging
from perfgate import analysis
from perfgate.cli import _main
from perfgate.models import LoadSpec, Slo, StepStats, TimelinePoint, UsersSpec
from perfgate.simulate import SimulatedRunner, TargetModel

# N* = p95 × servers / service = 0.2 s × 4 / 10 ms = 80 users: passes a floor of 50.
MODEL = TargetModel(servers=4, service_ms=10.0, service_cv=0.0, network_ms=0.5)

SCENARIO = """\
name: cli
staging: {provider: none}
users:
  requests:
    - {name: work, method: GET, path: /work}
ramp: {start_users: 20, step_users: 20, max_users: 200, step_seconds: 2}
slo: {p95_ms: 200, error_rate: 0.01}
gate: {min_users: 50}
"""


class FakeRunner:
    """Sits where the pipeline puts LocustRunner; the simulator measures, nothing is started."""

    created = 0

    def __init__(
        self,
        url: str,
        users: UsersSpec,
        slo: Slo,
        load: LoadSpec | None = None,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        FakeRunner.created += 1
        self.sim = SimulatedRunner(MODEL, slo, seed=7)
        self.timeline: tuple[TimelinePoint, ...] = ()

    def __enter__(self) -> FakeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def measure(self, users: int, **kwargs: Any) -> StepStats:
        return self.sim.measure(users, **kwargs)

    def hold(self, users: int, seconds: float) -> None:
        self.sim.hold(users, seconds)


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    """Something that answers perfgate's reachability probe."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one error line; asserts there is exactly one and no traceback."""
        assert "Traceback" not in self.err, self.err
        lines = [ln for ln in self.err.splitlines() if ln.startswith("perfgate: error:")]
        assert len(lines) == 1, self.err
        assert self.err.rstrip().endswith(lines[0]), "the error is the last thing printed"
        return lines[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Env:
    tmp: Path
    scenario: Path
    reports: Path
    baselines: Path
    target: str
    run: Callable[..., Ran]

    def gate(self, *extra: str, release: str = "r2") -> Ran:
        """``perfgate run`` on the scenario against the probe target."""
        return self.run(
            "run",
            "-s",
            str(self.scenario),
            "--target",
            self.target,
            "--release",
            release,
            "--report-dir",
            str(self.reports),
            "--baseline-dir",
            str(self.baselines),
            *extra,
        )


@pytest.fixture
def env(
    tmp_path: Path,
    target: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Env]:
    monkeypatch.setattr(pipeline_run, "LocustRunner", FakeRunner)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("PERFGATE_DEBUG", raising=False)
    FakeRunner.created = 0
    scenario = tmp_path / "cli.yaml"
    scenario.write_text(SCENARIO)
    saved = signal.getsignal(signal.SIGTERM)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = _main(list(args))
        captured = capsys.readouterr()
        return Ran(code=code, out=captured.out, err=captured.err)

    try:
        yield Env(
            tmp=tmp_path,
            scenario=scenario,
            reports=tmp_path / "reports",
            baselines=tmp_path / "baselines",
            target=target,
            run=run,
        )
    finally:
        signal.signal(signal.SIGTERM, saved)  # the CLI installs its own handler


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: content hash and mtime, to prove nothing was touched."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return out


def _stored(env: Env, release: str = "r1") -> Path:
    """A real baseline of release ``release``, stored by a passing ``--promote`` run."""
    ran = env.gate("--promote", release=release)
    assert ran.code == 0, ran.err
    path = env.baselines / "cli" / f"{release}.json"
    assert path.is_file()
    return path


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# The happy path the other cases deviate from
# ---------------------------------------------------------------------------------------------


def test_a_passing_run_exits_0_and_writes_the_report(env: Env) -> None:
    ran = env.gate()
    assert ran.code == 0, ran.err
    assert "PASS" in ran.err and "perfgate: error" not in ran.err
    (result,) = env.reports.glob("cli/*/result.json")
    data = json.loads(result.read_text())
    assert data["verdict"] == "pass" and data["aborted"] is False
    assert 60 <= data["saturation"]["users"] <= 100  # the simulator's N* is 80


def test_the_floor_not_met_exits_1(env: Env) -> None:
    env.scenario.write_text(SCENARIO.replace("min_users: 50", "min_users: 150"))
    ran = env.gate()
    assert ran.code == 1, ran.err
    assert "BLOCKED" in ran.err


# ---------------------------------------------------------------------------------------------
# Bad scenario input: exit 2, one line naming the file (and the key), before anything starts
# ---------------------------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _with(old: str, new: str) -> str:
    assert old in SCENARIO
    return SCENARIO.replace(old, new)


BAD_SCENARIOS: dict[str, tuple[str | bytes, str]] = {
    "malformed YAML": ("name: [cli\nusers: {", "invalid YAML"),
    "not a mapping": ("- just\n- a list\n", "expected a mapping at the top level"),
    "empty file": ("", "expected a mapping at the top level"),
    "duplicate key": (SCENARIO + "name: again\n", "duplicate key 'name'"),
    "unknown key": (_with("max_users: 200", "max_user: 200"), "ramp.max_user: unknown key"),
    "wrong type": (
        _with("max_users: 200", "max_users: lots"),
        "ramp.max_users: expected an integer",
    ),
    "negative count": (_with("step_users: 20", "step_users: -5"), "ramp.step_users: must be ≥ 1"),
    "zero step": (_with("step_seconds: 2", "step_seconds: 0"), "ramp.step_seconds: must be > 0"),
    "max below start": (_with("max_users: 200", "max_users: 10"), "ramp.max_users: must be ≥"),
    "empty requests": (
        _with("    - {name: work, method: GET, path: /work}\n", "").replace(
            "requests:", "requests: []"
        ),
        "users.requests: is empty",
    ),
    "huge integer": (_with("max_users: 200", "max_users: " + "9" * 40), "ramp.max_users"),
    "huge float": (_with("p95_ms: 200", "p95_ms: 1.0e+400"), "slo.p95_ms: must be a finite number"),
    "infinity": (_with("step_seconds: 2", "step_seconds: .inf"), "ramp.step_seconds"),
    "not a number": (_with("p95_ms: 200", "p95_ms: .nan"), "slo.p95_ms: must be a finite number"),
    "a swarm of workers": (
        _with("staging: {provider: none}", "staging: {provider: none}\nload: {workers: 100000}"),
        "load.workers: must be ≤ 256, got 100000",
    ),
    "error rate above 1": (
        _with("error_rate: 0.01", "error_rate: 7"),
        "slo.error_rate: must be ≤ 1",
    ),
    "non-UTF-8 bytes": (SCENARIO.encode() + b"# caf\xe9 \xff\xfe\n", "not UTF-8 text"),
    "alias bomb": (BILLION_LAUGHS, "alias bomb"),
    "nested too deeply": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML"),
    "too large": (SCENARIO + "#" * (1 << 20) + "\n", "larger than"),
    "absolute URL as path": (
        _with("path: /work", "path: http://169.254.169.254/latest/meta-data"),
        "users.requests[0].path",
    ),
    "protocol-relative path": (
        _with("path: /work", "path: //evil.example/x"),
        "users.requests[0].path",
    ),
    "header injection": (
        _with("staging: {provider: none}", "staging: {provider: none}\nload: {}\n").replace(
            "  requests:", '  headers: {X-Id: "a\\r\\nEvil: 1"}\n  requests:'
        ),
        "users.headers.X-Id",
    ),
    "name that escapes its folder": (_with("name: cli", "name: ../../etc"), "name:"),
    "locustfile that is not Python": (
        _with(
            "  requests:\n    - {name: work, method: GET, path: /work}",
            "  locustfile: ../../../../../../etc/passwd",
        ),
        "users.locustfile",
    ),
    "locustfile that does not exist": (
        _with(
            "  requests:\n    - {name: work, method: GET, path: /work}", "  locustfile: ../nope.py"
        ),
        "users.locustfile",
    ),
    "newer scenario schema": ("schema: 9\n" + SCENARIO, "schema: scenario schema 9 is newer"),
    "integer too long to parse": (
        _with("max_users: 200", "max_users: " + "9" * 5000),
        "invalid YAML: Exceeds the limit",
    ),
    "name ending in a newline": (_with("name: cli", 'name: "cli\\n"'), "name: 'cli\\n'"),
    "control characters in a request name": (
        _with("{name: work,", '{name: "work\\e[2J\\n::warning::x",'),
        "users.requests[0].name: must not contain control characters",
    ),
    "unknown template function": (
        _with("path: /work", "path: \"/work/{{ __import__('os').system('id') }}\""),
        "template",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENARIOS))
def test_bad_scenario_is_one_line_and_exit_2(env: Env, case: str) -> None:
    content, expected = BAD_SCENARIOS[case]
    if isinstance(content, bytes):
        env.scenario.write_bytes(content)
    else:
        env.scenario.write_text(content)
    ran = env.gate()
    assert ran.code == 2, ran.err
    line = ran.error
    assert line.startswith(f"perfgate: error: {env.scenario}"), "names the file"
    assert expected in line
    assert len(line) < 400
    assert FakeRunner.created == 0, "nothing was started"
    assert not env.reports.exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("{slots: 100000000000}", "staging.embedded.slots: must be <= 100000, got 100000000000"),
        ("{service_ms: 1.0e+300}", "staging.embedded.service_ms: must be <= 60000"),
        ("{slots: 0}", "staging.embedded.slots: must be >= 1"),
        ("{bogus: 1}", "staging.embedded.bogus: unknown option"),
    ],
)
def test_bad_embedded_exchange_options_exit_2_in_validate_and_run(
    env: Env, options: str, expected: str
) -> None:
    env.scenario.write_text(
        SCENARIO.replace(
            "staging: {provider: none}", f"staging: {{provider: embedded, embedded: {options}}}"
        )
    )
    for args in (("validate", str(env.scenario)), ("run", "-s", str(env.scenario))):
        ran = env.run(*args)
        assert ran.code == 2, (args, ran.err)
        assert ran.error.startswith(f"perfgate: error: {env.scenario}: {expected}")
    assert FakeRunner.created == 0


def test_missing_scenario_file(env: Env) -> None:
    ran = env.run("run", "-s", str(env.tmp / "nope.yaml"), "--report-dir", str(env.reports))
    assert ran.code == 2
    assert ran.error == f"perfgate: error: {env.tmp / 'nope.yaml'}: scenario file not found"


def test_scenario_that_is_a_folder(env: Env) -> None:
    ran = env.run("validate", str(env.tmp))
    assert ran.code == 2
    assert "is a folder" in ran.error


def test_nothing_is_executed_that_the_scenario_did_not_ask_for(env: Env) -> None:
    """YAML tags that construct Python objects and template "code" are refused, never run."""
    marker = env.tmp / "pwned"
    payloads = (
        f"!!python/object/apply:os.system ['touch {marker}']\n",
        SCENARIO + f"description: !!python/object/apply:os.system ['touch {marker}']\n",
        _with("path: /work", f"path: \"/{{{{ __import__('os').system('touch {marker}') }}}}\""),
        _with("path: /work", f"path: \"/{{{{ open('{marker}', 'w') }}}}\""),
        _with("path: /work", 'path: "/{{ rand_int(1, 2).__class__ }}"'),
    )
    for text in payloads:
        env.scenario.write_text(text)
        ran = env.gate()
        assert ran.code == 2, (text, ran.err)
        ran.error  # noqa: B018 - one line, no traceback
    assert not marker.exists()
    assert FakeRunner.created == 0


def test_cli_usage_errors_exit_2(env: Env) -> None:
    for args in (
        ("run", "--bogus"),
        ("run", "--max-users", "0"),
        ("run", "--step-seconds", "abc"),
        ("nonsense",),
        ("run", "--strategy", "random", "-s", str(env.scenario)),
        ("run", "--workers", "100000", "-s", str(env.scenario)),
        ("run", "--staging", "cloud", "-s", str(env.scenario)),
    ):
        ran = env.run(*args)
        assert ran.code == 2, (args, ran.err)
        assert "Traceback" not in ran.err
    assert FakeRunner.created == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-users", "1000000000000", "--max-users: must be ≤ 100000"),
        ("--step-seconds", "1e300", "--step-seconds: must be ≤ 3600, got 1e+300"),
        ("--step-seconds", "inf", "--step-seconds: must be ≤ 3600, got inf"),
        ("--step-users", "99999999999", "--step-users: must be ≤ 100000"),
    ],
)
def test_huge_numbers_on_the_command_line_exit_2(
    env: Env, option: str, value: str, message: str
) -> None:
    ran = env.gate(option, value)
    assert ran.code == 2
    assert ran.error.startswith(f"perfgate: error: {message}")
    assert FakeRunner.created == 0


def test_target_url_that_is_not_http_exits_2(env: Env) -> None:
    ran = env.run("run", "-s", str(env.scenario), "--target", "file:///etc/passwd")
    assert ran.code == 2
    assert "must start with http:// or https://" in ran.error


def test_release_with_dots_and_slashes_stays_inside_the_report_folder(env: Env) -> None:
    ran = env.gate(release="../../../escaped")
    assert ran.code == 0, ran.err
    written = [p for p in env.tmp.rglob("*") if p.is_file() and p != env.scenario]
    assert written and all(env.reports in p.parents for p in written)
    assert not (env.tmp.parent / "escaped").exists()


def test_release_with_dots_cannot_be_promoted(env: Env) -> None:
    ran = env.gate("--promote", release="../../etc/x")
    assert ran.code == 2
    assert "is not allowed for a baseline file" in ran.error
    assert FakeRunner.created == 0, "refused before the load"


# ---------------------------------------------------------------------------------------------
# Baseline files: corrupt, foreign, newer → exit 2 before the load, file byte-identical
# ---------------------------------------------------------------------------------------------


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _newer_schema(path: Path) -> None:
    data = json.loads(path.read_text())
    data["schema"] = 99
    path.write_text(json.dumps(data))


def _other_scenario(path: Path) -> None:
    data = json.loads(path.read_text())
    data["scenario"] = "payments"
    path.write_text(json.dumps(data))


def _not_a_baseline(path: Path) -> None:
    path.write_text(json.dumps({"schema": 1, "verdict": "pass", "steps": []}))


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"kind": "perfgate-baseline", "release": "\xff\xfe"}')


def _nan_and_huge(path: Path) -> None:
    data = json.loads(path.read_text())
    text = json.dumps(data).replace('"users": ', '"users": NaN, "x": ', 1)
    path.write_text(text)


def _set(key: str, value: Any) -> Callable[[Path], None]:
    """Damage: ``key`` (dotted, ``steps.0.users``) set to ``value``."""

    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        *parents, last = key.split(".")
        where = data
        for k in parents:
            where = where[int(k)] if isinstance(where, list) else where[k]
        where[int(last) if isinstance(where, list) else last] = value
        path.write_text(json.dumps(data))

    return damage


BAD_BASELINES: dict[str, tuple[Callable[[Path], None], str]] = {
    "null saturation": (_set("saturation", None), "key 'saturation': expected an object, got null"),
    "null created_at": (_set("created_at", None), "key 'created_at': expected a string, got null"),
    "null users of a step": (
        _set("steps.0.users", None),
        "key 'steps': [0].users: expected an integer, got null",
    ),
    "truncated": (_corrupt, "not valid JSON"),
    "newer schema": (_newer_schema, "written by a newer perfgate (schema 99)"),
    "another scenario": (_other_scenario, "is a baseline of scenario 'payments', not 'cli'"),
    "a result.json": (_not_a_baseline, "looks like a result.json"),
    "not UTF-8": (_not_utf8, "not UTF-8 text"),
    "NaN": (_nan_and_huge, "NaN is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_BASELINES))
def test_bad_baseline_exits_2_and_is_left_exactly_as_it_was(env: Env, case: str) -> None:
    damage, expected = BAD_BASELINES[case]
    path = _stored(env)
    damage(path)
    before = _digest(env.baselines)
    created = FakeRunner.created
    for extra in ((), ("--promote",), ("--promote", "--force")):
        ran = env.gate(*extra)
        assert ran.code == 2, (extra, ran.err)
        line = ran.error
        assert str(path) in line and expected in line
    assert FakeRunner.created == created, "refused before the load"
    assert _digest(env.baselines) == before, "the file (and its folder) are untouched"
    for command in (("baseline", "list"), ("baseline", "show", "r1", "--scenario", "cli")):
        ran = env.run(*command, "--baseline-dir", str(env.baselines))
        assert ran.code == 2, (command, ran.err)
    assert _digest(env.baselines) == before


def test_existing_baseline_of_the_same_release_is_refused_before_the_load(env: Env) -> None:
    path = _stored(env, "r2")
    before = _digest(env.baselines)
    created = FakeRunner.created
    ran = env.gate("--promote")
    assert ran.code == 2
    assert f"already exists at {path} (use --force to replace it)" in ran.error
    assert FakeRunner.created == created
    assert _digest(env.baselines) == before


# ---------------------------------------------------------------------------------------------
# Infrastructure: exit 3
# ---------------------------------------------------------------------------------------------


def test_target_unreachable_before_load_exits_3(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "PROBE_TIMEOUT_S", 0.5)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ran = env.run(
        "run",
        "-s",
        str(env.scenario),
        "--target",
        f"http://127.0.0.1:{port}",
        "--report-dir",
        str(env.reports),
        "--baseline-dir",
        str(env.baselines),
    )
    assert ran.code == 3
    assert ran.error.startswith(f"perfgate: error: target http://127.0.0.1:{port} did not answer")
    assert FakeRunner.created == 0
    assert not env.reports.exists(), "nothing measured, no report"


def test_embedded_exchange_that_cannot_start_exits_3(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_python = env.tmp / "python"
    fake_python.write_text(
        "#!/bin/sh\n"
        "echo 'error: cannot listen on 127.0.0.1:0: [Errno 98] Address already in use' >&2\n"
        "exit 1\n"
    )
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    env.scenario.write_text(SCENARIO.replace("provider: none", "provider: embedded"))
    ran = env.run(
        "run",
        "-s",
        str(env.scenario),
        "--report-dir",
        str(env.reports),
        "--baseline-dir",
        str(env.baselines),
        "--release",
        "r2",
    )
    assert ran.code == 3
    assert ran.error == (
        "perfgate: error: reference exchange failed to start (exit code 1): "
        "error: cannot listen on 127.0.0.1:0: [Errno 98] Address already in use"
    )
    assert FakeRunner.created == 0


def test_report_folder_under_a_regular_file_fails_before_the_load(env: Env) -> None:
    blocker = env.tmp / "not-a-folder"
    blocker.write_text("x")
    ran = env.run(
        "run",
        "-s",
        str(env.scenario),
        "--target",
        env.target,
        "--report-dir",
        str(blocker / "reports"),
        "--baseline-dir",
        str(env.baselines),
    )
    assert ran.code == 3
    assert ran.error == (
        f"perfgate: error: cannot write reports to {blocker / 'reports'}: {blocker} is not a folder"
    )
    assert FakeRunner.created == 0, "no load was spent on a run that cannot be reported"


def test_baseline_folder_under_a_regular_file_fails_before_the_load_with_promote(env: Env) -> None:
    blocker = env.tmp / "not-a-folder"
    blocker.write_text("x")
    ran = env.run(
        "run",
        "-s",
        str(env.scenario),
        "--target",
        env.target,
        "--promote",
        "--report-dir",
        str(env.reports),
        "--baseline-dir",
        str(blocker / "b"),
    )
    assert ran.code == 3
    assert ran.error == (
        f"perfgate: error: cannot write baselines to {blocker / 'b'}: {blocker} is not a folder"
    )
    assert FakeRunner.created == 0


def _fail_under(monkeypatch: pytest.MonkeyPatch, name: str, folder: Path, code: int) -> list[str]:
    """Make ``os.<name>`` (fsync: by fd, open: by path) fail with ``code`` for ``folder`` only."""
    real = getattr(os, name)
    hits: list[str] = []

    def where(arg: Any) -> str:
        if isinstance(arg, int):
            try:
                return os.readlink(f"/proc/self/fd/{arg}")
            except OSError:
                return ""
        return os.path.abspath(os.fspath(arg))

    def faulty(arg: Any, *args: Any, **kwargs: Any) -> Any:
        path = where(arg)
        if path.startswith(str(folder) + os.sep):
            hits.append(path)
            raise OSError(code, os.strerror(code), path)
        return real(arg, *args, **kwargs)

    monkeypatch.setattr(os, name, faulty)
    return hits


def test_disk_full_while_writing_the_report_exits_3_and_keeps_baselines(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stored(env, "r1")
    before = _digest(env.baselines)
    hits = _fail_under(monkeypatch, "fsync", env.reports, errno.ENOSPC)
    ran = env.gate("--promote")
    assert hits, "the fault was injected"
    assert ran.code == 3
    line = ran.error
    assert line.startswith(f"perfgate: error: cannot write {env.reports}")
    assert line.endswith(": No space left on device")
    assert _digest(env.baselines) == before, "no baseline written, the old one intact"
    assert not _temp_files(env.reports), "no half-written temp files left behind"


def test_disk_full_while_storing_the_baseline_exits_3_after_the_report(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stored(env, "r1")
    before = _digest(env.baselines)
    hits = _fail_under(monkeypatch, "fsync", env.baselines, errno.ENOSPC)
    # the previous release side by side (the same target): a pass, so --promote stores it
    ran = env.gate("--promote", "--baseline-target", env.target)
    assert hits
    assert ran.code == 3
    assert "PASS" in ran.err, "the verdict is still shown"
    stored = env.baselines / "cli" / "r2.json"
    assert ran.error == (
        f"perfgate: error: not promoted: cannot write baseline {stored}: No space left on device"
    )
    assert _digest(env.baselines) == before
    assert not _temp_files(env.baselines)
    (result,) = env.reports.glob("cli/r2-*/result.json")
    assert json.loads(result.read_text())["verdict"] == "pass"


def test_fixed_urls_say_the_deployment_difference_is_assumed_until_calibrated(env: Env) -> None:
    from perfgate import calibration

    ran = env.gate("--baseline-target", env.target)
    assert ran.code == 0, ran.err
    note = "no cross-over: two fixed URLs cannot swap builds"
    assert note in ran.err and "perfgate calibrate --baseline-target URL" in ran.err
    measured = dataclasses.replace(calibration.default_noise(), deploy_sd_log=0.012)
    calibration.save_noise(measured, env.baselines, "cli")
    ran = env.gate("--baseline-target", env.target)
    assert ran.code == 0, ran.err
    assert note not in ran.err, "a calibrated deployment difference replaces the assumption"


@pytest.mark.parametrize("wait", [False, True])
def test_side_by_side_says_when_the_event_path_is_not_compared(env: Env, wait: bool) -> None:
    streams = (
        "  streams: {url: /events, expect: [{request: work, id: id, event_id: order_id}],"
        f" wait: {str(wait).lower()}}}\n"
    )
    scenario = env.tmp / "events.yaml"
    scenario.write_text(SCENARIO.replace("ramp:", streams + "ramp:", 1))
    ran = env.run(
        "run", "-s", str(scenario), "--target", env.target, "--baseline-target", env.target,
        "--release", "r2", "--report-dir", str(env.reports), "--baseline-dir", str(env.baselines),
    )  # fmt: skip
    assert ran.code == 0, ran.err
    note = "the side-by-side windows compare request goodput only"
    assert (note in ran.err) is not wait, ran.err


def test_baseline_folder_not_writable_exits_3_and_keeps_baselines(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES on creating the temp file (root ignores chmod, so the fault is injected)."""
    _stored(env, "r1")
    before = _digest(env.baselines)
    hits = _fail_under(monkeypatch, "open", env.baselines, errno.EACCES)
    ran = env.gate("--promote", "--baseline-target", env.target)
    assert hits
    assert ran.code == 3
    assert ran.error.endswith(": Permission denied")
    assert "not promoted: cannot write baseline" in ran.error
    assert _digest(env.baselines) == before


def test_report_folder_not_writable_exits_3(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    hits = _fail_under(monkeypatch, "open", env.reports, errno.EACCES)
    ran = env.gate()
    assert hits
    assert ran.code == 3
    assert ran.error.endswith(": Permission denied")
    assert str(env.reports) in ran.error


# ---------------------------------------------------------------------------------------------
# Internal errors: exit 70 with the traceback, never mistaken for a verdict
# ---------------------------------------------------------------------------------------------


def test_a_bug_exits_70_with_its_traceback(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("injected bug")

    monkeypatch.setattr(analysis, "saturation", buggy)
    ran = env.gate()
    assert ran.code == 70
    assert "Traceback (most recent call last)" in ran.err
    assert "ZeroDivisionError: injected bug" in ran.err
    assert ran.err.rstrip().endswith(
        "perfgate: internal error (a bug, not a verdict): please report it with the traceback above"
    )
    assert "BLOCKED" not in ran.err and "PASS" not in ran.err


def test_debug_shows_the_traceback_of_an_explained_error(env: Env) -> None:
    ran = env.run("--debug", "run", "-s", str(env.tmp / "nope.yaml"))
    assert ran.code == 2
    assert "Traceback" in ran.err and "ScenarioError" in ran.err
    assert ran.err.rstrip().endswith("scenario file not found")


def test_simulate_prints_the_documented_json(env: Env) -> None:
    """Issue 4's interface: `perfgate simulate --regression R --trials N --seed S --json`."""
    ran = env.run("simulate", "--regression", "0.1", "--trials", "3", "--seed", "7", "--json")
    assert ran.code == 0, ran.err
    out = json.loads(ran.out)
    assert out["trials"] == 3
    for key in ("block", "pass", "inconclusive"):
        assert 0.0 <= out[key] <= 1.0
    assert out["block"] + out["pass"] + out["inconclusive"] == pytest.approx(1.0)
    low, high = out["block_ci"]
    assert 0.0 <= low <= out["block"] <= high <= 1.0
    again = env.run("simulate", "--regression", "0.1", "--trials", "3", "--seed", "7", "--json")
    assert json.loads(again.out)["block"] == out["block"], "same seed, same figures"


# ---------------------------------------------------------------------------------------------
# Hostile input, round 2 (issue 14)
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("ftp://127.0.0.1:21", 2, "--baseline-target 'ftp://127.0.0.1:21' must start with http"),
        ("file:///etc/passwd", 2, "--baseline-target 'file:///etc/passwd' must start with http"),
        (
            "http://bob:hunter2@[::1:80",
            2,
            "--baseline-target 'http://bob:***@[::1:80' is malformed",
        ),
        ("dead", 3, "--baseline-target http://127.0.0.1:{port} did not answer within"),
    ],
    ids=["ftp", "file", "malformed-with-password", "dead-port"],
)
def test_baseline_target_is_checked_like_target_before_any_load(
    env: Env, monkeypatch: pytest.MonkeyPatch, url: str, code: int, message: str
) -> None:
    monkeypatch.setattr(staging, "PROBE_TIMEOUT_S", 0.3)
    port = _free_port()
    if url == "dead":
        url = f"http://127.0.0.1:{port}"
    ran = env.gate("--baseline-target", url)
    assert ran.code == code, ran.err
    assert ran.error.startswith("perfgate: error: " + message.format(port=port)), ran.error
    assert "hunter2" not in ran.err + ran.out
    assert FakeRunner.created == 0, "refused before any load generator was started"
    assert not env.reports.exists()


def test_malformed_target_url_is_bad_input_and_never_shows_its_password(env: Env) -> None:
    ran = env.run("run", "-s", str(env.scenario), "--target", "http://u:hunter2@[::1:80/x")
    assert ran.code == 2, ran.err
    assert "is malformed" in ran.error
    assert "hunter2" not in ran.err + ran.out


class _DeadBaselineRunner(FakeRunner):
    """The candidate as FakeRunner; the previous release (its URL ends in /old) fails everything."""

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.dead = url.endswith("/old")

    def measure(self, users: int, **kwargs: Any) -> StepStats:
        step = super().measure(users, **kwargs)
        if not self.dead:
            return step
        return dataclasses.replace(step, failures=step.requests, error_rate=1.0, slo_ok=False)


@pytest.mark.parametrize("design", ["windows", "replicates"])
def test_a_previous_release_that_measured_nothing_is_an_infrastructure_failure(
    env: Env, monkeypatch: pytest.MonkeyPatch, design: str
) -> None:
    monkeypatch.setattr(pipeline_run, "LocustRunner", _DeadBaselineRunner)
    extra = ("--repeat", "2") if design == "replicates" else ()
    ran = env.gate("--baseline-target", env.target + "/old", "--promote", *extra)
    assert ran.code == 3, ran.err
    assert "PASS" not in ran.err
    (result,) = env.reports.glob("cli/r2-*/result.json")
    assert json.loads(result.read_text())["verdict"] != "pass"
    assert not env.baselines.exists() or not list(env.baselines.rglob("r2.json"))


# ---------------------------------------------------------------------------------------------
# --extend: an inconclusive gate continued as the same sequential test (issue 10)
# ---------------------------------------------------------------------------------------------


class _SlightlySlowerRunner(FakeRunner):
    """The previous release (its URL ends in /old) as FakeRunner; the candidate 4 % slower."""

    def __init__(self, url: str, users: UsersSpec, slo: Slo, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, users, slo, *args, **kwargs)
        if not url.endswith("/old"):
            self.sim = SimulatedRunner(MODEL, slo, seed=7, regression=0.04)


def _result_of(env: Env, release: str) -> tuple[Path, dict[str, Any]]:
    path = sorted(env.reports.glob(f"cli/{release}-*/result.json"))[-1]
    return path, json.loads(path.read_text())


def test_an_inconclusive_gate_is_extended_once_and_keeps_its_evidence(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_run, "LocustRunner", _SlightlySlowerRunner)
    paired = ("--baseline-target", env.target + "/old")
    first = env.gate(*paired)
    assert first.code == 4, first.err  # 4 % slower: neither credibly within 10 % nor ≥ 5 % worse
    path, earlier = _result_of(env, "r2")
    assert "--extend" in " ".join(earlier["reasons"]) or "calibrate" in " ".join(earlier["reasons"])
    more = env.gate(*paired, "--extend", str(path))
    assert more.code in (1, 4), more.err
    _, extended = _result_of(env, "r2")
    assert extended["steps"] == earlier["steps"]  # no new search: the same window level
    assert extended["windows"][: len(earlier["windows"])] == earlier["windows"]
    assert {w["session"] for w in extended["windows"]} == {0, 1}
    assert [look["session"] for look in extended["looks"]][: len(earlier["looks"])] == [0] * len(
        earlier["looks"]
    )
    assert any(look["session"] == 1 for look in extended["looks"])
    # the gate and its extension spend one budget: the extension only the quarter kept for it
    spent = sum(look["alpha_block"] for look in extended["looks"] if look["session"] == 1)
    assert 0 < spent <= 0.25 * 0.01 + 1e-12
    newest = sorted(env.reports.glob("cli/r2-*/result.json"))[-1]
    again = env.gate(*paired, "--extend", str(newest))
    assert again.code == 2 and "extension already" in again.error, again.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--release", "r3"), "it is a run of release r2 (give --release r2)"),
        (("--repeat", "2"), "only a gate of side-by-side windows can be extended"),
    ],
    ids=["other-release", "replicates"],
)
def test_extend_refuses_what_would_not_be_the_same_test(
    env: Env, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], message: str
) -> None:
    monkeypatch.setattr(pipeline_run, "LocustRunner", _SlightlySlowerRunner)
    paired = ("--baseline-target", env.target + "/old")
    assert env.gate(*paired).code == 4
    path, _ = _result_of(env, "r2")
    created = FakeRunner.created
    release = extra[1] if extra[0] == "--release" else "r2"
    args = extra if extra[0] != "--release" else ()
    ran = env.gate(*paired, "--extend", str(path), *args, release=release)
    assert ran.code == 2, ran.err
    assert message in ran.error
    assert FakeRunner.created == created, "refused before any load"


def test_extend_refuses_a_gate_that_already_decided(env: Env) -> None:
    ran = env.gate("--baseline-target", env.target + "/old")
    assert ran.code == 0, ran.err
    path, _ = _result_of(env, "r2")
    again = env.gate("--baseline-target", env.target + "/old", "--extend", str(path))
    assert again.code == 2 and "not inconclusive" in again.error, again.err


def _noise_model(env: Env) -> Path:
    path = env.baselines / "cli" / "noise.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "kind": "perfgate-noise-model",
        "schema": 1,
        "sd_log": 0.02,
        "df": 9,
        "pair_sd_log": 0.02,
        "pair_df": 9,
        "runs": 10,
    }
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("sd_log", None, "key 'sd_log' must be a number, got None"),
        ("values_rps", [1.0, None], "key 'values_rps': [1]: expected a number, got null"),
    ],
)
def test_a_noise_model_with_null_fields_is_refused_before_the_load(
    env: Env, key: str, value: Any, expected: str
) -> None:
    from perfgate.calibration import NOISE_KIND

    path = _noise_model(env)
    _set("kind", NOISE_KIND)(path)
    assert env.gate().code == 0, "the intact model is read"
    created = FakeRunner.created
    _set(key, value)(path)
    ran = env.gate()
    assert ran.code == 2, ran.err
    assert f"noise model {path}: {expected}" in ran.error
    assert FakeRunner.created == created


def _saved_result(env: Env) -> Path:
    ran = env.gate()
    assert ran.code == 0, ran.err
    (path,) = env.reports.glob("cli/r2-*/result.json")
    return path


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("saturation", None, "key 'saturation': expected an object, got null"),
        ("steps.0.users", None, "key 'steps': [0].users: expected an integer, got null"),
        ("rules.0", None, "key 'rules': [0]: expected an object, got null"),
    ],
)
def test_a_result_with_null_objects_is_refused_by_report_and_promote(
    env: Env, key: str, value: Any, expected: str
) -> None:
    path = _saved_result(env)
    _set(key, value)(path)
    before = path.read_bytes()
    for command in (("report", str(path)), ("baseline", "promote", str(path))):
        ran = env.run(*command, "--baseline-dir", str(env.baselines))
        assert ran.code == 2, (command, ran.err)
        assert ran.error == f"perfgate: error: result file {path}: {expected}" or (
            ran.error.startswith(f"perfgate: error: result file {path}: {expected}")
        )
    assert path.read_bytes() == before
    assert not env.baselines.exists() or not list(env.baselines.rglob("r2.json"))


def test_exchange_options_with_huge_numbers_are_bad_input(env: Env) -> None:
    huge = "9" * 5000
    ran = env.run("exchange", "serve", "--port", "0", "--config-json", f'{{"slots": {huge}}}')
    assert ran.code == 2, ran.err
    assert ran.error.startswith("perfgate: error: --config-json: not valid JSON (Exceeds the limit")
    assert len(ran.error) < 300


def test_two_runs_in_the_same_second_never_share_a_report_folder(env: Env) -> None:
    """The folder is claimed by an atomic mkdir: the second run of the second gets ``-2``."""
    from perfgate.pipeline import run_folder

    first = run_folder(env.reports, "cli", "r1")
    second = run_folder(env.reports, "cli", "r1")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name)


def test_a_scenario_report_folder_linked_elsewhere_is_refused_before_the_load(env: Env) -> None:
    elsewhere = env.tmp / "elsewhere"
    elsewhere.mkdir()
    env.reports.mkdir()
    (env.reports / "cli").symlink_to(elsewhere)
    ran = env.gate()
    assert ran.code == 3, ran.err
    assert "refusing to write reports to" in ran.error and "outside" in ran.error
    assert FakeRunner.created == 0
    assert not list(elsewhere.iterdir())


NESTED_RANGE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
NESTED_VARIABLE = "{% for a in xs %}{% for b in xs %}{% for c in xs %}{{ '' }}" + "{% endfor %}" * 3


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (NESTED_RANGE, "the template's loops run more than 100000 times"),
        ("{{ 'x' * 100000000 }}", "a repeated value is too large"),
        ("{% for i in range(99999) %}{{ 'y' * 99 }}{% endfor %}", "renders to more than"),
        (NESTED_VARIABLE, "rendering took longer than 0.5 s"),
    ],
    ids=["nested-range", "repeat", "output-size", "nested-variable"],
)
def test_validate_cannot_hang_on_a_manifest_template(
    env: Env, monkeypatch: pytest.MonkeyPatch, template: str, expected: str
) -> None:
    from perfgate.staging import manifests

    monkeypatch.setattr(manifests, "MAX_RENDER_S", 0.5)
    (env.tmp / "m").mkdir()
    (env.tmp / "m" / "app.yaml").write_text(template)
    xs = list(range(1000))
    env.scenario.write_text(
        _with(
            "staging: {provider: none}",
            "staging:\n  provider: kubernetes\n  kubernetes:\n"
            f"    manifests: [m]\n    service: web\n    variables: {{xs: {xs}}}",
        )
    )
    ran = env.run("validate", str(env.scenario))
    assert ran.code == 2, ran.err
    assert expected in ran.err


def test_control_characters_from_data_never_reach_the_console_or_markdown(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names and errors come from locustfiles and saved files too: escaped on every output."""
    from perfgate.report import console_summary, load_result

    path = _saved_result(env)
    evil = "GET x\x1b[2J\x07: boom\r\n::warning::injected"
    data = json.loads(path.read_text())
    data["steps"][0]["errors"] = [[evil, 3]]
    data["reasons"] = [*data["reasons"], evil]
    path.write_text(json.dumps(data))
    step_summary = env.tmp / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    ran = env.run("report", str(path), "--baseline-dir", str(env.baselines))
    assert ran.code == 0, ran.err
    console = console_summary(load_result(path), path.parent)
    for where, text in {
        "summary.md": (path.parent / "summary.md").read_text(),
        "step summary": step_summary.read_text(),
        "console": console,
        "cli": ran.out + ran.err,
    }.items():
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text, where
        assert not any(line.startswith("::") for line in text.splitlines()), where
    assert "\\x1b[2J" in console


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_ui_port_out_of_range_is_a_usage_error(env: Env, port: str) -> None:
    ran = env.run(
        "ramp", "-s", str(env.scenario), "--target", env.target, "--ui", "--ui-port", port
    )
    assert ran.code == 2, ran.err
    assert "--ui-port" in ran.err and "Traceback" not in ran.err
    assert FakeRunner.created == 0


def test_release_names_sharing_a_baseline_file_are_refused(env: Env) -> None:
    """feature/x and feature_x (café and caf_) map to one file: never replaced or confused."""
    assert env.gate("--promote", release="feature/x").code == 0
    stored = env.baselines / "cli" / "feature_x.json"
    accented = stored.with_name("caf_.json")
    accented.write_text(stored.read_text().replace('"release": "feature/x"', '"release": "café"'))
    before = _digest(env.baselines)
    created = FakeRunner.created
    for release, holder in (("feature_x", "feature/x"), ("caf_", "café")):
        ran = env.gate("--promote", "--force", release=release)
        assert ran.code == 2, ran.err
        assert f"release {release!r} maps to" in ran.error and repr(holder) in ran.error
        ran = env.run(
            "baseline", "show", release, "--scenario", "cli", "--baseline-dir", str(env.baselines)
        )
        assert ran.code == 2, ran.err
    assert FakeRunner.created == created, "refused before the load"
    assert _digest(env.baselines) == before
