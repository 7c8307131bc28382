"""The ``embedded`` staging provider: the reference exchange in a child process on 127.0.0.1.

The child (``python -m perfgate.exchange --port 0``) runs in its own process group, announces its
URL on stdout, and is always stopped on exit: SIGTERM to the group, then SIGKILL if it lingers.
It also stops by itself if this process dies without stopping it (``--exit-with-parent``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import perfgate
from perfgate.errors import ScenarioError, StagingError
from perfgate.exchange import ConfigError, ExchangeConfig
from perfgate.models import Scenario
from perfgate.staging import StagedTarget, StagingOptions

HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0  # launch → listening line (interpreter start, imports, seeding)
HEALTH_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0  # SIGTERM → exit, before SIGKILL
_POLL_S = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningExchange:
    """A started reference exchange."""

    pid: int
    url: str
    config: ExchangeConfig


def exchange_config(scenario: Scenario) -> ExchangeConfig:
    """The scenario's ``staging.embedded`` options, validated (ScenarioError names the key)."""
    try:
        return ExchangeConfig.from_dict(scenario.staging.embedded)
    except ConfigError as exc:
        where = scenario.path or f"scenario {scenario.name!r}"
        raise ScenarioError(f"{where}: staging.embedded.{exc.key}: {exc.problem}") from exc


def _recipe_config(scenario: Scenario, recipe: Mapping[str, Any] | None) -> ExchangeConfig:
    """The scenario's exchange, or the one a previous release was staged with (its recipe)."""
    if not recipe:
        return exchange_config(scenario)
    try:
        return ExchangeConfig.from_dict(dict(recipe.get("exchange") or {}))
    except ConfigError as exc:
        raise StagingError(
            f"the previous release's recorded exchange options are unusable: "
            f"staging.embedded.{exc.key}: {exc.problem}"
        ) from exc


