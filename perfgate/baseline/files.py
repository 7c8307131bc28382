"""Baseline files: read, list, resolve, store and promote, through :mod:`perfgate.store`.

Layout: ``<baseline dir>/<scenario>/<release>.json`` (see ``baselines/README.md``). A baseline is
a passing run's saturation point, its steps (without the raw latency histograms) and the
environment fingerprint it was measured in. Files are written under a cross-process lock
(``<baseline dir>/<scenario>/.lock``) by :func:`perfgate.store.write_json` (temp file in the same
folder, fsync, rename), so a reader never sees half a file and two concurrent promotions cannot
both win. Reading never modifies a file; every defect is a one-line :class:`BaselineError` naming
the file. Every path inside the folder comes from :func:`perfgate.store.confined`, which refuses
symbolic links (and FIFOs, sockets, devices) before anything is read or written; listings leave
such an entry out and name it, as they do a corrupt file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from perfgate import store
from perfgate._version import __version__
from perfgate.calibration import NOISE_FILE
from perfgate.errors import BaselineError, OutputError
from perfgate.models import (
    BASELINE_SCHEMA,
    BaselineRef,
    Fingerprint,
    Link,
    RunResult,
    Saturation,
    Slo,
    StepStats,
    WindowStats,
    link_of,
    to_jsonable,
)

__all__ = [
    "BASELINE_KIND",
    "LOCK_NAME",
    "LOCK_TIMEOUT_S",
    "REFERENCE_FILE",
    "BaselineScan",
    "StoredBaseline",
    "baseline_path",
    "check_can_store",
    "list_baselines",
    "load_baseline",
    "mark_reference",
    "parse_time",
    "previous_baseline",
    "promote",
    "publish_baseline",
    "read_reference",
    "read_result",
    "resolve_baseline",
    "scan_baselines",
    "scan_store",
    "scenario_names",
    "store_baseline",
]

BASELINE_KIND = "perfgate-baseline"
LOCK_NAME = store.LOCK_NAME
LOCK_TIMEOUT_S = 30.0  # a promotion holds the lock for milliseconds; 30 s means a stuck holder
REFERENCE_KIND = "perfgate-drift-reference"
# The release the team marked as the drift reference (`perfgate baseline mark-reference`); it
# lives beside the baselines, so, like noise.json, its name is not a release's.
REFERENCE_FILE = "drift-reference.json"
_RESERVED = (NOISE_FILE, REFERENCE_FILE)

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}

# One reader of result.json for `perfgate report` and `perfgate baseline promote`.
read_result = store.load_result


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
    # how the release was staged, so a later run can stage it again side by side
    recipe: dict[str, Any] = field(default_factory=dict)
    windows: tuple[WindowStats, ...] = ()  # its gate's windows: stored-mode comparisons use them
    where: str = ""  # how to show ``path`` when it is a temporary clone of a git store
    # the scenario changed since the baseline before it: what, and how it was met (result.json's)
    scenario_change: dict[str, Any] = field(default_factory=dict)
    link: Link | None = None  # its gate's estimate against the release it was judged against

    def ref(self) -> BaselineRef:
        """The reference a RunResult carries to this baseline."""
        return BaselineRef(
            release=self.release,
            saturation=self.saturation,
            created_at=self.created_at,
            path=self.where or str(self.path),
            fingerprint=self.fingerprint,
        )


@dataclass(**_FROZEN)
class BaselineScan:
    """Every readable baseline of a scenario, oldest first, and the files that could not be read."""

    baselines: tuple[StoredBaseline, ...]
    problems: tuple[tuple[Path, str], ...] = ()  # (file, one-line error)


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------


def baseline_path(baseline_dir: Path, scenario: str, release: str) -> Path:
    """``<baseline_dir>/<scenario>/<release>.json``, both names made safe by the store and
    neither entry a link (:func:`perfgate.store.confined`)."""
    file = store.safe_component(release, "release") + ".json"
    if file in _RESERVED:
        what = "the calibrated noise model" if file == NOISE_FILE else "the drift reference"
        raise BaselineError(f"release name {release!r} is reserved: {file} holds {what}")
    return store.confined(_scenario_dir(baseline_dir, scenario), file)


def _check_release_owns(path: Path, release: str) -> None:
    """BaselineError when ``path`` holds another release's baseline (even with ``--force``).

    File names keep ``A-Z a-z 0-9 . _ + -`` only, so ``feature/x`` and ``feature_x`` (or
    ``café`` and ``caf_``) map to one file: the second must not replace, nor be judged as, the
    first. An unreadable file is left to the callers' usual handling.
    """
    try:
        stored = store.load_json(
            path, schema=BASELINE_SCHEMA, label="baseline", error=BaselineError
        ).get("release")
    except BaselineError:
        return
    if isinstance(stored, str) and stored != release:
        raise BaselineError(
            f"release {release!r} maps to {path}, which holds release {stored!r}: names that "
            "differ only in characters other than A-Z a-z 0-9 . _ + - share a file; rename "
            "the release"
        )


def _scenario_dir(baseline_dir: Path, scenario: str) -> Path:
    return store.confined(baseline_dir, store.safe_component(scenario, "scenario"))


def _reference_path(baseline_dir: Path, scenario: str) -> Path:
    return store.confined(_scenario_dir(baseline_dir, scenario), REFERENCE_FILE)


def parse_time(value: str) -> datetime:
    """An ISO-8601 time; one without a zone is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_baseline(path: Path, *, scenario: str | None = None) -> StoredBaseline:
    """Read and validate one baseline file; ``scenario`` (if given) must match. Never writes."""
    path = Path(path)
    prefix = f"baseline {path}"
    data = store.load_json(
        path, schema=BASELINE_SCHEMA, label="baseline", error=BaselineError, kind=BASELINE_KIND
    )

    def get(key: str, tp: Any, default: Any = ...) -> Any:
        return store.typed(data, key, tp, prefix=prefix, error=BaselineError, default=default)

    name = get("scenario", str)
    release = get("release", str)
    created_at = get("created_at", str)
    for key, value in (("scenario", name), ("release", release)):
        if not value:
            raise BaselineError(f"{prefix}: key {key!r} is empty")
    try:
        parse_time(created_at)
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
        schema=data["schema"],
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
        recipe=get("recipe", dict, {}),
        windows=get("windows", tuple[WindowStats, ...], ()),
        scenario_change=get("scenario_change", dict, {}),
        link=get("link", Link | None, None),
    )


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
    # noise model, which lives beside the baselines (a release cannot be called "noise"), and
    # drift-reference.json names the marked reference release.
    return [
        p
        for p in entries
        if p.suffix == ".json" and not p.name.startswith(".") and p.name not in _RESERVED
    ]


