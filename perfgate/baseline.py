"""Stored baselines: one reviewable JSON file per scenario and release, written atomically.

Layout: ``<baseline dir>/<scenario>/<release>.json`` (see ``baselines/README.md``). A baseline is
a passing run's saturation point, its steps (without the raw latency histograms) and the
environment fingerprint it was measured in. Files are written under a cross-process lock
(``<baseline dir>/<scenario>/.lock``) to a temp file in the same folder, fsynced and renamed over
the target, so a reader never sees half a file and two concurrent promotions cannot both win.
Reading never modifies a file; every defect is a one-line :class:`BaselineError` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import tempfile
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import filelock

from perfgate._version import __version__
from perfgate.errors import BaselineError, OutputError, ResultFileError
from perfgate.models import (
    BASELINE_SCHEMA,
    RESULT_SCHEMA,
    BaselineRef,
    Fingerprint,
    RunResult,
    Saturation,
    Scenario,
    Slo,
    StepStats,
    from_jsonable,
    to_jsonable,
)

__all__ = [
    "BASELINE_KIND",
    "BaselineDiff",
    "BaselineScan",
    "StepDiff",
    "StoredBaseline",
    "baseline_path",
    "check_can_store",
    "comparability",
    "diff",
    "fingerprint",
    "fingerprint_id",
    "format_diff",
    "format_list",
    "format_show",
    "list_baselines",
    "load_baseline",
    "previous_baseline",
    "promote",
    "read_result",
    "resolve_baseline",
    "scan_baselines",
    "store_baseline",
]

BASELINE_KIND = "perfgate-baseline"
LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 30.0  # a promotion holds the lock for milliseconds; 30 s means a stuck holder
MAX_FILE_BYTES = 64 * 1024 * 1024  # refuse to parse anything this big: no baseline is
MAX_NAME_CHARS = 100

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(**_FROZEN)
class StoredBaseline:
    """One stored baseline file, as read from (or written to) ``path``."""

    schema: int
    scenario: str
    release: str
    created_at: str  # UTC ISO-8601: when it was stored (promotion time orders the history)
    path: Path
    saturation: Saturation
    fingerprint: Fingerprint | None
    steps: tuple[StepStats, ...]
    verdict: str = "pass"
    source: str = ""  # the run folder or command it came from
    perfgate_version: str = ""
    measured_at: str = ""  # the run's finished_at
    slo: Slo | None = None
    replicates: tuple[Saturation, ...] = ()

    def ref(self) -> BaselineRef:
        """The reference a RunResult carries to this baseline."""
        return BaselineRef(
            release=self.release,
            saturation=self.saturation,
            created_at=self.created_at,
            path=str(self.path),
            fingerprint=self.fingerprint,
        )


@dataclass(**_FROZEN)
class BaselineScan:
    """Every readable baseline of a scenario, oldest first, and the files that could not be read."""

    baselines: tuple[StoredBaseline, ...]
    problems: tuple[tuple[Path, str], ...] = ()  # (file, one-line error)


@dataclass(**_FROZEN)
class StepDiff:
    """Two baselines at one common user level (B relative to A)."""

    users: int
    throughput_a_rps: float
    throughput_b_rps: float
    throughput_pct: float | None
    p95_a_ms: float | None
    p95_b_ms: float | None
    p95_pct: float | None
    error_rate_a: float
    error_rate_b: float
    slo_ok_a: bool
    slo_ok_b: bool


@dataclass(**_FROZEN)
class BaselineDiff:
    """How baseline B differs from baseline A."""

    a: BaselineRef
    b: BaselineRef
    users_a: float | None
    users_b: float | None
    users_delta: float | None
    users_pct: float | None
    throughput_a_rps: float | None
    throughput_b_rps: float | None
    throughput_delta_rps: float | None
    throughput_pct: float | None
    slo_a: str
    slo_b: str
    comparable: bool
    note: str  # what differs between the fingerprints ("" when identical)
    steps: tuple[StepDiff, ...] = ()
    scenario_a: str = ""
    scenario_b: str = ""


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


def slo_text(slo: Slo) -> str:
    """The SLO as the short string fingerprints compare."""
    return f"p95<={slo.p95_ms:g}ms errors<={slo.error_rate:g}"


def fingerprint(scenario: Scenario, *, provider: str, target: str) -> Fingerprint:
    """The environment a run is measured in, without secrets (no URL credentials, path or query)."""
    return Fingerprint(
        scenario_hash=scenario.content_hash,
        slo=slo_text(scenario.slo),
        perfgate_version=__version__,
        cpu_count=_cpu_count(),
        provider=provider,
        target=_target_kind(provider, target),
        python=platform.python_version(),
        machine=platform.machine(),
    )


def _cpu_count() -> int:
    # The cores this process may use (cgroup cpusets), not the host's.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _target_kind(provider: str, target: str) -> str:
    """``embedded``/``kubernetes``, or ``scheme://host`` of a URL (loopback folded to one name)."""
    if provider in ("embedded", "kubernetes"):
        # Their URLs change every run (free port, fresh namespace): the kind is what matters.
        return provider
    if not target:
        return ""
    try:
        parts = urlsplit(target)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "url"
    if not host:
        return "url"
    if host in _LOOPBACK_HOSTS or host.startswith("127."):
        host = "loopback"
    return f"{parts.scheme or 'http'}://{host}"


