"""Faults with real processes: the target misbehaving, signals at every stage, racing promotions,
a real file-size limit, hostile names and secrets end to end.

Every case runs the real CLI (``python -m perfgate`` or ``tests/pause_cli.py``, which only pauses
inside one stage) against a real target: ``tests/faulty_target.py`` (die, 5xx bursts, hang,
reset) or the embedded reference exchange. Ramps are tiny (1–1.5 s levels, few levels).
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

from perfgate import baseline
from perfgate.report import load_result
from tests.faulty_target import RunningTarget, faulty_target

ROOT = Path(__file__).resolve().parent.parent
PAUSE_CLI = ROOT / "tests" / "pause_cli.py"
REPORT_FILES = {
    "index.html",
    "result.json",
    "junit.xml",
    "summary.md",
    "steps.csv",
    "endpoints.csv",
}

# users.wait 0.01 s: without a think time, users loop on instantly refused connections fast
# enough to peg the generator's CPU, and the verdict's generator rule then calls the dead
# target's level "generator-limited" (inconclusive) instead of blocking on the floor. That is a
# verdict bug (reported); the think time keeps these cases about the target's faults.
FAULT_SCENARIO = """\
name: faults
staging: {provider: none}
users:
  wait: 0.01
  requests:
    - {name: work, method: GET, path: /work}
ramp: {start_users: 2, step_users: 2, max_users: 10, step_seconds: 1.5}
slo: {p95_ms: 200, error_rate: 0.01}
gate: {min_users: 8}
load: {request_timeout_s: 0.5}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    code: int
    out: str
    err: str
    seconds: float


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("GITHUB_STEP_SUMMARY", "PERFGATE_DEBUG")
    }
    env.update(extra or {})
    return env


def perfgate(
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout_s: float = 120,
) -> Done:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "perfgate", *args],
        cwd=ROOT,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=preexec_fn,
        check=False,
    )
    return Done(
        code=proc.returncode,
        out=proc.stdout,
        err=proc.stderr,
        seconds=time.monotonic() - started,
    )


def _run_folder(reports: Path) -> Path:
    (folder,) = [p.parent for p in reports.rglob("result.json")]
    return folder


def _result(reports: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_run_folder(reports) / "result.json").read_text())
    return data


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------
# The target misbehaves mid-ramp: a breach with its reason, a full report, exit code by the rules
# ---------------------------------------------------------------------------------------------

# mode -> what the step's errors must say (the floor of 8 users then blocks: exit 1)
TARGET_FAULTS = {
    "die": "Connection refused",
    "burst": "HTTP 503",
    "hang": "timed out",
    "reset": "connection closed",
}


@pytest.mark.parametrize("mode", sorted(TARGET_FAULTS))
def test_target_fault_mid_ramp_is_a_breach_with_its_reason(tmp_path: Path, mode: str) -> None:
    scenario = tmp_path / "faults.yaml"
    scenario.write_text(FAULT_SCENARIO)
    reports = tmp_path / "reports"
    # Levels last 1.5 s from the first request: 2 users are clean, the fault starts in the
    # second level (4 users) before its measuring window (settle 0.375 s).
    with faulty_target(f"0:ok,1.7:{mode}") as target:
        done = perfgate(
            "run",
            "-s",
            str(scenario),
            "--target",
            target.url,
            "--release",
            "r1",
            "--report-dir",
            str(reports),
            "--baseline-dir",
            str(tmp_path / "baselines"),
        )
    _no_traceback(done.err)
    assert done.code == 1, done.err  # blocked by the floor, as the rules say
    assert done.seconds < 60, "a hung target cannot stall the run: requests time out"
    result = _result(reports)
    assert set(os.listdir(_run_folder(reports))) == REPORT_FILES
    assert result["verdict"] == "block" and result["aborted"] is False
    steps = result["steps"]
    assert steps[0]["slo_ok"] is True
    broken = [s for s in steps if not s["slo_ok"]]
    assert len(broken) >= 2, "the breach was confirmed by a second level"
    first = broken[0]
    assert first["users"] == 4
    assert "error rate" in first["slo_reason"]
    assert any(TARGET_FAULTS[mode] in message for message, _ in first["errors"]), first["errors"]
    sat = result["saturation"]
    assert sat["broken"] is True and 2 <= sat["users"] < 4
    assert "at 4 users" in sat["reason"]
    floor = next(r for r in result["rules"] if r["name"] == "floor")
    assert floor["outcome"] == "fail"
    assert result["generator"]["request_timeout_s"] == 0.5
    # the console names the cause, not only "error rate"
    assert "errors first at 4 users: GET work: " in done.err
    assert TARGET_FAULTS[mode] in done.err
    if mode == "hang":
        assert "requests time out after 0.5 s (load.request_timeout_s)" in done.err
        html = (_run_folder(reports) / "index.html").read_text()
        assert '<td>request_timeout_s</td><td class="mono">0.5</td>' in html


