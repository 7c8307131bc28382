"""Shared helpers of the benchmark scripts: children that always stop, idle waits, CPU and tables.

Every server and load process started here gets ``PR_SET_PDEATHSIG`` (SIGTERM when this script
dies, even by SIGKILL), a hard timeout, and a stop in a ``finally``; everything binds 127.0.0.1.
The scripts are run as ``python benchmarks/NAME.py`` from anywhere (paths are resolved from
this file), and import only the stdlib, psutil and pyyaml (perfgate itself runs as a CLI child).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
PERFGATE = (sys.executable, "-m", "perfgate")

IDLE_BUSY_PCT = 20.0  # whole-machine CPU busy % below which the machine counts as idle
IDLE_HOLD_S = 2.0  # ... for this long in a row


# -- children that always stop ------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SIGTERM the child when this script goes away, however it goes (Ctrl-C, kill -9, crash).
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start ``cmd`` in its own session, tied to this script's life (PDEATHSIG)."""
    return subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: one killpg stops it and its helpers
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen[Any], *, grace_s: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace_s``; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # the child is reaped: its group may still hold helpers (e.g. locust workers); stop those too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """What a finished child left: exit code, output, wall time."""

    rc: int
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False


def run(
    cmd: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Finished:
    """Run ``cmd`` to completion (stopped after ``timeout_s``), timing it from launch to exit."""
    t0 = time.perf_counter()
    proc = spawn(cmd, cwd=cwd, env=env)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        stop(proc)
        out, err = proc.communicate()
        timed_out = True
    finally:
        stop(proc)
    return Finished(
        rc=proc.returncode,
        stdout=out or "",
        stderr=err or "",
        wall_s=time.perf_counter() - t0,
        timed_out=timed_out,
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers that cannot be told port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_without_perfgate() -> dict[str, str]:
    """This environment minus PERFGATE_* (a stray PERFGATE_RELEASE would rename runs)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PERFGATE_")}


# -- targets ------------------------------------------------------------------------------------


@contextlib.contextmanager
def exchange(config: dict[str, Any], *, timeout_s: float = 30.0) -> Iterator[tuple[str, int]]:
    """The reference exchange on 127.0.0.1, a free port; yields (base URL, pid)."""
    cmd = (
        sys.executable,
        "-m",
        "perfgate.exchange",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--exit-with-parent",
        "--config-json",
        json.dumps(config),
    )
    proc = spawn(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if msg.get("event") == "listening":
                    url = str(msg["url"])
        if url is None:
            raise RuntimeError(f"the exchange did not start (exit {proc.poll()})")
        yield url, proc.pid
    finally:
        stop(proc)


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = / {{ default_type application/json; return 200 '{{"ok":true,"n":1}}'; }}
        location = /nginx_status {{ stub_status; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Debian's nginx (``apt-get install -y nginx-light``), or None."""
    for path in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


@contextlib.contextmanager
def nginx(*, timeout_s: float = 10.0) -> Iterator[tuple[str, int]]:
    """nginx (1 worker, access log off, stub_status) on 127.0.0.1; yields (base URL, pid)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx not found: apt-get install -y nginx-light")
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port), encoding="utf-8")
        proc = spawn(
            (binary, "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    nginx_requests(url)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log = Path(tmp, "error.log")
                        why = log.read_text()[-300:] if log.exists() else ""
                        raise RuntimeError(f"nginx did not start: {why}") from None
                    time.sleep(0.05)
            yield url, proc.pid
        finally:
            stop(proc)


def nginx_requests(url: str) -> int:
    """nginx's request counter (stub_status), this poll included."""
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2) as s:
        s.sendall(b"GET /nginx_status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    # "... server accepts handled requests\n 1 1 1\n" - the third number is requests
    lines = data.decode().split("\r\n\r\n", 1)[1].splitlines()
    return int(lines[2].split()[2])


def exchange_requests(url: str) -> int:
    """The exchange's request counter (GET /health's stats.requests), this poll included."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    body = data.decode().split("\r\n\r\n", 1)[1]
    return int(json.loads(body)["stats"]["requests"])


# -- CPU and memory of process trees ------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants that are alive now."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    """user + system CPU seconds of each process (pid → s); gone processes are left out."""
    out: dict[int, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(total, busiest process) CPU seconds between two snapshots of the same processes."""
    deltas = [after[pid] - before[pid] for pid in before if pid in after]
    return sum(deltas), max(deltas, default=0.0)


def system_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# -- noise control ------------------------------------------------------------------------------


def wait_idle(
    *,
    timeout_s: float,
    busy_pct: float = IDLE_BUSY_PCT,
    hold_s: float = IDLE_HOLD_S,
    log: bool = True,
) -> dict[str, Any]:
    """Wait until the machine's CPU stays below ``busy_pct`` % for ``hold_s`` s (or timeout).

    Returns what happened, for the JSON record: waited seconds, whether it got idle, the last
    busy % and the load average. It never fails: a machine that never gets quiet is recorded.
    """
    t0 = time.monotonic()
    quiet_since: float | None = None
    last = psutil.cpu_percent(interval=None)
    idle = False
    while True:
        last = psutil.cpu_percent(interval=0.5)
        now = time.monotonic()
        if last < busy_pct:
            quiet_since = quiet_since if quiet_since is not None else now - 0.5
            if now - quiet_since >= hold_s:
                idle = True
                break
        else:
            quiet_since = None
        if now - t0 >= timeout_s:
            break
    waited = time.monotonic() - t0
    if log and not idle:
        note(f"machine not idle after {waited:.0f} s (CPU {last:.0f} %): measuring anyway")
    return {
        "waited_s": round(waited, 1),
        "idle": idle,
        "busy_pct": round(last, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# -- scenarios, perfgate runs -------------------------------------------------------------------


def write_scenario(path: Path, data: dict[str, Any]) -> Path:
    """Write a scenario dict as YAML."""
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def single_get_scenario(
    *,
    name: str,
    path: str,
    ramp: dict[str, Any],
    slo_p95_ms: float,
    workers: int = 1,
) -> dict[str, Any]:
    """One GET, weight 1, no think time, on an existing target (``--target``)."""
    return {
        "name": name,
        "description": "benchmark: one GET, closed model, no think time",
        "staging": {"provider": "none"},
        "users": {"wait": 0, "requests": [{"name": "get", "method": "GET", "path": path}]},
        "ramp": ramp,
        "slo": {"p95_ms": slo_p95_ms, "error_rate": 0.01},
        "gate": {"max_regression": 0.10},
        "load": {"workers": workers},
    }


def default_scenario() -> dict[str, Any]:
    """scenarios/exchange.yaml as a dict (the realistic default mix)."""
    data: dict[str, Any] = yaml.safe_load((REPO / "scenarios" / "exchange.yaml").read_text())
    return data


def parse_result(stdout: str) -> dict[str, Any] | None:
    """result.json as printed by ``--json`` (None when the run printed none)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")  # tolerate stray lines before the JSON
        try:
            data = json.loads(text[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            return None
    return data or None


def last_lines(text: str, n: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


def load_seconds(result: dict[str, Any]) -> float | None:
    """Seconds from the run's start to the end of its last measuring window (load time)."""
    steps = result.get("steps") or []
    ends = [s.get("started_s", 0.0) + s.get("duration_s", 0.0) for s in steps]
    return round(max(ends), 2) if ends else None


# -- output -------------------------------------------------------------------------------------


def note(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(value: float | None, digits: int = 0, *, pct: bool = False, sign: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{value * 100:+.{digits}f} %" if sign else f"{value * 100:.{digits}f} %"
    return f"{value:+,.{digits}f}" if sign else f"{value:,.{digits}f}"


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """``median (min–max)`` of the values, or – when there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    mid, lo, hi = statistics.median(vals), min(vals), max(vals)
    return f"{fmt(mid, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (cells are str()'d)."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    commit = subprocess.run(
        ("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("perfgate", "locust"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "host_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        **versions,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@dataclass(slots=True, kw_only=True)
class Report:
    """The JSON record one benchmark writes to benchmarks/results/<name>.json."""

    name: str
    quick: bool
    params: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def write(self, markdown: str) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}{'-quick' if self.quick else ''}.json"
        payload = {
            "benchmark": self.name,
            "quick": self.quick,
            "machine": machine(),
            "params": self.params,
            **self.data,
            "markdown": markdown,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def idle_timeout(value: float | None, quick: bool, real_s: float = 300.0) -> float:
    """The idle wait cap: as given, else 5 s for --quick (the machine is shared) or ``real_s``."""
    if value is not None:
        return value
    return 5.0 if quick else real_s
