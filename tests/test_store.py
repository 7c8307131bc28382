"""perfgate.store: every versioned JSON file is read strictly and written atomically."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from perfgate import store
from perfgate.errors import BaselineError, InputError, OutputError, ResultFileError
from perfgate.models import RESULT_SCHEMA, to_jsonable

try:
    from report_fixtures import make_result
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import make_result

KIND = "perfgate-baseline"


def _file(tmp_path: Path, content: bytes | str) -> Path:
    path = tmp_path / "f.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _load(path: Path, *, kind: str | None = KIND, error: type = BaselineError) -> dict:
    return store.load_json(path, schema=1, label="baseline", error=error, kind=kind)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Reading: one message format, the caller's error class, the file untouched
# ---------------------------------------------------------------------------------------------

BAD = {
    "truncated": ('{"kind": "perfgate-baseline", "sch', "not valid JSON (line 1 column"),
    "empty": ("", "not valid JSON"),
    "not UTF-8": (b'{"kind": "\xff"}', "not UTF-8 text (byte 10)"),
    "array": ("[1, 2]", "not a JSON object (found an array)"),
    "string": ('"x"', "not a JSON object (found a string)"),
    "NaN": ('{"kind": "perfgate-baseline", "schema": 1, "x": NaN}', "NaN is not valid JSON"),
    "Infinity": ('{"x": -Infinity}', "-Infinity is not valid JSON"),
    "deep": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "wrong kind": ('{"kind": "perfgate-noise", "schema": 1}', "kind 'perfgate-noise', expected"),
    "no kind": ('{"schema": 1}', "not a perfgate baseline (no 'kind' key"),
    "a result.json": (
        '{"schema": 1, "verdict": "pass", "steps": []}',
        "it looks like a result.json: store it with `perfgate baseline promote`",
    ),
    "newer schema": (
        '{"kind": "perfgate-baseline", "schema": 7}',
        "written by a newer perfgate (schema 7); perfgate ",
    ),
    "no schema": ('{"kind": "perfgate-baseline"}', "missing key 'schema'"),
    "schema text": ('{"kind": "perfgate-baseline", "schema": "1"}', "expected a positive integer"),
    "schema bool": ('{"kind": "perfgate-baseline", "schema": true}', "expected a positive integer"),
    "schema 0": ('{"kind": "perfgate-baseline", "schema": 0}', "expected a positive integer"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_in_one_format(tmp_path: Path, case: str) -> None:
    content, message = BAD[case]
    path = _file(tmp_path, content)
    before = path.read_bytes()
    with pytest.raises(BaselineError) as info:
        _load(path)
    text = str(info.value)
    assert text.startswith(f"baseline {path}: ") and message in text, text
    assert "\n" not in text and info.value.exit_code == 2
    assert path.read_bytes() == before


def test_the_callers_error_class_and_label_are_used(tmp_path: Path) -> None:
    path = _file(tmp_path, "[]")
    with pytest.raises(ResultFileError, match=r"^result file .*: not a JSON object"):
        store.load_json(path, schema=1, label="result file", error=ResultFileError)
    with pytest.raises(InputError):  # both are bad input: exit 2
        store.load_json(path, schema=1, label="noise model", error=BaselineError)


def test_too_big_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, json.dumps({"kind": KIND, "schema": 1, "pad": "x" * 200}))
    monkeypatch.setattr(store, "MAX_FILE_BYTES", 100)
    with pytest.raises(BaselineError, match=r"bytes is too large to be a perfgate file"):
        _load(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"nope.json: file not found$"):
        _load(tmp_path / "nope.json")
    with pytest.raises(BaselineError, match="is a directory, not a file"):
        _load(tmp_path)


def test_a_good_file_comes_back_with_its_schema(tmp_path: Path) -> None:
    path = _file(tmp_path, json.dumps({"kind": KIND, "schema": 1, "release": "v1"}))
    assert _load(path) == {"kind": KIND, "schema": 1, "release": "v1"}
    no_kind = _file(tmp_path, json.dumps({"schema": 1}))
    assert _load(no_kind, kind=None) == {"schema": 1}  # result.json has no kind key


def test_typed_names_the_key() -> None:
    data = {"users": "ten"}
    with pytest.raises(BaselineError, match=r"^p: key 'users': expected an integer"):
        store.typed(data, "users", int, prefix="p", error=BaselineError)
    with pytest.raises(BaselineError, match=r"^p: missing key 'release'"):
        store.typed(data, "release", str, prefix="p", error=BaselineError)
    assert store.typed(data, "release", str, prefix="p", error=BaselineError, default="") == ""


def test_json_type() -> None:
    assert [store.json_type(v) for v in ([], "", True, None, 1.5, 3, {})] == [
        "an array",
        "a string",
        "true/false",
        "null",
        "a number",
        "a number",
        "an object",
    ]


# ---------------------------------------------------------------------------------------------
# result.json: the one reader of `perfgate report` and `perfgate baseline promote`
# ---------------------------------------------------------------------------------------------


def test_load_result_round_trip_and_per_key_errors(tmp_path: Path) -> None:
    result = make_result(n_steps=4)
    path = _file(tmp_path, json.dumps(to_jsonable(result)))
    assert store.load_result(path) == result

    data = to_jsonable(result)
    data["steps"] = "many"
    bad = _file(tmp_path, json.dumps(data))
    with pytest.raises(ResultFileError, match=r"^result file .*: key 'steps': expected a list"):
        store.load_result(bad)
    newer = _file(tmp_path, json.dumps({**to_jsonable(result), "schema": RESULT_SCHEMA + 1}))
    with pytest.raises(ResultFileError, match="written by a newer perfgate"):
        store.load_result(newer)


def test_report_and_promote_share_the_reader() -> None:
    from perfgate import baseline, report

    assert report.load_result is store.load_result
    assert baseline.read_result is store.load_result


# ---------------------------------------------------------------------------------------------
# Writing: atomic, never half a file, OutputError naming the path and why
# ---------------------------------------------------------------------------------------------


def test_write_json_is_reviewable_and_finite(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    store.write_json(path, {"schema": 1, "kind": KIND, "x": float("inf"), "é": [float("nan")]})
    text = path.read_text(encoding="utf-8")
    expected = {"kind": KIND, "schema": 1, "x": None, "é": [None]}
    assert text == json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert _files(tmp_path) == ["b.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fails", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    path = tmp_path / "v1.json"
    store.write_json(path, {"kind": KIND, "schema": 1, "release": "old"})
    before = path.read_bytes()
    monkeypatch.setattr(os, fails, _enospc)
    with pytest.raises(OutputError) as info:
        store.write_json(path, {"kind": KIND, "schema": 1, "release": "new"}, what="baseline")
    monkeypatch.undo()
    assert str(info.value) == f"cannot write baseline {path}: No space left on device"
    assert info.value.exit_code == 3
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["v1.json"]


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def one_byte(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    store.write_text(tmp_path / "t.txt", "hello ✓\n")
    monkeypatch.undo()
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "hello ✓\n"


def test_an_interrupt_mid_write_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.txt"
    path.write_text("old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and _files(tmp_path) == ["r.txt"]


def test_a_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "r.txt"
    with pytest.raises(OutputError, match=r"^cannot write .*missing/r.txt: No such file"):
        store.write_text(path, "x")


# ---------------------------------------------------------------------------------------------
# Names used in paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [("v1.2.3", "v1.2.3"), ("feature/x", "feature_x"), ("a b+c", "a_b+c"), ("rc:1", "rc_1")],
)
def test_safe_component_sanitises(name: str, safe: str) -> None:
    assert store.safe_component(name, "release") == safe


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../etc/passwd", "must not start with '.' or contain '..'"),
        ("a/../../b", "must not start with '.' or contain '..'"),
        ("..", "must not start with '.' or contain '..'"),
        (".hidden", "must not start with '.' or contain '..'"),
        ("", "release name is empty"),
        ("   ", "release name is empty"),
        ("x" * 101, "is longer than 100 characters"),
    ],
)
def test_safe_component_refuses_traversal(name: str, message: str) -> None:
    with pytest.raises(BaselineError, match=message):
        store.safe_component(name, "release")


def test_a_safe_component_stays_one_level_deep(tmp_path: Path) -> None:
    for name in ("/abs/path", "a/b/c", "a\\b", "x\x00y"):
        safe = store.safe_component(name, "scenario")
        assert (tmp_path / safe).parent == tmp_path and "/" not in safe
