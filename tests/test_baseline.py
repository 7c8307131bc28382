"""Stored baselines: round trip, atomic locked writes, strict reading, history, fingerprints."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

import perfgate
from perfgate import baseline as bl
from perfgate.baseline import files as bl_files
from perfgate.errors import BaselineError, OutputError, ResultFileError
from perfgate.models import (
    RESULT_SCHEMA,
    EndpointStats,
    Fingerprint,
    GateSpec,
    GeneratorHealth,
    RampSpec,
    RunResult,
    Saturation,
    Scenario,
    Slo,
    StagingSpec,
    StepStats,
    UsersSpec,
    to_jsonable,
)

REPO = Path(perfgate.__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Fixtures built straight from perfgate.models
# ---------------------------------------------------------------------------------------------


def make_fp(**changes: object) -> Fingerprint:
    fp = Fingerprint(
        scenario_hash="a" * 64,
        slo="p95<=250ms errors<=0.01",
        perfgate_version="0.1.0",
        cpu_count=2,
        provider="embedded",
        target="embedded",
        python="3.11.7",
        machine="x86_64",
    )
    return dataclasses.replace(fp, **changes)  # type: ignore[arg-type]


def make_step(
    users: int, throughput_rps: float, p95_ms: float, *, slo_ok: bool = True
) -> StepStats:
    return StepStats(
        users=users,
        duration_s=10.0,
        requests=int(throughput_rps * 10),
        failures=0,
        throughput_rps=throughput_rps,
        p50_ms=p95_ms / 2,
        p95_ms=p95_ms,
        p99_ms=p95_ms * 1.3,
        error_rate=0.0,
        slo_ok=slo_ok,
        p95_ci_ms=(p95_ms * 0.9, p95_ms * 1.1),
        slo_reason="" if slo_ok else f"p95 {p95_ms:g} ms > SLO 250 ms",
        endpoints=(
            EndpointStats(
                name="order book <b>",
                method="GET",
                requests=int(throughput_rps * 5),
                failures=0,
                throughput_rps=throughput_rps / 2,
                p50_ms=p95_ms / 2,
                p95_ms=p95_ms,
                p99_ms=p95_ms * 1.2,
                mean_ms=p95_ms / 1.8,
                error_rate=0.0,
            ),
        ),
        generator=GeneratorHealth(
            cpu_percent=40.0, loop_lag_ms=1.5, little_ratio=0.98, limited=False
        ),
        errors=(("HTTPError 503", 2),),
        histogram={str(i): i * 10 for i in range(200)},
    )


def make_result(
    release: str = "v1",
    *,
    scenario: str = "exchange",
    verdict: str = "pass",
    users: float = 120.0,
    throughput_rps: float = 400.0,
    fp: Fingerprint | None = None,
    aborted: bool = False,
) -> RunResult:
    return RunResult(
        scenario=scenario,
        release=release,
        verdict=verdict,  # type: ignore[arg-type]
        reasons=("floor: 120 ≥ 100 users",),
        saturation=Saturation(
            users=users,
            throughput_rps=throughput_rps,
            broken=True,
            reason=f"p95 312 ms > SLO 250 ms at {users:g} users",
            bracket=(110, 130),
            users_ci=(users - 5, users + 5),
        ),
        baseline=None,
        steps=(
            make_step(50, 200.0, 60.0),
            make_step(100, throughput_rps, 180.0),
            make_step(150, throughput_rps * 1.02, 320.0, slo_ok=False),
        ),
        generator={"workers": 1},
        started_at="2024-05-01T12:00:00Z",
        finished_at="2024-05-01T12:03:00Z",
        perfgate_version="0.1.0",
        fingerprint=make_fp() if fp is None else fp,
        aborted=aborted,
        command="perfgate run --release " + release,
    )


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def write_baseline_file(baseline_dir: Path, result: RunResult, created_at: str) -> Path:
    """Store ``result`` and then pin its created_at (to build a history without sleeping)."""
    path = bl.store_baseline(result, baseline_dir)
    data = json.loads(path.read_text())
    data["created_at"] = created_at
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path


# ---------------------------------------------------------------------------------------------
# Round trip and file format
# ---------------------------------------------------------------------------------------------


def test_round_trip_keeps_saturation_steps_and_fingerprint(tmp_path: Path) -> None:
    result = make_result("v1.2.0")
    path = bl.store_baseline(result, tmp_path)

    assert path == tmp_path / "exchange" / "v1.2.0.json"
    stored = bl.load_baseline(path, scenario="exchange")
    assert stored.release == "v1.2.0"
    assert stored.scenario == "exchange"
    assert stored.saturation == result.saturation
    assert stored.fingerprint == result.fingerprint
    assert stored.slo == result.slo
    assert stored.verdict == "pass"
    assert stored.source == result.command
    assert stored.measured_at == result.finished_at
    assert stored.perfgate_version == perfgate.__version__
    assert stored.path == path
    # Steps come back whole except the raw histogram, which is dropped to keep files small.
    assert stored.steps == tuple(dataclasses.replace(s, histogram={}) for s in result.steps)
    assert stored.steps[0].endpoints[0].name == "order book <b>"
    assert stored.steps[0].p95_ci_ms == (54.0, 66.0)
    created = datetime.fromisoformat(stored.created_at)
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    ref = stored.ref()
    assert (ref.release, ref.saturation, ref.path) == ("v1.2.0", result.saturation, str(path))
    assert ref.fingerprint == result.fingerprint and ref.created_at == stored.created_at


def test_file_is_schema_versioned_and_reviewable(tmp_path: Path) -> None:
    path = bl.store_baseline(make_result("v1"), tmp_path)
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)

    assert data["kind"] == "perfgate-baseline" and data["schema"] == 1
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert all("histogram" not in step for step in data["steps"])
    assert {"saturation", "fingerprint", "steps", "release", "scenario", "created_at"} <= set(data)
    assert len(text) < 20_000  # three steps stay a few KB
    umask = os.umask(0)
    os.umask(umask)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask)  # not mkstemp's 0600


def test_infinite_numbers_are_stored_as_null(tmp_path: Path) -> None:
    result = make_result("v1")
    result = dataclasses.replace(
        result, saturation=dataclasses.replace(result.saturation, throughput_rps=float("inf"))
    )
    stored = bl.load_baseline(bl.store_baseline(result, tmp_path))
    assert stored.saturation.throughput_rps is None


def test_file_without_optional_keys_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(
        json.dumps(
            {
                "kind": "perfgate-baseline",
                "schema": 1,
                "scenario": "exchange",
                "release": "v0",
                "created_at": "2024-01-01T00:00:00Z",
                "saturation": {"users": 90, "throughput_rps": 300, "broken": True, "reason": "x"},
                "steps": [],
                "a_key_from_a_newer_minor_writer": 1,
            }
        )
    )
    stored = bl.load_baseline(path)
    assert stored.fingerprint is None and stored.steps == () and stored.saturation.users == 90.0


# ---------------------------------------------------------------------------------------------
# Never overwrite silently; only passing runs
# ---------------------------------------------------------------------------------------------


def test_existing_baseline_is_not_overwritten_without_force(tmp_path: Path) -> None:
    path = bl.store_baseline(make_result("v1", users=120), tmp_path)
    before = path.read_bytes()

    with pytest.raises(BaselineError, match=r"release 'v1' already exists .*--force") as info:
        bl.store_baseline(make_result("v1", users=999), tmp_path)

    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert files_in(path.parent) == [".lock", "v1.json"]


def test_check_can_store_refuses_early(tmp_path: Path) -> None:
    assert bl.check_can_store(tmp_path, "exchange", "v1") == tmp_path / "exchange" / "v1.json"
    path = bl.store_baseline(make_result("v1"), tmp_path)
    with pytest.raises(BaselineError, match=r"release 'v1' already exists .*--force"):
        bl.check_can_store(tmp_path, "exchange", "v1")
    assert bl.check_can_store(tmp_path, "exchange", "v1", force=True) == path
    with pytest.raises(BaselineError, match="release name"):
        bl.check_can_store(tmp_path, "exchange", "../v1")


def test_force_overwrites(tmp_path: Path) -> None:
    bl.store_baseline(make_result("v1", users=120), tmp_path)
    path = bl.store_baseline(make_result("v1", users=150), tmp_path, force=True)
    assert bl.load_baseline(path).saturation.users == 150.0
    assert files_in(path.parent) == [".lock", "v1.json"]


@pytest.mark.parametrize(
    ("verdict", "aborted", "message"),
    [
        ("block", False, "verdict is block; only a passing run"),
        ("inconclusive", False, "verdict is inconclusive"),
        ("pass", True, "aborted"),
    ],
)
def test_only_complete_passing_runs_are_stored(
    tmp_path: Path, verdict: str, aborted: bool, message: str
) -> None:
    with pytest.raises(BaselineError, match=message):
        bl.store_baseline(make_result("v1", verdict=verdict, aborted=aborted), tmp_path)
    assert not (tmp_path / "exchange").exists()


# ---------------------------------------------------------------------------------------------
# Atomicity: a failure at any point leaves the old file and no temp file
# ---------------------------------------------------------------------------------------------


def _fail_replace(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_rename_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = bl.store_baseline(make_result("v1", users=120), tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", _fail_replace)

    with pytest.raises(OutputError, match="No space left on device") as info:
        bl.store_baseline(make_result("v1", users=150), tmp_path, force=True)

    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert files_in(path.parent) == [".lock", "v1.json"]


def test_disk_full_mid_write_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = bl.store_baseline(make_result("v1", users=120), tmp_path)
    before = path.read_bytes()
    real_write = os.write
    calls = []

    def short_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:100]))  # a short write, as a filling disk does
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OutputError, match=r"cannot write baseline .*No space left"):
        bl.store_baseline(make_result("v1", users=150), tmp_path, force=True)

    assert len(calls) == 2
    assert path.read_bytes() == before
    assert files_in(path.parent) == [".lock", "v1.json"]


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _fail_replace)
    with pytest.raises(OutputError):
        bl.store_baseline(make_result("v1"), tmp_path)
    assert files_in(tmp_path / "exchange") == [".lock"]
    assert bl.list_baselines(tmp_path, "exchange") == ()


def test_real_file_size_limit_keeps_old_file(tmp_path: Path) -> None:
    """A real short write (RLIMIT_FSIZE → EFBIG) in a child process, no mocks."""
    path = bl.store_baseline(make_result("v1", users=120), tmp_path)
    before = path.read_bytes()
    result_json = tmp_path / "run" / "result.json"
    result_json.parent.mkdir()
    result_json.write_text(json.dumps(to_jsonable(make_result("v1", users=150))))
    script = f"""
        import resource, signal, sys
        from pathlib import Path
        from perfgate import baseline
        from perfgate.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
        try:
            baseline.promote(Path({str(result_json)!r}), Path({str(tmp_path)!r}), force=True)
        except OutputError as exc:
            print(exc)
            sys.exit(3)
    """
    proc = _python(script)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 3, err
    assert f"cannot write baseline {path}" in out and "too large" in out.lower()
    assert path.read_bytes() == before
    assert files_in(path.parent) == [".lock", "v1.json"]


def test_unwritable_baseline_dir_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the baseline folder should be")
    with pytest.raises(OutputError, match=r"cannot create baseline folder .*not-a-dir"):
        bl.store_baseline(make_result("v1"), blocker)
    assert blocker.read_text() == "a file where the baseline folder should be"


# ---------------------------------------------------------------------------------------------
# Bad files: one-line BaselineError naming the file, file untouched
# ---------------------------------------------------------------------------------------------


def _valid_doc() -> dict[str, object]:
    return {
        "kind": "perfgate-baseline",
        "schema": 1,
        "scenario": "exchange",
        "release": "v1",
        "created_at": "2024-01-01T00:00:00Z",
        "saturation": {"users": 90, "throughput_rps": 300, "broken": True, "reason": "x"},
        "steps": [],
    }


def _with(**changes: object) -> bytes:
    doc = _valid_doc()
    for key, value in changes.items():
        if value is _DROP:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


_DROP = object()

BAD_FILES = {
    "empty": (b"", "not valid JSON"),
    "truncated": (_with()[:40], "not valid JSON (line 1"),
    "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
    "nan": (b'{"kind": NaN}', "NaN is not valid JSON"),
    "array": (b"[1, 2]", "not a JSON object (found an array)"),
    "foreign": (b'{"name": "some other tool", "version": 3}', "not a perfgate baseline"),
    "wrong kind": (_with(kind="perfgate-result"), "kind 'perfgate-result'"),
    "result.json": (
        json.dumps({"schema": 1, "verdict": "pass", "steps": []}).encode(),
        "looks like a result.json",
    ),
    "newer schema": (_with(schema=2), "written by a newer perfgate (schema 2)"),
    "schema string": (_with(schema="1"), "key 'schema': expected a positive integer"),
    "missing saturation": (_with(saturation=_DROP), "missing key 'saturation'"),
    "missing release": (_with(release=_DROP), "missing key 'release'"),
    "saturation type": (_with(saturation="fast"), "key 'saturation': expected an object"),
    "steps type": (_with(steps={"users": 1}), "key 'steps': expected a list"),
    "step field type": (
        _with(steps=[dataclasses.asdict(make_step(10, 1.0, 1.0)) | {"users": "ten"}]),
        "key 'steps': [0].users: expected an integer",
    ),
    "release type": (_with(release=5), "key 'release': expected a string"),
    "empty release": (_with(release=""), "key 'release' is empty"),
    "bad date": (_with(created_at="yesterday"), "not an ISO-8601 time"),
    "fingerprint type": (_with(fingerprint=[1]), "key 'fingerprint'"),
    "wrong scenario": (_with(scenario="checkout"), "scenario 'checkout', not 'exchange'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_refused_and_left_untouched(tmp_path: Path, case: str) -> None:
    content, message = BAD_FILES[case]
    path = tmp_path / "exchange" / "v1.json"
    path.parent.mkdir()
    path.write_bytes(content)
    mtime = path.stat().st_mtime_ns

    with pytest.raises(BaselineError) as info:
        bl.load_baseline(path, scenario="exchange")

    text = str(info.value)
    assert message in text
    assert text.startswith(f"baseline {path}: ") and "\n" not in text
    assert isinstance(info.value, perfgate.PerfgateError) and info.value.exit_code == 2
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == mtime

    # The gate reads through previous_baseline: it must refuse too, not skip the file.
    with pytest.raises(BaselineError) as again:
        bl.previous_baseline(tmp_path, "exchange", "v2")
    assert str(again.value) == text
    assert path.read_bytes() == content


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="file not found"):
        bl.load_baseline(tmp_path / "nope.json")
    with pytest.raises(BaselineError, match="is a directory"):
        bl.load_baseline(tmp_path)


def test_existing_corrupt_file_is_not_replaced_without_force(tmp_path: Path) -> None:
    path = tmp_path / "exchange" / "v1.json"
    path.parent.mkdir()
    path.write_bytes(b"{half a file")
    with pytest.raises(BaselineError, match="already exists"):
        bl.store_baseline(make_result("v1"), tmp_path)
    assert path.read_bytes() == b"{half a file"


# ---------------------------------------------------------------------------------------------
# History: list, scan, previous
# ---------------------------------------------------------------------------------------------


def test_list_is_oldest_first_and_previous_is_newest_other_release(tmp_path: Path) -> None:
    write_baseline_file(tmp_path, make_result("v2", users=200), "2024-03-01T00:00:00Z")
    write_baseline_file(tmp_path, make_result("v10", users=300), "2024-05-01T00:00:00+00:00")
    write_baseline_file(tmp_path, make_result("v1", users=100), "2024-01-01T00:00:00Z")
    write_baseline_file(tmp_path, make_result("v3", scenario="other"), "2024-06-01T00:00:00Z")

    history = bl.list_baselines(tmp_path, "exchange")
    assert [b.release for b in history] == ["v1", "v2", "v10"]

    assert bl.previous_baseline(tmp_path, "exchange", "v11").release == "v10"  # type: ignore[union-attr]
    # Re-running the newest release compares against the one before it, not itself.
    assert bl.previous_baseline(tmp_path, "exchange", "v10").release == "v2"  # type: ignore[union-attr]
    assert bl.previous_baseline(tmp_path, "other", "v3") is None
    assert bl.previous_baseline(tmp_path, "never-run", "v1") is None
    assert bl.list_baselines(tmp_path / "missing", "exchange") == ()


def test_equal_created_at_falls_back_to_mtime(tmp_path: Path) -> None:
    older = write_baseline_file(tmp_path, make_result("b"), "2024-01-01T00:00:00Z")
    newer = write_baseline_file(tmp_path, make_result("a"), "2024-01-01T00:00:00Z")
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    os.utime(newer, ns=(2_000_000_000, 2_000_000_000))
    assert [b.release for b in bl.list_baselines(tmp_path, "exchange")] == ["b", "a"]


def test_real_promotions_order_by_store_time(tmp_path: Path) -> None:
    bl.store_baseline(make_result("rc-b"), tmp_path)
    bl.store_baseline(make_result("rc-a"), tmp_path)
    assert bl.previous_baseline(tmp_path, "exchange", "rc-c").release == "rc-a"  # type: ignore[union-attr]


def test_scan_reports_problems_that_list_raises(tmp_path: Path) -> None:
    bl.store_baseline(make_result("v1"), tmp_path)
    broken = tmp_path / "exchange" / "v0.json"
    broken.write_bytes(b"not json")
    (tmp_path / "exchange" / "notes.txt").write_text("ignored: not a .json file")

    scan = bl.scan_baselines(tmp_path, "exchange")
    assert [b.release for b in scan.baselines] == ["v1"]
    assert [p for p, _ in scan.problems] == [broken]
    with pytest.raises(BaselineError, match=str(broken)):
        bl.list_baselines(tmp_path, "exchange")

    text = bl.format_list(scan.baselines, problems=scan.problems)
    assert "v1" in text and f"unreadable: baseline {broken}" in text
    assert broken.read_bytes() == b"not json"


# ---------------------------------------------------------------------------------------------
# Names: sanitised, traversal refused
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "file_name"),
    [("v1.2.3", "v1.2.3.json"), ("feature/x", "feature_x.json"), ("1.0 rc1+b7", "1.0_rc1+b7.json")],
)
def test_release_names_are_sanitised(tmp_path: Path, release: str, file_name: str) -> None:
    path = bl.baseline_path(tmp_path, "exchange", release)
    assert path == tmp_path / "exchange" / file_name
    stored = bl.load_baseline(bl.store_baseline(make_result(release), tmp_path))
    assert stored.release == release  # the file keeps the real name


@pytest.mark.parametrize(
    "release", ["../../etc", "..", ".", ".hidden", "a/../b", "..\\..\\x", "", "  ", "x" * 101]
)
def test_unsafe_release_names_are_refused(tmp_path: Path, release: str) -> None:
    with pytest.raises(BaselineError, match="release name"):
        bl.baseline_path(tmp_path / "baselines", "exchange", release)
    with pytest.raises(BaselineError, match="release name"):
        bl.store_baseline(make_result(release), tmp_path / "baselines")
    assert files_in(tmp_path) == []


def test_unsafe_scenario_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"scenario name '\.\./x'"):
        bl.baseline_path(tmp_path, "../x", "v1")
    with pytest.raises(BaselineError, match="scenario name"):
        bl.list_baselines(tmp_path, "..")


# ---------------------------------------------------------------------------------------------
# Concurrency: real processes, a real lock
# ---------------------------------------------------------------------------------------------


def _python(script: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


PROMOTER = """
    import os, sys, time
    from pathlib import Path
    from perfgate import baseline
    from perfgate.errors import BaselineError

    real_fsync = os.fsync
    def slow_fsync(fd):
        time.sleep(0.4)  # widen the write window: without the lock both would pass the check
        real_fsync(fd)
    os.fsync = slow_fsync

    go = Path({go!r})
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    try:
        path = baseline.promote(Path({result!r}), Path({dir!r}), force={force!r})
    except BaselineError as exc:
        print("refused", exc, flush=True)
        sys.exit(2)
    print("stored", path, flush=True)
