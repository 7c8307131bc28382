"""Atomic writes of the report's files, and result.json / steps.csv / endpoints.csv as text."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from perfgate.errors import OutputError, ResultFileError
from perfgate.models import RESULT_SCHEMA, RunResult, StepStats, from_jsonable, to_jsonable

STEP_COLUMNS = (
    "index",
    "phase",
    "users",
    "started_s",
    "duration_s",
    "requests",
    "failures",
    "throughput_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "max_ms",
    "error_rate",
    "slo_ok",
    "slo_reason",
    "stalls",
    "generator_cpu_percent",
    "generator_loop_lag_ms",
    "generator_little_ratio",
    "generator_limited",
)
ENDPOINT_COLUMNS = (
    "step_index",
    "users",
    "name",
    "method",
    "requests",
    "failures",
    "throughput_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "error_rate",
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Readers never see a half-written file; on any OSError the temp file is removed and an
    OutputError naming ``path`` is raised.
    """
    tmp: str | None = None
    try:
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_why(exc)}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):  # the original error is what matters
                os.unlink(tmp)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new temp file next to ``path``, with the umask's usual mode (mkstemp would give 0600)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(path.parent))


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


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# result.json
# ---------------------------------------------------------------------------------------------


def result_json_text(result: RunResult) -> str:
    """result.json: pretty-printed, with flat objects and lists (histograms, endpoints) on one line.

    Plain ``indent=2`` would put each histogram bucket on its own line and triple the file size.
    """
    return _dump(_finite(to_jsonable(result)), 0) + "\n"


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


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null (to_jsonable already maps NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


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


def load_result(path: Path) -> RunResult:
    """Read a saved result.json; every failure is a one-line ResultFileError (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ResultFileError(f"result file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ResultFileError(f"result file {path} is a folder, not a result.json") from exc
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"result file {path} is not JSON (not UTF-8 text)") from exc
    except OSError as exc:
        raise ResultFileError(f"cannot read result file {path}: {_why(exc)}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(
            f"result file {path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(data, dict):
        raise ResultFileError(
            f"result file {path} is not a perfgate result: "
            f"expected a JSON object, got {_json_type(data)}"
        )
    schema = data.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise ResultFileError(
            f"result file {path} is not a perfgate result: no integer 'schema' key"
        )
    if schema > RESULT_SCHEMA:
        raise ResultFileError(
            f"result file {path} was written by a newer perfgate (schema {schema}); "
            f"this perfgate reads schema {RESULT_SCHEMA}"
        )
    if schema < 1:
        raise ResultFileError(f"result file {path} has an invalid schema {schema}")
    try:
        result = from_jsonable(RunResult, data)
    except (TypeError, ValueError, KeyError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ResultFileError(
            f"result file {path} is not a perfgate result (wrong shape: {detail})"
        ) from exc
    assert isinstance(result, RunResult)
    return result


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def steps_csv_text(steps: tuple[StepStats, ...]) -> str:
    """steps.csv: one row per step (in the order measured), overall columns only."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(STEP_COLUMNS)
    for s in steps:
        g = s.generator
        writer.writerow(
            (
                s.index,
                s.phase,
                s.users,
                _num(s.started_s),
                _num(s.duration_s),
                s.requests,
                s.failures,
                _num(s.throughput_rps),
                _num(s.p50_ms),
                _num(s.p95_ms),
                _num(s.p99_ms),
                _num(s.mean_ms),
                _num(s.max_ms),
                _num(s.error_rate),
                "true" if s.slo_ok else "false",
                s.slo_reason,
                s.stalls,
                _num(g.cpu_percent) if g else "",
                _num(g.loop_lag_ms) if g else "",
                _num(g.little_ratio) if g else "",
                ("true" if g.limited else "false") if g else "",
            )
        )
    return buf.getvalue()


def endpoints_csv_text(steps: tuple[StepStats, ...]) -> str:
    """endpoints.csv: one row per (step, endpoint), in long ("tidy") form."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ENDPOINT_COLUMNS)
    for s in steps:
        for e in s.endpoints:
            writer.writerow(
                (
                    s.index,
                    s.users,
                    e.name,
                    e.method,
                    e.requests,
                    e.failures,
                    _num(e.throughput_rps),
                    _num(e.p50_ms),
                    _num(e.p95_ms),
                    _num(e.p99_ms),
                    _num(e.mean_ms),
                    _num(e.error_rate),
                )
            )
    return buf.getvalue()


def _num(value: float | None) -> str:
    """Numbers as short decimal text; empty for missing values (CSV's usual 'NA')."""
    if value is None or value != value:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"