def scenario_names(baseline_dir: Path) -> list[str]:
    """The scenarios that have a folder in ``baseline_dir`` (hidden names left out), sorted.

    A link is listed too (wherever it points), so that scanning it names it as a problem.
    """
    try:
        entries = list(Path(baseline_dir).iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BaselineError(f"baseline folder {baseline_dir}: cannot list: {exc.strerror}") from exc
    return sorted(
        p.name for p in entries if (p.is_symlink() or p.is_dir()) and not p.name.startswith(".")
    )


def _history_key(b: StoredBaseline) -> tuple[datetime, float, str]:
    try:
        mtime = b.path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return (parse_time(b.created_at), mtime, b.release)


def scan_baselines(baseline_dir: Path, scenario: str) -> BaselineScan:
    """Every baseline of ``scenario`` oldest → newest, plus each unreadable file and its error.

    For ``perfgate baseline list``, which shows what it can and names every broken file. A
    link (the scenario's folder or a file in it) is such a problem, never followed.
    """
    name = store.safe_component(scenario, "scenario")  # a bad name is an error, not a problem
    try:
        folder = store.confined(baseline_dir, name)
    except BaselineError as exc:
        return BaselineScan(baselines=(), problems=((Path(baseline_dir) / name, str(exc)),))
    good: list[StoredBaseline] = []
    problems: list[tuple[Path, str]] = []
    for path in _baseline_files(folder):
        try:
            good.append(load_baseline(store.check_entry(path), scenario=scenario))
        except BaselineError as exc:
            problems.append((path, str(exc)))
    return BaselineScan(baselines=tuple(sorted(good, key=_history_key)), problems=tuple(problems))


def scan_store(spec: str | Path, scenario: str | None = None) -> dict[str, BaselineScan]:
    """Every baseline of a store (``--baseline-dir``: a folder or ``git+<url>#<branch>``),
    per scenario (or only ``scenario``), read into memory; for ``perfgate history`` and lists.

    Each baseline's ``where`` names it as users should see it (a git store's file as
    ``git+<url>#<branch>:<scenario>/<release>.json``); a git store's temporary clone is gone
    when this returns, so read the files' content here, not later through ``path``.
    """
    with store.open_store(spec) as opened:
        names = [scenario] if scenario else scenario_names(opened.root)
        scans = {name: scan_baselines(opened.root, name) for name in names}
        return {
            name: replace(
                scan,
                baselines=tuple(replace(b, where=opened.describe(b.path)) for b in scan.baselines),
            )
            for name, scan in scans.items()
        }


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
    _check_release_owns(path, name)
    return load_baseline(path, scenario=scenario)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _document(result: RunResult, *, created_at: str, source: str) -> dict[str, Any]:
    steps = []
    for step in result.steps:
        # Histograms are the bulk of a step and only needed to merge raw samples; the saved
        # percentiles, p95 CI, per-endpoint stats and generator health are what analysis,
        # the verdict and the report read, so a reviewed diff stays a few KB per release.
        item = to_jsonable(step)
        item.pop("histogram", None)
        steps.append(item)
    return {
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
        "recipe": to_jsonable(result.staging_recipe),
        "windows": to_jsonable(result.windows),
        "scenario_change": to_jsonable(result.scenario_change),
        "link": to_jsonable(link_of(result)),
    }


def check_can_store(
    baseline_dir: Path, scenario: str, release: str, *, force: bool = False
) -> Path:
    """Fail fast, before a long run, if `--promote` could not store this release; returns the path.

    ``store_baseline`` checks again under the lock: this is only an early, friendly refusal.
    """
    path = baseline_path(baseline_dir, scenario, release)
    store.lock_path(path.parent)  # a linked lock file is refused now, not after the load
    if path.exists():
        _check_release_owns(path, release)
    if path.exists() and not force:
        raise BaselineError(
            f"baseline for release {release!r} already exists at {path} (use --force to replace it)"
        )
    return path


def _write_locked(
    path: Path, document: dict[str, Any], *, replace: bool, what: str, one_release: bool = False
) -> None:
    """Write ``document`` to ``path`` under the scenario folder's lock (refusing an existing
    file unless ``replace``; with ``one_release``, also one of another release, whatever
    ``replace``); the one way a file enters a baseline folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create baseline folder {path.parent}: {exc.strerror or exc}"
        ) from exc
    lock = filelock.FileLock(store.lock_path(path.parent), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            if one_release and path.exists():
                _check_release_owns(path, document["release"])
            if path.exists() and not replace:
                raise BaselineError(
                    f"{what} for release {document['release']!r} already exists at {path} "
                    "(use --force to replace it)"
                )
            store.write_json(path, document, what=what)
    except filelock.Timeout as exc:
        raise OutputError(
            f"cannot lock {lock.lock_file} within {LOCK_TIMEOUT_S:g} s "
            "(another perfgate is storing a baseline of this scenario?)"
        ) from exc
    except OSError as exc:  # taking the lock: its file could not be created
        raise OutputError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc


def mark_reference(baseline_dir: Path, scenario: str, release: str) -> Path:
    """Mark a stored release as the drift rule's reference (``gate.max_drift``); returns the
    marker's path. The release must be stored; a new mark replaces the old one."""
    resolve_baseline(baseline_dir, scenario, release)  # refuses a release that is not stored
    path = _reference_path(baseline_dir, scenario)
    document = {
        "kind": REFERENCE_KIND,
        "schema": 1,
        "scenario": scenario,
        "release": release,
        "marked_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _write_locked(path, document, replace=True, what="drift reference")
    return path


def read_reference(baseline_dir: Path, scenario: str) -> str | None:
    """The release marked as the drift reference of ``scenario``, or None."""
    path = _reference_path(baseline_dir, scenario)
    if not path.exists():
        return None
    data = store.load_json(
        path, schema=1, label="drift reference", error=BaselineError, kind=REFERENCE_KIND
    )
    prefix = f"drift reference {path}"
    return str(store.typed(data, "release", str, prefix=prefix, error=BaselineError))


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
    document = _document(
        result, created_at=created_at, source=result.command if source is None else source
    )
    _write_locked(path, document, replace=force, what="baseline", one_release=True)
    return path


def publish_baseline(
    result: RunResult,
    into: store.BaselineStore,
    *,
    force: bool = False,
    source: str | None = None,
    keep_to: Path,
) -> str:
    """Store ``result`` as a baseline in a store (a git store commits and pushes it, retrying).

    Returns where it went, as users should see it. ``keep_to``: where a git store copies the
    file when every push is rejected (the StoreError then names it).
    """
    path = into.publish(
        lambda root: store_baseline(result, root, force=force, source=source),
        message=f"perfgate: baseline of {result.scenario} for release {result.release}",
        keep_to=keep_to,
    )
    return into.describe(path)


def promote(result_json: Path, into: store.BaselineStore | Path, *, force: bool = False) -> str:
    """``perfgate baseline promote RESULT_JSON``: store a saved passing run as a baseline."""
    if isinstance(into, Path):
        into = store.FolderStore(into)
    result = read_result(result_json)
    folder = Path(result_json).resolve().parent
    return publish_baseline(
        result, into, force=force, source=str(folder), keep_to=folder / "unpushed-baseline"
    )