class _Place:
    """One exchange process at a fixed URL, restartable with other options (cross-over)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.stack = contextlib.ExitStack()
        self.running: RunningExchange | None = None

    def start(self, config: ExchangeConfig, port: int = 0) -> RunningExchange:
        cache = "on" if config.cache else "off"
        self.log(
            f"starting reference exchange ({config.slots} slots × {config.service_ms:g} ms, "
            f"cache {cache})"
        )
        self.running = self.stack.enter_context(run_exchange(config, port=port, log=self.log))
        self.log(f"reference exchange ready: pid {self.running.pid}, {self.running.url}")
        return self.running

    def restage(self, recipe: Mapping[str, Any]) -> None:
        assert self.running is not None
        port = int(self.running.url.rsplit(":", 1)[1])
        config = ExchangeConfig.from_dict(dict(recipe.get("exchange") or {}))
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.start(config, port)


@contextlib.contextmanager
def provision_embedded(scenario: Scenario, options: StagingOptions) -> Iterator[StagedTarget]:
    """Start the reference exchange with the scenario's options (or ``options.recipe``'s).

    The target can be restaged at its URL with another release's options: the gate's
    cross-over swaps the two builds' exchanges that way. Stopped on exit, whatever the exit.
    """
    config = _recipe_config(scenario, options.recipe)  # before anything starts
    place = _Place(options.log)
    with contextlib.ExitStack() as outer:
        outer.callback(lambda: place.stack.close())  # whichever process runs at the end
        started = time.monotonic()
        running = place.start(config)
        took = round(time.monotonic() - started, 3)
        yield StagedTarget(
            url=running.url,
            provider="embedded",
            description=f"reference exchange (pid {running.pid}) on {running.url}",
            details={"exchange": config.to_dict(), "pid": running.pid, "provision_s": took},
            recipe={"exchange": config.to_dict()},
            restage=place.restage,
            pid=lambda: place.running.pid if place.running is not None else None,
        )


def _no_log(msg: str) -> None:
    del msg


@contextlib.contextmanager
def run_exchange(
    config: ExchangeConfig,
    *,
    host: str = HOST,
    port: int = 0,
    log: Callable[[str], None] = _no_log,
) -> Iterator[RunningExchange]:
    """Run ``python -m perfgate.exchange`` on ``port`` (0: a free one) of ``host`` for the block."""
    cmd = [
        sys.executable,
        "-m",
        "perfgate.exchange",
        "--host",
        host,
        "--port",
        str(port),
        "--config-json",
        json.dumps(config.to_dict()),
        "--exit-with-parent",
    ]
    # Files, not pipes: nothing can block the child if it writes more than we read.
    with (
        tempfile.TemporaryFile(prefix="perfgate-exchange-out-") as out,
        tempfile.TemporaryFile(prefix="perfgate-exchange-err-") as err,
    ):
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                env=_child_env(),
            )
        except OSError as exc:
            raise StagingError(f"cannot start the reference exchange: {exc}") from exc
        try:
            url = _await_listening(proc, out, err)
            _await_health(proc, url, err)
            yield RunningExchange(pid=proc.pid, url=url, config=config)
        finally:
            _stop(proc, log, err)


def _child_env() -> dict[str, str]:
    # The child must import this very perfgate, installed or run from a source tree.
    root = str(Path(perfgate.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _last_line(stream: IO[bytes]) -> str:
    stream.seek(0)
    lines = [ln.strip() for ln in stream.read().decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "no error output"


def _failed(proc: subprocess.Popen[bytes], err: IO[bytes], what: str) -> StagingError:
    code = proc.poll()
    status = f"exit code {code}" if code is not None else "still running"
    return StagingError(f"reference exchange {what} ({status}): {_last_line(err)}")


def _await_listening(proc: subprocess.Popen[bytes], out: IO[bytes], err: IO[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        out.seek(0)
        first = out.readline()
        if first.endswith(b"\n"):
            try:
                event = json.loads(first)
                url = event["url"]
            except (ValueError, KeyError, TypeError) as exc:
                raise StagingError(
                    f"reference exchange printed an unexpected line: {first[:200]!r}"
                ) from exc
            if event.get("event") != "listening" or not isinstance(url, str):
                raise StagingError(
                    f"reference exchange printed an unexpected line: {first[:200]!r}"
                )
            return url
        if proc.poll() is not None:
            raise _failed(proc, err, "failed to start")
        if time.monotonic() >= deadline:
            raise _failed(proc, err, f"did not start listening within {START_TIMEOUT_S:g} s")
        time.sleep(_POLL_S)


def _await_health(proc: subprocess.Popen[bytes], url: str, err: IO[bytes]) -> None:
    import httpx  # here, not at the top: `perfgate validate` stays quick to start

    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    reason = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while True:
            try:
                response = client.get(f"{url}/health")
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            else:
                if response.status_code == 200:
                    return
                reason = f"HTTP {response.status_code}"
            if proc.poll() is not None:
                raise _failed(proc, err, "exited before it was healthy")
            if time.monotonic() >= deadline:
                raise StagingError(
                    f"reference exchange on {url} was not healthy within "
                    f"{HEALTH_TIMEOUT_S:g} s: {reason}"
                )
            time.sleep(_POLL_S * 5)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    # start_new_session=True made the child a group leader: its pgid is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def _stop(proc: subprocess.Popen[bytes], log: Callable[[str], None], err: IO[bytes]) -> None:
    """SIGTERM the exchange's process group, wait, SIGKILL if it lingers; always reap it."""
    crashed = proc.poll()
    if crashed is not None:
        log(
            f"reference exchange (pid {proc.pid}) had already exited ({crashed}): {_last_line(err)}"
        )
    else:
        log(f"stopping reference exchange (pid {proc.pid})")
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log(
            f"reference exchange (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT_S:g} s: killing"
        )
    except BaseException:  # Ctrl-C, or SIGTERM's Interrupted, while waiting: do not linger
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    _signal_group(proc, signal.SIGKILL)  # also reaps any stray member of its group
    proc.wait()
