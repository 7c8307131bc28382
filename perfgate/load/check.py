"""Import a locustfile the way a run would, in a child process with a timeout (for ``validate``).

The CLI never imports locust (see :mod:`perfgate.load.engine`), and a locustfile is user code
that may hang or exit at import: the engine child imports it and answers with one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys

from perfgate.errors import LoadError, ScenarioError
from perfgate.load import protocol

LOCUSTFILE_TIMEOUT_S = 30.0  # importing locust alone takes ~1-2 s on a busy 2-core machine


def check_locustfile(path: str, *, timeout_s: float | None = None) -> tuple[str, ...]:
    """The User classes ``path`` defines; ScenarioError (one line) when it cannot be imported."""
    from perfgate.load.runner import engine_env

    timeout_s = LOCUSTFILE_TIMEOUT_S if timeout_s is None else timeout_s
    command = [sys.executable, "-m", "perfgate.load.engine", "--check-locustfile", path]
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            env=engine_env(),
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise ScenarioError(
            f"users.locustfile {path}: importing it did not finish within {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise LoadError(f"cannot start the load engine to import {path} ({exc})") from exc
    out = proc.stdout.decode("utf-8", "replace")
    marker = out.rfind(protocol.CHECK_MARKER)
    if marker < 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise LoadError(
            f"the load engine could not check {path} (exit {proc.returncode}): {tail[0]}"
        )
    answer = json.loads(out[marker + len(protocol.CHECK_MARKER) :].splitlines()[0])
    if not answer.get("ok"):
        raise ScenarioError(str(answer.get("error") or f"users.locustfile {path}: unusable"))
    return tuple(str(c) for c in answer.get("classes", ()))


__all__ = ["LOCUSTFILE_TIMEOUT_S", "check_locustfile"]