def fingerprint_id(fp: Fingerprint | None) -> str:
    """A short hash of a fingerprint, to spot at a glance which baselines share an environment."""
    if fp is None:
        return "-"
    text = json.dumps(to_jsonable(fp), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def comparability(a: Fingerprint | None, b: Fingerprint | None) -> tuple[bool, str]:
    """Whether runs measured in fingerprints ``a`` and ``b`` can be compared, and what differs.

    Not comparable: scenario hash, SLO, CPU count, provider, machine architecture, or perfgate
    major.minor version differ. Only noted: perfgate patch version, Python version, target host.
    A missing fingerprint (older file) is comparable with a note: nothing can be checked.
    """
    if a is None or b is None:
        which = (
            "either" if a is None and b is None else ("the first" if a is None else "the second")
        )
        return True, f"no fingerprint recorded for {which}: environment not checked"
    blocking: list[str] = []
    notes: list[str] = []

    def change(label: str, x: object, y: object) -> str:
        return f"{label} {x} → {y}"

    if a.scenario_hash != b.scenario_hash:
        blocking.append(change("scenario hash", a.scenario_hash[:12], b.scenario_hash[:12]))
    if a.slo != b.slo:
        blocking.append(change("SLO", a.slo, b.slo))
    if a.cpu_count != b.cpu_count:
        blocking.append(change("cpu_count", a.cpu_count, b.cpu_count))
    if a.provider != b.provider:
        blocking.append(change("provider", a.provider or "?", b.provider or "?"))
    if a.machine != b.machine:
        blocking.append(change("machine", a.machine or "?", b.machine or "?"))
    if a.perfgate_version != b.perfgate_version:
        text = change("perfgate", a.perfgate_version, b.perfgate_version)
        major_minor_differs = _major_minor(a.perfgate_version) != _major_minor(b.perfgate_version)
        (blocking if major_minor_differs else notes).append(text)
    if a.python != b.python:
        notes.append(change("python", a.python or "?", b.python or "?"))
    if a.target != b.target:
        notes.append(change("target", a.target or "?", b.target or "?"))
    if blocking:
        return False, "not comparable: " + ", ".join(blocking + notes)
    if notes:
        return True, "comparable; differs in " + ", ".join(notes)
    return True, ""


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------


def _safe_name(name: str, what: str) -> str:
    """A single, safe file-name component for ``name``.

    Characters outside ``A-Z a-z 0-9 . _ + -`` become ``_`` (``feature/x`` → ``feature_x``).
    Names that are empty, start with ``.``, contain ``..`` or exceed 100 characters are rejected:
    they are path-traversal attempts or hidden files, never real release names.
    """
    if not name or not name.strip():
        raise BaselineError(f"{what} name is empty: cannot name a baseline file")
    if name.startswith(".") or ".." in name:
        raise BaselineError(
            f"{what} name {name!r} is not allowed for a baseline file "
            "(it must not start with '.' or contain '..')"
        )
    if len(name) > MAX_NAME_CHARS:
        raise BaselineError(
            f"{what} name {name[:20]!r}… is longer than {MAX_NAME_CHARS} characters"
        )
    return _UNSAFE_CHARS.sub("_", name)


def baseline_path(baseline_dir: Path, scenario: str, release: str) -> Path:
    """``<baseline_dir>/<scenario>/<release>.json``, both names sanitised by ``_safe_name``."""
    file = _safe_name(release, "release") + ".json"
    if file == NOISE_FILE:
        raise BaselineError(
            f"release name {release!r} is reserved: {NOISE_FILE} holds the calibrated noise model"
        )
    return Path(baseline_dir) / _safe_name(scenario, "scenario") / file


def _scenario_dir(baseline_dir: Path, scenario: str) -> Path:
    return Path(baseline_dir) / _safe_name(scenario, "scenario")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_json_object(path: Path, err: type[Exception], label: str) -> dict[str, Any]:
    """Parse ``path`` as a JSON object, or raise ``err`` with one line naming the file."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise err(f"{label} {path}: {size} bytes is too large to be a perfgate file")
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise err(f"{label} {path}: file not found") from exc
    except IsADirectoryError as exc:
        raise err(f"{label} {path}: is a directory, not a file") from exc
    except OSError as exc:
        raise err(f"{label} {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise err(f"{label} {path}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise err(
            f"{label} {path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise err(f"{label} {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise err(f"{label} {path}: not a JSON object (found {_json_type(data)})")
    return data


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _typed(
    data: dict[str, Any], key: str, tp: Any, prefix: str, err: type[Exception], default: Any
) -> Any:
    """``data[key]`` converted to ``tp``; a missing key gives ``default`` (``...`` = required)."""
    if key not in data:
        if default is ...:
            raise err(f"{prefix}: missing key {key!r}")
        return default
    try:
        return from_jsonable(tp, data[key])
    except (TypeError, ValueError) as exc:
        raise err(f"{prefix}: key {key!r}: {exc}") from exc


def _schema_of(data: dict[str, Any], prefix: str, err: type[Exception], newest: int) -> int:
    schema = data.get("schema")
    if "schema" not in data:
        raise err(f"{prefix}: missing key 'schema'")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise err(f"{prefix}: key 'schema': expected a positive integer, got {schema!r}")
    if schema > newest:
        raise err(
            f"{prefix}: written by a newer perfgate (schema {schema}); perfgate {__version__} "
            f"reads schema {newest}: upgrade perfgate to read it"
        )
    return schema


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def load_baseline(path: Path, *, scenario: str | None = None) -> StoredBaseline:
    """Read and validate one baseline file; ``scenario`` (if given) must match. Never writes."""
    path = Path(path)
    prefix = f"baseline {path}"
    data = _read_json_object(path, BaselineError, "baseline")
    kind = data.get("kind")
    if kind != BASELINE_KIND:
        hint = ""
        if "verdict" in data and "steps" in data and "kind" not in data:
            hint = " (it looks like a result.json: store it with `perfgate baseline promote`)"
        found = f"kind {kind!r}" if "kind" in data else "no 'kind' key"
        raise BaselineError(
            f"{prefix}: not a perfgate baseline ({found}, expected {BASELINE_KIND!r}){hint}"
        )
    schema = _schema_of(data, prefix, BaselineError, BASELINE_SCHEMA)

    def get(key: str, tp: Any, default: Any = ...) -> Any:
        return _typed(data, key, tp, prefix, BaselineError, default)

    name = get("scenario", str)
    release = get("release", str)
    created_at = get("created_at", str)
    for key, value in (("scenario", name), ("release", release)):
        if not value:
            raise BaselineError(f"{prefix}: key {key!r} is empty")
    try:
        _parse_time(created_at)
    except ValueError as exc:
        raise BaselineError(
            f"{prefix}: key 'created_at': {created_at!r} is not an ISO-8601 time"
        ) from exc
    if scenario is not None and name != scenario:
        raise BaselineError(
            f"{prefix}: is a baseline of scenario {name!r}, not {scenario!r} "
            "(move it to its own scenario's folder)"
        )
    return StoredBaseline(
        schema=schema,
        scenario=name,
        release=release,
        created_at=created_at,
        path=path,
        saturation=get("saturation", Saturation),
        fingerprint=get("fingerprint", Fingerprint | None, None),
        steps=get("steps", tuple[StepStats, ...]),
        verdict=get("verdict", str, "pass"),
        source=get("source", str, ""),
        perfgate_version=get("perfgate_version", str, ""),
        measured_at=get("measured_at", str, ""),
        slo=get("slo", Slo | None, None),
        replicates=get("replicates", tuple[Saturation, ...], ()),
    )


NOISE_FILE = "noise.json"


def _baseline_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    except NotADirectoryError as exc:
        raise BaselineError(f"baseline folder {directory} is not a directory") from exc
    except OSError as exc:
        raise BaselineError(f"baseline folder {directory}: cannot list: {exc.strerror}") from exc
    # Hidden names are the lock and in-flight temp files; noise.json is `perfgate calibrate`'s
    # noise model, which lives beside the baselines (a release cannot be called "noise").
    return [
        p
        for p in entries
        if p.suffix == ".json" and not p.name.startswith(".") and p.name != NOISE_FILE
    ]


def _history_key(b: StoredBaseline) -> tuple[datetime, float, str]:
    try:
        mtime = b.path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return (_parse_time(b.created_at), mtime, b.release)


def scan_baselines(baseline_dir: Path, scenario: str) -> BaselineScan:
    """Every baseline of ``scenario`` oldest → newest, plus each unreadable file and its error.

    For ``perfgate baseline list``, which shows what it can and names every broken file.
    """
    good: list[StoredBaseline] = []
    problems: list[tuple[Path, str]] = []
    for path in _baseline_files(_scenario_dir(baseline_dir, scenario)):
        try:
            good.append(load_baseline(path, scenario=scenario))
        except BaselineError as exc:
            problems.append((path, str(exc)))
    return BaselineScan(baselines=tuple(sorted(good, key=_history_key)), problems=tuple(problems))


def list_baselines(baseline_dir: Path, scenario: str) -> tuple[StoredBaseline, ...]:
    """Every baseline of ``scenario``, oldest → newest (by created_at, then mtime).

    Strict: the first corrupt or foreign file raises :class:`BaselineError` naming it, because a
    gate that silently skipped it could compare against the wrong release. ``scan_baselines`` is
    the lenient variant for listing.
    """
    scan = scan_baselines(baseline_dir, scenario)
    if scan.problems:
        raise BaselineError(scan.problems[0][1])
    return scan.baselines


def previous_baseline(baseline_dir: Path, scenario: str, release: str) -> StoredBaseline | None:
    """The newest stored baseline of ``scenario`` whose release is not ``release``."""
    others = [b for b in list_baselines(baseline_dir, scenario) if b.release != release]
    return others[-1] if others else None


def resolve_baseline(baseline_dir: Path, scenario: str, name: str) -> StoredBaseline:
    """A baseline named by a file path (``*.json`` that exists) or a release of ``scenario``."""
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_file():
        return load_baseline(candidate)
    path = baseline_path(baseline_dir, scenario, name)
    if not path.exists():
        known = ", ".join(b.release for b in scan_baselines(baseline_dir, scenario).baselines)
        raise BaselineError(
            f"no baseline for release {name!r} of scenario {scenario!r} at {path}"
            + (f" (stored: {known})" if known else " (none stored)")
        )
    return load_baseline(path, scenario=scenario)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON has no infinities: turn them (and NaN) into null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _document(result: RunResult, *, created_at: str, source: str) -> dict[str, Any]:
    steps = []
    for step in result.steps:
        # Histograms are the bulk of a step and only needed to merge raw samples; the saved
        # percentiles, p95 CI, per-endpoint stats and generator health are what analysis,
        # the verdict and the report read, so a reviewed diff stays a few KB per release.
        item = to_jsonable(step)
        item.pop("histogram", None)
        steps.append(item)
    return _finite(
        {
            "kind": BASELINE_KIND,
            "schema": BASELINE_SCHEMA,
            "scenario": result.scenario,
            "release": result.release,
            "created_at": created_at,
            "measured_at": result.finished_at,
            "perfgate_version": __version__,
            "verdict": result.verdict,
            "source": source,
            "saturation": to_jsonable(result.saturation),
            "replicates": to_jsonable(result.replicates),
            "fingerprint": to_jsonable(result.fingerprint),
            "slo": to_jsonable(result.slo),
            "steps": steps,
        }
    )


def _dumps(document: dict[str, Any]) -> bytes:
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _write_atomically(path: Path, payload: bytes) -> None:
    """Temp file in the same folder, fsync, rename over ``path``; the temp file never survives."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a committed file from teammates
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # The rename is durable only once the folder's entry is on disk; not every FS allows it.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_can_store(
    baseline_dir: Path, scenario: str, release: str, *, force: bool = False
) -> Path:
    """Fail fast, before a long run, if `--promote` could not store this release; returns the path.

    ``store_baseline`` checks again under the lock: this is only an early, friendly refusal.
    """
    path = baseline_path(baseline_dir, scenario, release)
    if path.exists() and not force:
        raise BaselineError(
            f"baseline for release {release!r} already exists at {path} (use --force to replace it)"
        )
    return path