"""


def _race(tmp_path: Path, *, force: bool) -> list[tuple[int, str]]:
    result_json = tmp_path / "run" / "result.json"
    result_json.parent.mkdir(exist_ok=True)
    result_json.write_text(json.dumps(to_jsonable(make_result("v7"))))
    go = tmp_path / f"go-{force}"
    script = PROMOTER.format(
        go=str(go), result=str(result_json), dir=str(tmp_path / "b"), force=force
    )
    procs = [_python(script) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        outcomes = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert not err, err
            outcomes.append((proc.returncode, out.strip()))
        return outcomes
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_concurrent_promotions_one_wins(tmp_path: Path) -> None:
    outcomes = sorted(_race(tmp_path, force=False))
    path = tmp_path / "b" / "exchange" / "v7.json"

    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert outcomes[0][1] == f"stored {path}"
    assert "release 'v7' already exists" in outcomes[1][1]
    assert "--force" in outcomes[1][1]
    assert bl.load_baseline(path).release == "v7"
    assert files_in(path.parent) == [".lock", "v7.json"]

    # The lock left no state behind that blocks the next promotion.
    started = time.monotonic()
    bl.store_baseline(make_result("v8"), tmp_path / "b")
    bl.store_baseline(make_result("v7", users=1), tmp_path / "b", force=True)
    assert time.monotonic() - started < 2
    assert bl.load_baseline(path).saturation.users == 1.0


def test_two_concurrent_forced_promotions_leave_one_valid_file(tmp_path: Path) -> None:
    outcomes = _race(tmp_path, force=True)
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    path = tmp_path / "b" / "exchange" / "v7.json"
    assert bl.load_baseline(path).release == "v7"
    assert files_in(path.parent) == [".lock", "v7.json"]


HOLDER = """
    import sys, time
    import filelock
    lock = filelock.FileLock({lock!r})
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold_lock(lock_file: Path) -> subprocess.Popen[str]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    proc = _python(HOLDER.format(lock=str(lock_file)))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_of_a_killed_process_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bl_files, "LOCK_TIMEOUT_S", 5.0)
    proc = _hold_lock(tmp_path / "exchange" / ".lock")
    proc.kill()  # SIGKILL: no chance to release; the kernel drops the flock
    proc.communicate(timeout=10)

    started = time.monotonic()
    path = bl.store_baseline(make_result("v1"), tmp_path)
    assert time.monotonic() - started < 2
    assert bl.load_baseline(path).release == "v1"