# ---------------------------------------------------------------------------------------------
# One target per gate: no redirect is followed; a trickling answer times out as a whole
# ---------------------------------------------------------------------------------------------

ONE_TARGET_SCENARIO = """\
name: onetarget
staging: {provider: none}
users:
  wait: 0.01
  headers: {X-Api-Key: "${FI_KEY}"}
  requests:
    - {name: away, method: GET, path: /away, weight: 3}
    - {name: slow, method: GET, path: /trickle}
ramp: {start_users: 2, step_users: 2, max_users: 2, step_seconds: 2.5}
slo: {p95_ms: 2000, error_rate: 1}
load: {request_timeout_s: 0.5}
"""


class _Elsewhere(BaseHTTPRequestHandler):
    """Another origin: counts what reaches it (nothing must)."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Elsewhere.seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_redirects_stay_home_and_a_trickling_answer_times_out(tmp_path: Path) -> None:
    """A 302 to another origin is the response (the key never travels); a body sent a byte
    every 0.1 s fails after request_timeout_s in all and counts as a failure. (Weights 3:1 and a
    2.5-s step: both requests run in the window but by a chance of about 1 in 10⁴ — with 1:1 and
    1.5 s, six slow picks in a row left `away` out about once in 60 runs.)"""
    scenario = tmp_path / "onetarget.yaml"
    scenario.write_text(ONE_TARGET_SCENARIO)
    reports = tmp_path / "reports"
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        elsewhere = f"http://127.0.0.1:{other.server_address[1]}"
        with faulty_target("0:ok", redirect_to=elsewhere) as target:
            done = perfgate(
                "ramp",
                "-s",
                str(scenario),
                "--target",
                target.url,
                "--report-dir",
                str(reports),
                env={"FI_KEY": "key-4711"},
            )
    finally:
        other.shutdown()
        other.server_close()
    _no_traceback(done.err)
    assert done.code == 0, done.err
    assert _Elsewhere.seen == [], "no request (and no X-Api-Key) reached another origin"
    step = _result(reports)["steps"][0]
    endpoints = {e["name"]: e for e in step["endpoints"]}
    assert endpoints["away"]["requests"] > 0 and endpoints["away"]["failures"] == 0
    slow = endpoints["slow"]
    assert slow["requests"] > 0 and slow["failures"] == slow["requests"], slow
    assert any("GET slow: RequestTimedOut: timed out" in m for m, _ in step["errors"]), step


# ---------------------------------------------------------------------------------------------
# Signals at every stage: no orphans, a partial report marked aborted, exit 128 + signal
# ---------------------------------------------------------------------------------------------

SIGNAL_SCENARIO = """\
name: signals
staging: {provider: embedded, embedded: {service_ms: 1, slots: 16}}
users:
  requests:
    - {name: book, method: GET, path: /orderbook/BTC-USDT}
