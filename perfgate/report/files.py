"""The report's files on disk (atomic writes through :mod:`perfgate.store`), and result.json /
steps.csv / endpoints.csv as text."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perfgate import store
from perfgate.errors import OutputError
from perfgate.models import RunResult, StepStats, to_jsonable

# Every column is named as the field it is read from (a step's generator's with "generator_").
# What a step and each of its endpoints measure, in the same columns for both files:
_MEASURED = ("requests", "failures", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms")
STEP_COLUMNS = (
    "index",
    "phase",
    "users",
    "started_s",
    "duration_s",
    *_MEASURED,
    "max_ms",
    "error_rate",
    "slo_ok",
    "slo_reason",
    "stalls",
    "generator_cpu_percent",
    "generator_loop_lag_ms",
    "generator_little_ratio",
    "generator_limited",
    "p999_ms",  # added columns go last: scripts that read by position keep working
    "bytes_sent",
    "bytes_received",
    # users.streams: the step's awaited events (empty without streams)
    "events_expected",
    "events_received",
    "events_lost",
    "events_loss_rate",
    "events_p50_ms",
    "events_p95_ms",
    "events_p99_ms",
    "events_backlog_mean",
    "events_read_lag_p95_ms",
)
ENDPOINT_COLUMNS = ("step_index", "users", "name", "method", *_MEASURED, "error_rate")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`perfgate.store.write_text`).

    Readers never see a half-written file; on any OSError the temp file is removed and an
    OutputError naming ``path`` is raised.
    """
    store.write_text(path, text)


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (used for $GITHUB_STEP_SUMMARY, which CI owns)."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise OutputError(f"cannot append the summary to {path}: {_why(exc)}") from exc


def make_dir(path: Path) -> None:
    """Create the report folder (and parents), translating OSError into OutputError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {path}: {_why(exc)}") from exc
    if not path.is_dir():
        raise OutputError(f"cannot create report folder {path}: a file of that name exists")


def inside(root: Path, path: Path, what: str) -> Path:
    """``path`` (under ``root``), unless a symbolic link on the way leads outside ``root``.

    ``root`` itself may be a link (the user chose it); a folder inside it that links elsewhere
    (``reports/exchange -> /etc``) would make perfgate write where nobody asked: OutputError.
    """
    real_root = Path(root).resolve()
    real = Path(path).resolve()
    if real != real_root and real_root not in real.parents:
        raise OutputError(
            f"refusing to write {what} to {path}: it is a symbolic link to {real}, outside {root}"
        )
    return Path(path)


def new_run_dir(root: Path, parent: Path, name: str) -> Path:
    """Create ``parent/name`` (``name-2``, ``-3``… if taken) atomically; return it.

    ``mkdir`` without ``exist_ok`` is the claim: two runs started in the same second can never
    share (and overwrite) one folder. ``parent`` must stay inside ``root`` (:func:`inside`).
    """
    make_dir(inside(root, parent, "reports"))
    for n in range(1, 10_000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create report folder {path}: {_why(exc)}") from exc
        return path
    raise OutputError(f"cannot create report folder {parent / name}: every suffix is taken")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# result.json
# ---------------------------------------------------------------------------------------------


def result_json_text(result: RunResult) -> str:
    """result.json: pretty-printed, with flat objects and lists (histograms, endpoints) on one line.

    Plain ``indent=2`` would put each histogram bucket on its own line and triple the file size.
    """
    return _dump(store.finite(to_jsonable(result)), 0) + "\n"


def _is_flat(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_is_scalar(v) or _is_flat_list(v) for v in value.values())
    return _is_flat_list(value)


def _is_flat_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        _is_scalar(v) or (isinstance(v, list) and all(_is_scalar(w) for w in v)) for v in value
    )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _dump(value: Any, level: int) -> str:
    # One encoder call per flat container (not per scalar) keeps a 100-step result fast.
    if _is_scalar(value) or (value and _is_flat(value)):
        return _COMPACT.encode(value)
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    pad = "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{pad}{_COMPACT.encode(k)}: {_dump(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
    items = [f"{pad}{_dump(v, level + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + "\n" + "  " * level + "]"


# One reader of result.json for `perfgate report` and `perfgate baseline promote`.
load_result = store.load_result


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def steps_csv_text(steps: tuple[StepStats, ...]) -> str:
    """steps.csv: one row per step (in the order measured), overall columns only."""
    rows = (
        {**_fields(s), **_fields(s.generator, "generator_"), **_fields(s.events, "events_")}
        for s in steps
    )
    return _csv(STEP_COLUMNS, rows)


def endpoints_csv_text(steps: tuple[StepStats, ...]) -> str:
    """endpoints.csv: one row per (step, endpoint), in long ("tidy") form."""
    rows = (
        {"step_index": s.index, "users": s.users, **_fields(e)} for s in steps for e in s.endpoints
    )
    return _csv(ENDPOINT_COLUMNS, rows)


def _fields(record: Any, prefix: str = "") -> dict[str, Any]:
    """A record's fields by name (with ``prefix``); none for a missing record."""
    if record is None:
        return {}
    return {prefix + f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _csv(columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> str:
    """A header line, then ``columns`` of each row: true/false, short numbers, empty if missing."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_cell(row.get(c)) for c in columns)
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, float):
        return _num(value)
    return value


def _num(value: float | None) -> str:
    """Numbers as short decimal text; empty for missing values (CSV's usual 'NA')."""
    if value is None or value != value:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"