def store_baseline(
    result: RunResult, baseline_dir: Path, *, force: bool = False, source: str | None = None
) -> Path:
    """Store a passing ``result`` as its scenario's baseline for its release; returns the path.

    Refuses non-pass and aborted results, and an existing file unless ``force``. Concurrent
    callers are serialised by ``<dir>/<scenario>/.lock``: one wins, the others see the file.
    """
    if result.aborted:
        raise BaselineError(f"release {result.release!r}: the run was aborted, cannot store it")
    if result.verdict != "pass":
        raise BaselineError(
            f"release {result.release!r}: verdict is {result.verdict}; "
            "only a passing run can become a baseline"
        )
    path = baseline_path(baseline_dir, result.scenario, result.release)
    created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload = _dumps(
        _document(
            result, created_at=created_at, source=result.command if source is None else source
        )
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create baseline folder {path.parent}: {exc.strerror or exc}"
        ) from exc
    lock = filelock.FileLock(path.parent / LOCK_NAME, timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            if path.exists() and not force:
                raise BaselineError(
                    f"baseline for release {result.release!r} already exists at {path} "
                    "(use --force to replace it)"
                )
            _write_atomically(path, payload)
    except filelock.Timeout as exc:
        raise OutputError(
            f"cannot lock {lock.lock_file} within {LOCK_TIMEOUT_S:g} s "
            "(another perfgate is storing a baseline of this scenario?)"
        ) from exc
    except OSError as exc:
        raise OutputError(f"cannot write baseline {path}: {exc.strerror or exc}") from exc
    return path


def read_result(result_json: Path) -> RunResult:
    """Read a saved result.json; every defect is a one-line :class:`ResultFileError`."""
    path = Path(result_json)
    prefix = f"result file {path}"
    data = _read_json_object(path, ResultFileError, "result file")
    _schema_of(data, prefix, ResultFileError, RESULT_SCHEMA)
    hints = typing.get_type_hints(RunResult)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RunResult):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name in data or required:
            values[f.name] = _typed(data, f.name, hints[f.name], prefix, ResultFileError, ...)
    # Each field went through from_jsonable on its own so that an error names its key.
    return RunResult(**values)


