"""perfgate's versioned JSON files — baselines, noise models, result.json — read and written here.

Like asv's ``load_json(path, api_version)`` / ``write_json(path, data, api_version)``, one pair
serves every file kind, so a file that is corrupt, too big, of the wrong kind or of a newer schema
is refused in one place, with one message format: ``<label> <path>: <what is wrong>``, raised as
the error class the caller names (:class:`~perfgate.errors.BaselineError` for baselines and noise
models, :class:`~perfgate.errors.ResultFileError` for result.json; both exit 2). Reading never
modifies a file.

Writes are atomic: a temp file in the same folder, fsynced and renamed over the target, so a
reader sees the old file or the new one, never half of one; any failure leaves the old file and
no temp file behind and raises :class:`~perfgate.errors.OutputError` naming the path and why.
Locking (several writers of one folder) is the caller's business; this module needs only the
standard library and the records.

Inside a baseline folder perfgate follows no symbolic link: every scenario folder and stored file
is reached through :func:`confined`, which refuses a link (or a FIFO, socket or device) with a
one-line :class:`~perfgate.errors.BaselineError` (exit 2) naming it and what it points to, before
anything is read or written. The folder itself (``--baseline-dir``) may be a link: users link
whole folders, and that choice is theirs.

Where baselines live is a *store* (:class:`BaselineStore`, opened by :func:`open_store` from the
``--baseline-dir`` value): a local folder, or a git branch (``git+<url>#<branch>``, see
:mod:`perfgate.gitstore`). Every reader sees a local folder; writes go through ``publish``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import stat
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from perfgate import gitstore
from perfgate._version import __version__
from perfgate.errors import BaselineError, OutputError, PerfgateError, ResultFileError
from perfgate.models import RESULT_SCHEMA, RunResult, from_jsonable

__all__ = [
    "LOCK_NAME",
    "MAX_FILE_BYTES",
    "MAX_NAME_CHARS",
    "BaselineStore",
    "FolderStore",
    "check_entry",
    "confined",
    "credentials",
    "describe_spec",
    "dumps",
    "finite",
    "is_remote",
    "json_type",
    "load_json",
    "load_result",
    "lock_path",
    "open_store",
    "read_only",
    "safe_component",
    "typed",
    "write_bytes",
    "write_json",
    "write_text",
]

LOCK_NAME = ".lock"  # the lock file every writer of a scenario's baseline folder takes
MAX_FILE_BYTES = 64 * 1024 * 1024  # refuse to parse anything this big: no perfgate file is
MAX_NAME_CHARS = 100

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")
# Advice when a file of another kind is given where ``kind`` is expected.
_KIND_ADVICE = {"perfgate-baseline": ": store it with `perfgate baseline promote`"}

Error = type[PerfgateError]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Names, and paths inside a baseline folder
# ---------------------------------------------------------------------------------------------


def safe_component(name: str, what: str) -> str:
    """A single, safe file-name component for ``name`` (``what``: "release", "scenario").

    Characters outside ``A-Z a-z 0-9 . _ + -`` become ``_`` (``feature/x`` → ``feature_x``).
    Names that are empty, start with ``.``, contain ``..`` or exceed 100 characters are rejected
    with a :class:`BaselineError`: they are path-traversal attempts or hidden files, never real
    release or scenario names.
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


def confined(root: Path, *names: str) -> Path:
    """``root/names[0]/names[1]…``, each entry on the way checked by :func:`check_entry`.

    The one way to a path inside a baseline folder (scenario folder, baseline, noise model,
    drift reference, lock). ``names`` are single components (:func:`safe_component`, or fixed
    file names), so with no link among them the path cannot leave ``root``; ``root`` itself is
    not checked (a linked ``--baseline-dir`` is the user's choice).
    """
    path = Path(root)
    for name in names:
        path = check_entry(path / name)
    return path


def lock_path(folder: Path) -> Path:
    """The lock file every writer of a scenario's baseline folder takes (checked as an entry)."""
    return confined(folder, LOCK_NAME)