def test_lock_held_by_a_live_process_times_out_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bl_files, "LOCK_TIMEOUT_S", 0.3)
    proc = _hold_lock(tmp_path / "exchange" / ".lock")
    try:
        with pytest.raises(OutputError, match=r"cannot lock .*\.lock within 0.3 s"):
            bl.store_baseline(make_result("v1"), tmp_path)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert files_in(tmp_path / "exchange") == [".lock"]


# ---------------------------------------------------------------------------------------------
# promote RESULT_JSON
# ---------------------------------------------------------------------------------------------


def test_promote_stores_a_saved_passing_result(tmp_path: Path) -> None:
    run_dir = tmp_path / "reports" / "exchange-v3"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(to_jsonable(make_result("v3"))))

    path = bl.promote(run_dir / "result.json", tmp_path / "baselines")

    stored = bl.load_baseline(path, scenario="exchange")
    assert stored.release == "v3" and stored.source == str(run_dir.resolve())
    with pytest.raises(BaselineError, match="already exists"):
        bl.promote(run_dir / "result.json", tmp_path / "baselines")
    assert bl.promote(run_dir / "result.json", tmp_path / "baselines", force=True) == path


def test_promote_refuses_a_blocked_result(tmp_path: Path) -> None:
    result_json = tmp_path / "result.json"
    result_json.write_text(json.dumps(to_jsonable(make_result("v3", verdict="block"))))
    with pytest.raises(BaselineError, match="verdict is block"):
        bl.promote(result_json, tmp_path / "baselines")
    assert not (tmp_path / "baselines").exists()