ramp: {start_users: 2, step_users: 2, max_users: MAX, step_seconds: 1}
slo: {p95_ms: 500}
load: {workers: WORKERS}
"""


class Paused:
    """``tests/pause_cli.py STAGE run …`` with its stderr read on a thread."""

    def __init__(self, stage: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PAUSE_CLI), stage, *args],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"exited before {marker!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            if line.strip() == marker:
                return

    def finish(self, timeout_s: float = 60.0) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout_s)
        self.reader.join(timeout=5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return code, "".join(self.seen)

    def kill(self) -> None:
        """Always called: kill (if a test failed early), reap, close the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _family(pid: int) -> list[tuple[int, int, str]]:
    """(pid, process group, command) of every descendant of ``pid``."""
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            out.append((child.pid, os.getpgid(child.pid), " ".join(child.cmdline()[1:4])))
        except (psutil.Error, ProcessLookupError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_alive(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _assert_no_orphans(family: list[tuple[int, int, str]]) -> None:
    deadline = time.monotonic() + 5  # an orphaned child would still be running long after
    while time.monotonic() < deadline:
        alive = [f for f in family if _alive(f[0]) or _group_alive(f[1])]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"left running: {alive}")


# stage -> (max_users, workers, what must be running when the signal lands)
STAGES = {
    "provisioning": (4, 1, ("perfgate.exchange",)),
    "ramp": (40, 2, ("perfgate.exchange", "perfgate.load.engine", "perfgate.load.engine --worker")),
    "analysis": (2, 1, ()),
    "report": (2, 1, ()),
}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_signal_at_each_stage_leaves_an_aborted_report_and_no_orphans(
    tmp_path: Path, stage: str, signum: signal.Signals
) -> None:
    max_users, workers, running = STAGES[stage]
    scenario = tmp_path / "signals.yaml"
    scenario.write_text(
        SIGNAL_SCENARIO.replace("MAX", str(max_users)).replace("WORKERS", str(workers))
    )
    reports, baselines = tmp_path / "reports", tmp_path / "baselines"
    paused = Paused(
        stage,
        [
            "run",
            "-s",
            str(scenario),
            "--release",
            "r1",
            "--promote",
            "--report-dir",
            str(reports),
            "--baseline-dir",
            str(baselines),
        ],
    )
    try:
        paused.wait_for(f"PAUSED {stage}")
        family = _family(paused.proc.pid)
        commands = [cmd for _, _, cmd in family]
        for what in running:
            assert any(cmd.startswith(f"-m {what}") for cmd in commands), (what, family)
        paused.proc.send_signal(signum)
        code, err = paused.finish()
    finally:
        paused.kill()
    _no_traceback(err)
    assert code == 128 + signum, err
    _assert_no_orphans(family)
    folder = _run_folder(reports)
    assert set(os.listdir(folder)) == REPORT_FILES, "the partial report is complete, no temp file"
    result = json.loads((folder / "result.json").read_text())
    assert result["aborted"] is True
    assert result["abort_reason"] == f"interrupted by {signum.name}"
    assert result["verdict"] == "inconclusive"
    assert result["reasons"][0].startswith(f"run aborted (interrupted by {signum.name})")
    if stage in ("analysis", "report"):
        assert len(result["steps"]) == 1, "what was measured is kept"
    if stage == "ramp":
        assert len(result["steps"]) >= 1
    if stage == "provisioning":
        assert result["steps"] == []
    html = (folder / "index.html").read_text()
    assert "aborted" in html.lower()
    assert "ABORTED" in err and "not promoted" in err
    assert not list(baselines.rglob("*.json")), "an aborted run is never promoted"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_while_the_partial_report_is_written(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A second Ctrl-C stops the HTML render but keeps the data; a second SIGTERM is ignored."""
    scenario = tmp_path / "signals.yaml"
    scenario.write_text(SIGNAL_SCENARIO.replace("MAX", "2").replace("WORKERS", "1"))
    reports = tmp_path / "reports"
    stage = "report-twice" if signum == signal.SIGINT else "report"
    paused = Paused(
        stage,
        ["run", "-s", str(scenario), "--release", "r1", "--report-dir", str(reports),
         "--baseline-dir", str(tmp_path / "baselines")],
    )  # fmt: skip
    try:
        paused.wait_for(f"PAUSED {stage}")
        paused.proc.send_signal(signum)
        if signum == signal.SIGINT:
            paused.wait_for(f"PAUSED {stage}")  # rendering the aborted report now
        paused.proc.send_signal(signum)
        code, err = paused.finish()
    finally:
        paused.kill()
    _no_traceback(err)
    assert code == 128 + signum, err
    folder = _run_folder(reports)
    if signum == signal.SIGINT:
        # the impatient user loses only the HTML page: the data files say "aborted"
        assert set(os.listdir(folder)) == REPORT_FILES - {"index.html"}
    else:
        assert set(os.listdir(folder)) == REPORT_FILES
    result = json.loads((folder / "result.json").read_text())
    assert result["aborted"] is True and len(result["steps"]) == 1
    assert "aborted" in (folder / "summary.md").read_text().lower()


def test_a_bug_exits_70_with_its_traceback_and_stops_the_children(tmp_path: Path) -> None:
    scenario = tmp_path / "signals.yaml"
    scenario.write_text(SIGNAL_SCENARIO.replace("MAX", "4").replace("WORKERS", "1"))
    paused = Paused(
        "bug",
        ["run", "-s", str(scenario), "--release", "r1", "--report-dir", str(tmp_path / "reports"),
         "--baseline-dir", str(tmp_path / "baselines")],
    )  # fmt: skip
    try:
        paused.wait_for("PAUSED bug")
        family = _family(paused.proc.pid)
        assert len(family) == 2, family  # the exchange and the load engine
        code, err = paused.finish()
    finally:
        paused.kill()
    assert code == 70, err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: injected bug" in err
    assert err.rstrip().endswith("please report it with the traceback above")
    _assert_no_orphans(family)


def test_embedded_exchange_dying_mid_ramp_is_a_breach_and_is_reaped(tmp_path: Path) -> None:
    scenario = tmp_path / "signals.yaml"
    scenario.write_text(
        SIGNAL_SCENARIO.replace("MAX", "12")
        .replace("WORKERS", "1")
        .replace("users:\n", "users:\n  wait: 0.01  # see FAULT_SCENARIO\n")
        + "gate: {min_users: 10}\n"
    )
    reports = tmp_path / "reports"
    paused = Paused(
        "ramp",
        [
            "run",
            "-s",
            str(scenario),
            "--release",
            "r1",
            "--report-dir",
            str(reports),
            "--baseline-dir",
            str(tmp_path / "baselines"),
        ],
    )
    try:
        paused.wait_for("PAUSED ramp")
        family = _family(paused.proc.pid)
        (exchange,) = [pid for pid, _, cmd in family if cmd.startswith("-m perfgate.exchange")]
        os.kill(exchange, signal.SIGKILL)
        code, err = paused.finish()
    finally:
        paused.kill()
    _no_traceback(err)
    assert code == 1, err  # the floor of 10 users was not reached
    _assert_no_orphans(family)
    result = _result(reports)
    assert result["aborted"] is False and result["verdict"] == "block"
    broken = [s for s in result["steps"] if not s["slo_ok"]]
    assert broken and any("Connection refused" in m for m, _ in broken[0]["errors"])
    assert re.search(rf"reference exchange \(pid {exchange}\) had already exited", err)


# ---------------------------------------------------------------------------------------------
# Two --promote runs of one scenario at once: one baseline wins, neither is corrupted
# ---------------------------------------------------------------------------------------------


def test_two_promotions_at_once_one_wins_cleanly(tmp_path: Path) -> None:
    scenario = tmp_path / "race.yaml"
    scenario.write_text(
        FAULT_SCENARIO.replace("max_users: 10", "max_users: 4")
        .replace("gate: {min_users: 8}", "gate: {min_users: 2}")
        .replace("name: faults", "name: race")
    )
    baselines = tmp_path / "baselines"
    with faulty_target("0:ok") as target:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "perfgate",
                    "run",
                    "-s",
                    str(scenario),
                    "--target",
                    target.url,
                    "--release",
                    "r1",
                    "--promote",
                    "--report-dir",
                    str(tmp_path / f"reports{i}"),
                    "--baseline-dir",
                    str(baselines),
                ],
                cwd=ROOT,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outcomes = []
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            outcomes.append((proc.returncode, err))
    for _, err in outcomes:
        _no_traceback(err)
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    winner = next(i for i, (code, _) in enumerate(outcomes) if code == 0)
    _, won = outcomes[winner]
    _, lost = outcomes[1 - winner]
    stored = baselines / "race" / "r1.json"
    assert f"promoted as the baseline of r1: {stored}" in won
    last = lost.rstrip().splitlines()[-1]
    assert last.startswith("perfgate: error: ")
    assert f"baseline for release 'r1' already exists at {stored}" in last
    # Both started together, so both passed the early check: the lock decided, after the
    # loser's run and report were complete. Its verdict is shown, then the one-line error.
    assert last.startswith("perfgate: error: not promoted: "), lost
    assert "PASS" in lost
    loser = json.loads(next((tmp_path / f"reports{1 - winner}").rglob("result.json")).read_text())
    assert loser["verdict"] == "pass"
    b = baseline.load_baseline(stored, scenario="race")  # valid, complete JSON
    assert str(tmp_path / f"reports{winner}") in b.source
    assert sorted(p.name for p in stored.parent.iterdir()) == [".lock", "r1.json"]


# ---------------------------------------------------------------------------------------------
# A real file-size limit (RLIMIT_FSIZE): exit 3, one line, the existing baseline intact
# ---------------------------------------------------------------------------------------------


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as a full disk would.
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def test_file_size_limit_while_writing_the_report_exits_3(tmp_path: Path) -> None:
    scenario = tmp_path / "faults.yaml"
    scenario.write_text(FAULT_SCENARIO.replace("max_users: 10", "max_users: 4"))
    baselines = tmp_path / "baselines"
    old = load_result(ROOT / "tests" / "data" / "result_block.json")
    import dataclasses

    stored = baseline.store_baseline(
        dataclasses.replace(old, verdict="pass", scenario="faults", release="r0"), baselines
    )
    before = stored.read_bytes(), stored.stat().st_mtime_ns
    reports = tmp_path / "reports"
    with faulty_target("0:ok") as target:
        done = perfgate(
            "run",
            "-s",
            str(scenario),
            "--target",
            target.url,
            "--release",
            "r1",
            "--promote",
            "--report-dir",
            str(reports),
            "--baseline-dir",
            str(baselines),
            preexec_fn=_limit_file_size,
        )
    _no_traceback(done.err)
    assert done.code == 3, done.err
    last = done.err.rstrip().splitlines()[-1]
    assert re.fullmatch(rf"perfgate: error: cannot write {reports}/\S+: File too large", last), last
    assert (stored.read_bytes(), stored.stat().st_mtime_ns) == before
    assert sorted(p.name for p in stored.parent.iterdir()) == [".lock", "r0.json"]
    assert not [p for p in reports.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# Hostile request names and secrets, end to end
# ---------------------------------------------------------------------------------------------

TOKEN = "tok-Sup3rSecret-4711"
SHORT = "q9z"  # a ${VAR} value shorter than 4 characters is a secret too
URL_PASSWORD = "pw-Hidden-0815"
HOSTILE_NAMES = (
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "</svg><iframe src=javascript:alert(1)>",
)
SECRET_SCENARIO = f"""\
name: hostile
staging: {{provider: none}}
users:
  # short, harmless header values are data: redacting "1" used to turn numbers and the
  # release name r1 into *** (result.json unparseable, the baseline stored as r***.json)
  headers: {{Authorization: "Bearer ${{FI_TOKEN}}", Accept: application/json, X-Trace: "1"}}
  requests:
    - {{name: {json.dumps(HOSTILE_NAMES[0])}, method: GET, path: /work/a}}
    - {{name: {json.dumps(HOSTILE_NAMES[1])}, method: GET, path: /work/b}}
    - name: {json.dumps(HOSTILE_NAMES[2])}
      method: POST
      path: /work/c
      json: {{t: "${{FI_TOKEN}}"}}
    - {{method: GET, path: "/work/${{FI_TOKEN}}"}}
    - {{method: GET, path: "/work/s/${{FI_SHORT}}"}}
    - {{name: query, method: GET, path: /work/q, params: {{token: "${{FI_TOKEN}}"}}}}
ramp: {{start_users: 2, step_users: 2, max_users: 4, step_seconds: 1}}
slo: {{p95_ms: 200, error_rate: 0.5}}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostileRun:
    done: Done
    reports: Path
    baselines: Path
    target: RunningTarget


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    tmp = tmp_path_factory.mktemp("hostile")
    scenario = tmp / "hostile.yaml"
    scenario.write_text(SECRET_SCENARIO)
    reports, baselines = tmp / "reports", tmp / "baselines"
    # 5xx bursts, so error messages (a classic place for tokens to leak) are recorded too
    with faulty_target("0:burst", burst_s=0.1, period_s=1.0) as target:
        url = target.url.replace("http://", f"http://user:{URL_PASSWORD}@")
        done = perfgate(
            "run",
            "-s",
            str(scenario),
            "--target",
            url,
            "--release",
            "r1",
            "--promote",
            "--json",
            "--report-dir",
            str(reports),
            "--baseline-dir",
            str(baselines),
            env={"FI_TOKEN": TOKEN, "FI_SHORT": SHORT},
        )
        yield HostileRun(done=done, reports=reports, baselines=baselines, target=target)


def test_secrets_never_reach_results_reports_logs_or_baselines(hostile_run: HostileRun) -> None:
    done = hostile_run.done
    _no_traceback(done.err)
    assert done.code == 0, done.err
    result = json.loads(done.out)  # --json: stdout is result.json
    assert result["steps"] and result["steps"][0]["requests"] > 0
    outputs = {"stdout": done.out, "stderr": done.err}
    for folder in (hostile_run.reports, hostile_run.baselines):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files
        for path in files:
            outputs[str(path)] = path.read_text(errors="replace")
    assert any(p.endswith(".json") and "baselines" in p for p in outputs), "promoted"
    for where, text in outputs.items():
        for secret in (TOKEN, URL_PASSWORD, SHORT):
            assert secret not in text, f"{secret} leaked into {where}"
    names = [e["name"] for e in result["steps"][0]["endpoints"]]
    assert "GET /work/***" in names, "the default name built from a ${VAR} path is redacted"
    assert "GET /work/s/***" in names, "short secrets too"


def test_redaction_leaves_data_and_names_intact(hostile_run: HostileRun) -> None:
    """Only secrets are redacted, field by field: numbers, names and the baseline path stay."""
    result = json.loads(hostile_run.done.out)
    assert (result["scenario"], result["release"]) == ("hostile", "r1")
    assert isinstance(result["steps"][0]["users"], int) and result["steps"][0]["users"] == 2
    folder = _run_folder(hostile_run.reports)
    assert folder.parent == hostile_run.reports / "hostile" and folder.name.startswith("r1-")
    assert load_result(folder / "result.json").release == "r1"
    ET.fromstring((folder / "junit.xml").read_text())
    stored = baseline.load_baseline(hostile_run.baselines / "hostile" / "r1.json")
    assert stored.release == "r1", "stored under the real release, found by the next run"
    assert "1" in (folder / "steps.csv").read_text()


def test_a_secret_in_a_bad_scenario_is_not_quoted_in_the_error(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        SECRET_SCENARIO.replace('path: "/work/${FI_TOKEN}"', 'path: "${FI_TOKEN}/work"')
    )
    done = perfgate("validate", str(scenario), env={"FI_TOKEN": TOKEN})
    assert done.code == 2
    assert done.err.count("\n") == 1 and done.err.startswith(f"perfgate: error: {scenario}: ")
    assert "users.requests[3].path: '***/work'" in done.err
    assert TOKEN not in done.err + done.out


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def test_hostile_request_names_are_escaped_in_every_report(hostile_run: HostileRun) -> None:
    folder = _run_folder(hostile_run.reports)
    html = (folder / "index.html").read_text()
    parser = _Tags()
    parser.feed(html)
    tags = {tag for tag, _ in parser.tags}
    assert not tags & {"script", "iframe", "img", "object", "embed"}, tags
    handlers = [(t, a) for t, attrs in parser.tags for a, _ in attrs if a.startswith("on")]
    assert not handlers, handlers
    urls = [v for _, attrs in parser.tags for _, v in attrs if v and "javascript:" in v]
    assert not urls, urls
    assert "&lt;script&gt;alert(" in html
    for name in HOSTILE_NAMES:
        assert name not in html, f"{name!r} is in the HTML unescaped"
    summary = (folder / "summary.md").read_text()
    # plain-text Markdown: a tag-like '<' is backslash-escaped (literal text), never raw HTML
    assert not re.search(r"(?<!\\)<(script|img|iframe)", summary), "summary.md escapes HTML too"
    ET.fromstring((folder / "junit.xml").read_text())  # still well-formed XML
    data = json.loads((folder / "result.json").read_text())
    assert {e["name"] for e in data["steps"][0]["endpoints"]} >= set(HOSTILE_NAMES)


# ---------------------------------------------------------------------------------------------
# A locustfile that raises: a clear error (exit 2), nothing hidden as a verdict
# ---------------------------------------------------------------------------------------------

LOCUSTFILE_SCENARIO = """\
name: custom
staging: {provider: none}
users: {locustfile: custom.py}
ramp: {start_users: 2, step_users: 2, max_users: 4, step_seconds: 1}
slo: {p95_ms: 200}
"""

RAISES_AT_RUNTIME = """\
from locust import HttpUser, task


class Broken(HttpUser):
    @task
    def work(self):
        raise RuntimeError("boom in the task")
"""

RAISES_ON_IMPORT = 'raise ValueError("boom on import")\n'


@pytest.mark.parametrize("when", ["runtime", "import"])
def test_locustfile_that_raises_is_a_clear_error(tmp_path: Path, when: str) -> None:
    (tmp_path / "custom.py").write_text(
        RAISES_AT_RUNTIME if when == "runtime" else RAISES_ON_IMPORT
    )
    scenario = tmp_path / "custom.yaml"
    scenario.write_text(LOCUSTFILE_SCENARIO)
    reports = tmp_path / "reports"
    with faulty_target("0:ok") as target:
        done = perfgate(
            "run",
            "-s",
            str(scenario),
            "--target",
            target.url,
            "--release",
            "r1",
            "--report-dir",
            str(reports),
            "--baseline-dir",
            str(tmp_path / "baselines"),
        )
    _no_traceback(done.err)
    assert done.code == 2, done.err
    last = done.err.rstrip().splitlines()[-1]
    assert last.startswith("perfgate: error: ") and str(tmp_path / "custom.py") in last
    if when == "import":
        assert last.endswith("could not be loaded: ValueError: boom on import")
        assert not reports.exists(), "nothing was measured"
    else:
        assert "sent no request at any load level" in last
        assert "RuntimeError: boom in the task" in last
        result = _result(reports)
        assert result["aborted"] is True and result["verdict"] == "inconclusive"