def check_entry(path: Path) -> Path:
    """``path`` if it is a regular file, a folder or absent; BaselineError (exit 2) otherwise.

    Why no link at all, even one that stays inside the folder: a baseline folder is input the
    gate judges by, often a git branch anyone with push access writes to. A link would be read
    as if it were a release (``web/v1.json -> ~/.ssh/id_rsa``, or another scenario's file), and
    promotion would write through a linked folder to wherever it points or replace a linked file.
    A FIFO would hang the reader. The check is made before every read and write; a process that
    swaps entries concurrently in a folder it can write is beyond it.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # absent, or under a non-folder: the caller's usual handling says so
        return path
    if stat.S_ISLNK(mode):
        raise BaselineError(
            f"{path} is a symbolic link (to {_link_target(path)}): perfgate follows no links "
            "inside a baseline folder; replace it with the real file or folder"
        )
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BaselineError(
            f"{path} is {_special(mode)}, not a file or folder: perfgate neither reads nor "
            "replaces it"
        )
    return path


def _link_target(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        return "an unreadable target"
    shown = repr(target)  # quoted and escaped: the message stays one line
    return shown if len(shown) <= 200 else shown[:199] + "…"


def _special(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    """What a JSON value is, in words, for "expected an object, found …" messages."""
    if isinstance(value, dict):
        return "an object"
    names = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_object(path: Path, error: Error, label: str) -> dict[str, Any]:
    """Parse ``path`` as a JSON object of at most MAX_FILE_BYTES; NaN/Infinity are refused."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise error(f"{label} {path}: {size} bytes is too large to be a perfgate file")
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{label} {path}: file not found") from exc
    except IsADirectoryError as exc:
        raise error(f"{label} {path}: is a directory, not a file") from exc
    except OSError as exc:
        raise error(f"{label} {path}: cannot read: {_why(exc)}") from exc
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise error(f"{label} {path}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise error(
            f"{label} {path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise error(f"{label} {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{label} {path}: not a JSON object (found {json_type(data)})")
    return data


def _check_kind(data: dict[str, Any], kind: str, prefix: str, label: str, error: Error) -> None:
    found = data.get("kind")
    if found == kind:
        return
    hint = ""
    if "kind" not in data and "verdict" in data and "steps" in data:
        hint = f" (it looks like a result.json{_KIND_ADVICE.get(kind, '')})"
    what = f"kind {found!r}" if "kind" in data else "no 'kind' key"
    raise error(f"{prefix}: not a perfgate {label} ({what}, expected {kind!r}){hint}")


def _check_schema(data: dict[str, Any], prefix: str, error: Error, newest: int) -> int:
    if "schema" not in data:
        raise error(f"{prefix}: missing key 'schema'")
    schema = data["schema"]
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise error(f"{prefix}: key 'schema': expected a positive integer, got {schema!r}")
    if schema > newest:
        raise error(
            f"{prefix}: written by a newer perfgate (schema {schema}); perfgate {__version__} "
            f"reads schema {newest}: upgrade perfgate to read it"
        )
    return schema


def load_json(
    path: Path, *, schema: int, label: str, error: Error, kind: str | None = None
) -> dict[str, Any]:
    """The JSON object in ``path``, checked to be of ``kind`` and of schema 1…``schema``.

    ``label`` names the file kind in messages ("baseline", "noise model", "result file");
    every defect raises ``error`` as one line ``<label> <path>: …``. ``kind`` None: the file
    has no ``kind`` key (result.json predates it).
    """
    path = Path(path)
    data = _read_object(path, error, label)
    prefix = f"{label} {path}"
    if kind is not None:
        _check_kind(data, kind, prefix, label, error)
    _check_schema(data, prefix, error, schema)
    return data


def typed(
    data: dict[str, Any], key: str, tp: Any, *, prefix: str, error: Error, default: Any = ...
) -> Any:
    """``data[key]`` converted to ``tp``; a missing key gives ``default`` (``...`` = required).

    Each key is converted on its own so that a message names the key that is wrong.
    """
    if key not in data:
        if default is ...:
            raise error(f"{prefix}: missing key {key!r}")
        return default
    try:
        return from_jsonable(tp, data[key])
    except (TypeError, ValueError) as exc:
        raise error(f"{prefix}: key {key!r}: {exc}") from exc


def load_result(path: Path) -> RunResult:
    """Read a saved result.json (``perfgate report``, ``baseline promote``); every defect is a
    one-line :class:`ResultFileError` (exit 2) naming the file and, where it can, the key."""
    path = Path(path)
    data = load_json(path, schema=RESULT_SCHEMA, label="result file", error=ResultFileError)
    prefix = f"result file {path}"
    hints = typing.get_type_hints(RunResult)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RunResult):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name in data or required:
            values[f.name] = typed(
                data, f.name, hints[f.name], prefix=prefix, error=ResultFileError
            )
    return RunResult(**values)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """JSON has no NaN or infinities: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(document: dict[str, Any]) -> bytes:
    """A reviewable file: sorted keys, 2-space indent, UTF-8, trailing newline, no NaN."""
    text = json.dumps(finite(document), indent=2, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def write_json(path: Path, document: dict[str, Any], *, what: str = "") -> None:
    """Write ``document`` (with its ``kind`` and ``schema`` keys) atomically, as :func:`dumps`."""
    write_bytes(path, dumps(document), what=what)


def write_text(path: Path, text: str, *, what: str = "") -> None:
    """Write ``text`` as UTF-8 atomically (no newline translation)."""
    write_bytes(path, text.encode("utf-8"), what=what)


def write_bytes(path: Path, payload: bytes, *, what: str = "") -> None:
    """Replace ``path`` with ``payload`` atomically; OutputError ``cannot write <what> <path>``.

    The temp file gets the umask's usual mode (mkstemp's 0600 would hide a committed baseline
    from teammates), is written with ``os.write`` until complete (a filling disk gives short
    writes), fsynced, renamed over ``path``, and removed on any failure or interrupt.
    """
    path = Path(path)
    try:
        fd, tmp = _create_temp(path)
    except OSError as exc:
        raise _output_error(path, what, exc) from exc
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # the original error is what matters
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _output_error(path, what, exc) from exc
        raise
    _sync_folder(path.parent)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new hidden temp file next to ``path`` (``.<name>.<random>.tmp``), opened for writing."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name next to {path}")


def _sync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; not every FS allows it.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _output_error(path: Path, what: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {what + ' ' if what else ''}{path}: {_why(exc)}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Stores: where baselines (and noise models) live
# ---------------------------------------------------------------------------------------------


class BaselineStore(typing.Protocol):
    """A baseline folder (``<scenario>/<release>.json``) on disk, wherever it is kept.

    ``root`` is a local folder every reader uses as is; writers go through :meth:`publish`,
    which a git store turns into commit + push (retried), a folder store into a plain call.
    """

    @property
    def root(self) -> Path: ...

    def describe(self, path: Path | None = None) -> str: ...

    def publish(self, write: Callable[[Path], T], *, message: str, keep_to: Path) -> T: ...


@dataclasses.dataclass(frozen=True, slots=True)
class FolderStore:
    """Baselines in a local folder (committed with the code, or kept by the CI cache)."""

    root: Path

    def describe(self, path: Path | None = None) -> str:
        return str(self.root if path is None else path)

    def publish(self, write: Callable[[Path], T], *, message: str, keep_to: Path) -> T:
        return write(self.root)


def is_remote(spec: str | Path) -> bool:
    """Whether ``spec`` names a git-branch store (``git+<url>#<branch>``), not a folder."""
    return str(spec).startswith(gitstore.PREFIX)


def describe_spec(spec: str | Path) -> str:
    """``spec`` as messages may show it (a git URL's credentials redacted)."""
    return gitstore.redact(str(spec)) if is_remote(spec) else str(spec)


def credentials(spec: str | Path) -> tuple[str, ...]:
    """A git store URL's credential (password or token), to redact from everything written."""
    return gitstore.parse(str(spec)).secrets() if is_remote(spec) else ()


@contextlib.contextmanager
def open_store(
    spec: str | Path, *, log: Callable[[str], None] = lambda m: None
) -> Iterator[BaselineStore]:
    """The store named by ``--baseline-dir`` / ``PERFGATE_BASELINE_DIR`` for a ``with`` block.

    A folder is used in place. ``git+<url>#<branch>`` is fetched (shallow) into a private
    temporary clone, removed when the block ends; a branch that does not exist yet is an empty
    store (the first promotion creates it). Fetch failures are StoreError (exit 3).
    """
    if is_remote(spec):
        with gitstore.checkout(gitstore.parse(str(spec)), log=log) as branch:
            yield branch
    else:
        yield FolderStore(Path(spec))


@contextlib.contextmanager
def read_only(spec: str | Path) -> Iterator[Path]:
    """A local folder holding the store's baselines as they are now, for readers only.

    For ``perfgate history`` and other tools: iterate ``<folder>/<scenario>/*.json`` (with
    :func:`perfgate.baseline.scan_baselines`). A git store's folder is a temporary clone that
    disappears when the block ends; writing into it publishes nothing.
    """
    with open_store(spec) as opened:
        yield opened.root