def _result_doc(**changes: object) -> bytes:
    doc = to_jsonable(make_result("v3"))
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"<html>", "not valid JSON"),
        (b'"just a string"', "not a JSON object"),
        (_result_doc(schema=RESULT_SCHEMA + 1), r"written by a newer perfgate \(schema 2\)"),
        (_result_doc(saturation=[]), "key 'saturation': expected an object"),
        (_result_doc(verdict="maybe"), "key 'verdict'"),
        (json.dumps({"schema": 1, "scenario": "x"}).encode(), "missing key 'release'"),
    ],
)
def test_promote_bad_result_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    result_json = tmp_path / "result.json"
    if content is not None:
        result_json.write_bytes(content)
    with pytest.raises(ResultFileError, match=message) as info:
        bl.promote(result_json, tmp_path / "baselines")
    assert str(result_json) in str(info.value) and info.value.exit_code == 2
    if content is not None:
        assert result_json.read_bytes() == content
    assert not (tmp_path / "baselines").exists()


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


def make_scenario(**slo: float) -> Scenario:
    return Scenario(
        name="exchange",
        path="",
        content_hash="f" * 64,
        staging=StagingSpec(),
        users=UsersSpec(),
        ramp=RampSpec(),
        slo=Slo(**slo),
        gate=GateSpec(),
    )