def promote(result_json: Path, baseline_dir: Path, *, force: bool = False) -> Path:
    """``perfgate baseline promote RESULT_JSON``: store a saved passing run as a baseline."""
    result = read_result(result_json)
    return store_baseline(
        result, baseline_dir, force=force, source=str(Path(result_json).resolve().parent)
    )


# ---------------------------------------------------------------------------------------------
# Comparing two baselines
# ---------------------------------------------------------------------------------------------


def _pct(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return (b - a) / a * 100.0


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _by_level(steps: tuple[StepStats, ...]) -> dict[int, list[StepStats]]:
    levels: dict[int, list[StepStats]] = {}
    for step in steps:
        levels.setdefault(step.users, []).append(step)
    return levels


def _slo_of(b: StoredBaseline) -> str:
    if b.fingerprint is not None:
        return b.fingerprint.slo
    return slo_text(b.slo) if b.slo is not None else ""


def diff(a: StoredBaseline, b: StoredBaseline) -> BaselineDiff:
    """B relative to A: saturation change, fingerprint differences, steps at common user levels.

    Where a level was measured more than once (confirm/replicate steps), the values are averaged.
    """
    comparable, note = comparability(a.fingerprint, b.fingerprint)
    if a.scenario != b.scenario:
        rest = note.removeprefix("not comparable: ")
        comparable = False
        note = f"not comparable: different scenarios {a.scenario!r} → {b.scenario!r}" + (
            f"; {rest}" if rest else ""
        )
    levels_a, levels_b = _by_level(a.steps), _by_level(b.steps)
    rows = []
    for users in sorted(set(levels_a) & set(levels_b)):
        sa, sb = levels_a[users], levels_b[users]
        thr_a = _mean(s.throughput_rps for s in sa) or 0.0
        thr_b = _mean(s.throughput_rps for s in sb) or 0.0
        p95_a, p95_b = _mean(s.p95_ms for s in sa), _mean(s.p95_ms for s in sb)
        rows.append(
            StepDiff(
                users=users,
                throughput_a_rps=thr_a,
                throughput_b_rps=thr_b,
                throughput_pct=_pct(thr_a, thr_b),
                p95_a_ms=p95_a,
                p95_b_ms=p95_b,
                p95_pct=_pct(p95_a, p95_b),
                error_rate_a=_mean(s.error_rate for s in sa) or 0.0,
                error_rate_b=_mean(s.error_rate for s in sb) or 0.0,
                slo_ok_a=all(s.slo_ok for s in sa),
                slo_ok_b=all(s.slo_ok for s in sb),
            )
        )
    ua, ub = a.saturation.users, b.saturation.users
    ta, tb = a.saturation.throughput_rps, b.saturation.throughput_rps
    return BaselineDiff(
        a=a.ref(),
        b=b.ref(),
        users_a=ua,
        users_b=ub,
        users_delta=_sub(ua, ub),
        users_pct=_pct(ua, ub),
        throughput_a_rps=ta,
        throughput_b_rps=tb,
        throughput_delta_rps=_sub(ta, tb),
        throughput_pct=_pct(ta, tb),
        slo_a=_slo_of(a),
        slo_b=_slo_of(b),
        comparable=comparable,
        note=note,
        steps=tuple(rows),
        scenario_a=a.scenario,
        scenario_b=b.scenario,
    )


# ---------------------------------------------------------------------------------------------
# Text for the CLI
# ---------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _signed(value: float | None, fmt: str = "+.1f", unit: str = "") -> str:
    return "-" if value is None else format(value, fmt) + unit


def format_users(s: Saturation) -> str:
    """Saturation users as shown to people: ``≥ 600`` when the SLO never broke."""
    if s.users is None:
        return "-"
    if s.censored == "above_max" or not s.broken:
        return f"≥{s.users:g}"
    if s.censored == "below_start":
        return f"<{s.users:g}"
    return f"{s.users:.1f}"


def _date(created_at: str) -> str:
    try:
        return _parse_time(created_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created_at


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_list(
    baselines: Iterable[StoredBaseline], *, problems: Iterable[tuple[Path, str]] = ()
) -> str:
    """Table of baselines: release, saturation users, req/s, date, fingerprint id."""
    rows = [
        (
            b.release,
            format_users(b.saturation),
            _num(b.saturation.throughput_rps),
            _date(b.created_at),
            fingerprint_id(b.fingerprint),
        )
        for b in baselines
    ]
    out = (
        _table(("release", "users", "req/s", "stored (UTC)", "fingerprint"), rows)
        if rows
        else "no baselines stored"
    )
    broken = [f"unreadable: {message}" for _, message in problems]
    return "\n".join([out, *broken])


def format_show(b: StoredBaseline) -> str:
    """Everything in one baseline, for ``perfgate baseline show``."""
    s = b.saturation
    lines = [
        f"baseline     {b.scenario} / {b.release}",
        f"file         {b.path}",
        f"stored       {b.created_at}" + (f" (measured {b.measured_at})" if b.measured_at else ""),
        f"verdict      {b.verdict}",
        f"source       {b.source or '-'}",
        f"saturation   {format_users(s)} users, {_num(s.throughput_rps)} req/s"
        + (f" (bracket {s.bracket[0]}-{s.bracket[1]} users)" if s.bracket else ""),
        f"reason       {s.reason or '-'}",
    ]
    if b.replicates:
        reps = ", ".join(format_users(r) for r in b.replicates)
        lines.append(f"replicates   {reps}")
    fp = b.fingerprint
    if fp is None:
        lines.append("fingerprint  - (none recorded)")
    else:
        lines.append(
            f"fingerprint  {fingerprint_id(fp)}: scenario {fp.scenario_hash[:12]}, {fp.slo}, "
            f"perfgate {fp.perfgate_version}, {fp.cpu_count} CPUs, provider {fp.provider or '-'}, "
            f"target {fp.target or '-'}, python {fp.python or '-'}, {fp.machine or '-'}"
        )
    if b.steps:
        rows = [
            (
                str(st.users),
                _num(st.throughput_rps),
                _num(st.p50_ms),
                _num(st.p95_ms),
                _num(st.p99_ms),
                f"{st.error_rate * 100:.2f}",
                "ok" if st.slo_ok else "broken",
            )
            for st in b.steps
        ]
        lines += [
            "",
            _table(("users", "req/s", "p50 ms", "p95 ms", "p99 ms", "err %", "SLO"), rows),
        ]
    return "\n".join(lines)


def format_diff(d: BaselineDiff) -> str:
    """The comparison of two baselines, for ``perfgate baseline diff A B``."""
    a, b = d.a.release, d.b.release
    lines = [
        f"{a} → {b}" + (f" (scenario {d.scenario_a})" if d.scenario_a == d.scenario_b else ""),
        f"saturation users  {format_users(d.a.saturation)} → {format_users(d.b.saturation)}"
        f"  ({_signed(d.users_delta)}, {_signed(d.users_pct, unit=' %')})",
        f"throughput req/s  {_num(d.throughput_a_rps)} → {_num(d.throughput_b_rps)}"
        f"  ({_signed(d.throughput_delta_rps)}, {_signed(d.throughput_pct, unit=' %')})",
    ]
    if d.slo_a != d.slo_b:
        lines.append(f"SLO               {d.slo_a or '-'} → {d.slo_b or '-'}")
    # The note already starts with "not comparable:" / "comparable; differs in" when it matters.
    lines.append(f"environment       {d.note or 'identical fingerprints'}")
    if d.steps:
        rows = [
            (
                str(r.users),
                _num(r.throughput_a_rps),
                _num(r.throughput_b_rps),
                _signed(r.throughput_pct, unit=" %"),
                _num(r.p95_a_ms),
                _num(r.p95_b_ms),
                _signed(r.p95_pct, unit=" %"),
            )
            for r in d.steps
        ]
        header = ("users", f"{a} req/s", f"{b} req/s", "Δ", f"{a} p95", f"{b} p95", "Δ p95")
        lines += ["", _table(header, rows)]
    else:
        lines.append("no common user levels to compare step by step")
    return "\n".join(lines)