def test_fingerprint_records_the_environment() -> None:
    fp = bl.fingerprint(
        make_scenario(p95_ms=250, error_rate=0.01),
        provider="embedded",
        target="http://127.0.0.1:41234",
    )
    assert fp.scenario_hash == "f" * 64
    assert fp.slo == "p95<=250ms errors<=0.01"
    assert fp.perfgate_version == perfgate.__version__
    assert fp.cpu_count == len(os.sched_getaffinity(0))
    assert (fp.provider, fp.target) == ("embedded", "embedded")  # the free port must not matter
    assert fp.python == ".".join(map(str, sys.version_info[:3]))
    assert fp.machine and fp.machine == os.uname().machine


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        (
            "https://user:s3cret@staging.example.com:8443/api?token=abc#x",
            "https://staging.example.com",
        ),
        ("http://localhost:8080", "http://loopback"),
        ("http://127.0.0.1:1234/", "http://loopback"),
        ("http://[::1]:80", "http://loopback"),
        ("", ""),
        ("not a url", "url"),
    ],
)
def test_fingerprint_target_is_a_kind_without_secrets(target: str, kind: str) -> None:
    fp = bl.fingerprint(make_scenario(), provider="none", target=target)
    assert fp.target == kind
    assert "s3cret" not in repr(fp) and "abc" not in repr(fp)


def test_fingerprint_slo_follows_the_scenario() -> None:
    a = bl.fingerprint(make_scenario(p95_ms=250), provider="none", target="")
    b = bl.fingerprint(make_scenario(p95_ms=300), provider="none", target="")
    assert bl.comparability(a, b) == (
        False,
        "not comparable: SLO p95<=250ms errors<=0.01 → p95<=300ms errors<=0.01",
    )


@pytest.mark.parametrize(
    ("changes", "comparable", "mentions"),
    [
        ({}, True, ""),
        ({"perfgate_version": "0.1.7"}, True, "perfgate 0.1.0 → 0.1.7"),
        ({"python": "3.12.1"}, True, "python 3.11.7 → 3.12.1"),
        ({"target": "http://loopback"}, True, "target embedded → http://loopback"),
        ({"scenario_hash": "b" * 64}, False, "scenario changed (hash aaaaaaaaaaaa → bbbbbbbbbbbb)"),
        ({"slo": "p95<=300ms errors<=0.01"}, False, "SLO"),
        ({"cpu_count": 8}, False, "cpu_count 2 → 8"),
        ({"provider": "kubernetes"}, False, "provider embedded → kubernetes"),
        ({"machine": "aarch64"}, False, "machine x86_64 → aarch64"),
        ({"perfgate_version": "0.2.0"}, False, "perfgate 0.1.0 → 0.2.0"),
        ({"cpu_count": 4, "python": "3.12.0"}, False, "python 3.11.7 → 3.12.0"),
    ],
)
def test_comparability_rules(changes: dict[str, object], comparable: bool, mentions: str) -> None:
    ok, note = bl.comparability(make_fp(), make_fp(**changes))
    assert ok is comparable
    assert mentions in note
    if not changes:
        assert note == ""
    elif comparable:
        assert note.startswith("comparable; differs in ")
    else:
        assert note.startswith("not comparable: ")


def test_missing_fingerprint_is_comparable_with_a_note() -> None:
    assert bl.comparability(None, make_fp()) == (
        True,
        "no fingerprint recorded for the first: environment not checked",
    )
    assert bl.comparability(make_fp(), None)[0] is True
    assert "either" in bl.comparability(None, None)[1]


def test_fingerprint_id_is_short_and_changes_with_the_environment() -> None:
    assert len(bl.fingerprint_id(make_fp())) == 8
    assert bl.fingerprint_id(make_fp()) == bl.fingerprint_id(make_fp())
    assert bl.fingerprint_id(make_fp()) != bl.fingerprint_id(make_fp(cpu_count=4))
    assert bl.fingerprint_id(None) == "-"


# ---------------------------------------------------------------------------------------------
# diff and the CLI text
# ---------------------------------------------------------------------------------------------


def test_diff_reports_saturation_change_and_common_steps(tmp_path: Path) -> None:
    a = bl.load_baseline(
        bl.store_baseline(make_result("v1", users=100, throughput_rps=400), tmp_path)
    )
    b_result = make_result("v2", users=125, throughput_rps=300, fp=make_fp(cpu_count=4))
    b_result = dataclasses.replace(
        b_result, steps=(*b_result.steps[1:], make_step(200, 310.0, 900.0))
    )
    b = bl.load_baseline(bl.store_baseline(b_result, tmp_path))

    d = bl.diff(a, b)

    assert (d.users_a, d.users_b, d.users_delta, d.users_pct) == (100.0, 125.0, 25.0, 25.0)
    assert (d.throughput_delta_rps, d.throughput_pct) == (-100.0, -25.0)
    assert d.comparable is False and "cpu_count 2 → 4" in d.note
    assert [s.users for s in d.steps] == [100, 150]  # 50 only in A, 200 only in B
    assert d.steps[0].throughput_pct == pytest.approx(-25.0)
    assert d.steps[0].p95_pct == pytest.approx(0.0)

    text = bl.format_diff(d)
    assert "v1 → v2" in text
    # numbers as perfgate.fmt writes them everywhere (the report shows the same figures)
    assert "saturation users  100 → 125  (+25, +25.0 %)" in text
    assert "throughput req/s  400 → 300  (-100, -25.0 %)" in text
    assert "environment       not comparable: cpu_count 2 → 4" in text
    assert "-25.0 %" in text.splitlines()[-2]


def test_diff_of_other_scenarios_is_not_comparable(tmp_path: Path) -> None:
    a = bl.load_baseline(bl.store_baseline(make_result("v1"), tmp_path))
    b = bl.load_baseline(bl.store_baseline(make_result("v1", scenario="checkout"), tmp_path))
    d = bl.diff(a, b)
    assert (
        d.comparable is False
        and d.note == "not comparable: different scenarios 'exchange' → 'checkout'"
    )


def test_format_list_and_show(tmp_path: Path) -> None:
    write_baseline_file(
        tmp_path, make_result("v1", users=114.25, throughput_rps=388.5), "2024-02-03T04:05:06Z"
    )
    censored = make_result("v2", users=600)
    censored = dataclasses.replace(
        censored,
        saturation=dataclasses.replace(censored.saturation, broken=False, censored="above_max"),
    )
    write_baseline_file(tmp_path, censored, "2024-03-03T04:05:06Z")
    history = bl.list_baselines(tmp_path, "exchange")

    table = bl.format_list(history).splitlines()
    assert table[0].split() == ["release", "users", "req/s", "stored", "(UTC)", "fingerprint"]
    assert table[2].split() == [
        "v1",
        "114.2",
        "388",  # fmt.rps: no decimals from 100 req/s up
        "2024-02-03",
        "04:05",
        bl.fingerprint_id(make_fp()),
    ]
    assert table[3].split()[:3] == ["v2", "≥", "600"]  # fmt.saturation_users: never broke
    assert bl.format_list(()) == "no baselines stored"

    shown = bl.format_show(history[0])
    assert "exchange / v1" in shown and str(history[0].path) in shown
    assert "114.2 users at 388 req/s (bracket 110-130 users)" in shown
    assert "p95 312 ms > SLO 250 ms" in shown
    assert "2 CPUs" in shown and "provider embedded" in shown
    assert any(
        line.split()[:2] == ["150", "396"] and line.endswith("broken")
        for line in shown.splitlines()
    )


def test_resolve_baseline_by_release_or_path(tmp_path: Path) -> None:
    path = bl.store_baseline(make_result("v1"), tmp_path)
    assert bl.resolve_baseline(tmp_path, "exchange", "v1").path == path
    assert bl.resolve_baseline(tmp_path, "ignored", str(path)).release == "v1"
    with pytest.raises(BaselineError, match=r"no baseline for release 'v9' .*\(stored: v1\)"):
        bl.resolve_baseline(tmp_path, "exchange", "v9")


def test_the_calibrated_noise_model_beside_the_baselines_is_not_a_baseline(tmp_path: Path) -> None:
    """`perfgate calibrate` stores noise.json in the scenario's baseline folder."""
    from perfgate import baseline as bl
    from perfgate.calibration import estimate, save_noise
    from perfgate.models import Saturation

    runs = [
        Saturation(
            users=u, throughput_rps=r, broken=True, reason="", bracket=(int(u) - 5, int(u) + 5)
        )
        for u, r in ((100, 1000.0), (102, 1010.0), (99, 990.0))
    ]
    save_noise(estimate(runs, scenario="shop"), tmp_path, "shop")
    assert (tmp_path / "shop" / "noise.json").is_file()
    assert bl.list_baselines(tmp_path, "shop") == ()
    assert bl.previous_baseline(tmp_path, "shop", "v2") is None
    with pytest.raises(bl.BaselineError, match="reserved"):
        bl.baseline_path(tmp_path, "shop", "noise")
