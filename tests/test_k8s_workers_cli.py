"""``perfgate run`` with ``load.placement: kubernetes``, end to end through the CLI.

In-process (``perfgate.cli._main``) against the fake API server (tests/fakekube.py); its
:class:`LocalKubelet` runs the load-generator pods' own command lines on 127.0.0.1 (the pods'
fixed ports rewritten to free local ones), so the whole path is real: scenario file, kubernetes
staging, master and worker Deployments, port-forward to the master, relay, load on a loopback
target, report, teardown of the namespace.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from perfgate.cli import _main
from perfgate.load.pods import load_commands
from perfgate.load.protocol import CONTROL_PORT, MASTER_PORT
from perfgate.staging.kubernetes import timing as kube_timing

try:
    from fakekube import FakeKube, LocalKubelet
except ImportError:  # pragma: no cover - when run as a package
    from tests.fakekube import FakeKube, LocalKubelet

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "registry.test/perfgate:1"
SELECTOR = {"app.kubernetes.io/component": "load-generator"}

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "{{ image }}", ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080}]
"""

# two levels of 2 and 4 users, one second each; a p95 of 5 s never breaks on a 5 ms target
SCENARIO = """\
name: podload
staging:
  provider: kubernetes
  kubernetes:
    manifests: [{manifests}]
    service: web
    port: 8080
    url: {url}
    image: example.test/web:1
    ready_timeout_s: 30
users:
  requests:
    - {{name: user, path: "/u/{{{{ user_index }}}}"}}
ramp: {{start_users: 2, step_users: 2, max_users: 4, step_seconds: 1}}
slo: {{p95_ms: 5000, error_rate: 0.5}}
load: {{placement: kubernetes, worker_image: "{image}", workers: 2}}
"""


@pytest.fixture(autouse=True)
def quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = kube_timing.Timing(
        poll_min_s=0.02,
        poll_max_s=0.1,
        heartbeat_s=1.0,
        delete_wait_s=3.0,
        interrupted_delete_wait_s=3.0,
        probe_timeout_s=0.5,
    )
    monkeypatch.setattr(kube_timing, "TIMING", timing)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "GITHUB_STEP_SUMMARY", "PERFGATE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    with FakeKube(ready_delay_s=0.05, delete_delay_s=0.05) as server:
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server


class Seen:
    """What the loopback target received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.users: set[int] = set()
        self.client_pids: set[int | None] = set()  # which processes opened connections to it


def owner_pid(client_port: int) -> int | None:
    """The local process whose TCP socket has ``client_port`` (the client of a loopback request)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == client_port and conn.pid is not None:
            return int(conn.pid)
    return None


@pytest.fixture
def target() -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def setup(self) -> None:
            super().setup()
            pid = owner_pid(int(self.client_address[1]))  # once per connection (keep-alive)
            with seen.lock:
                seen.client_pids.add(pid)

        def do_GET(self) -> None:
            time.sleep(0.005)
            with seen.lock:
                seen.requests += 1
                if self.path.startswith("/u/"):
                    seen.users.add(int(self.path.rsplit("/", 1)[1]))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPorts:
    """Where the pods' fixed ports (5557, 5558) are on this machine."""

    def __init__(self) -> None:
        self.zmq = free_port()
        self.control = free_port()

    def rewrite(self, command: list[str]) -> list[str]:
        """A pod's command for 127.0.0.1: same flags, local ports, short timeouts."""
        out = [
            {
                "perfgate-locust-master": "127.0.0.1",
                str(MASTER_PORT): str(self.zmq),
                str(CONTROL_PORT): str(self.control),
            }.get(arg, arg)
            for arg in command
        ]
        if "--master" in out:
            out += ["--bind", "127.0.0.1"]
        else:
            out += ["--master-timeout", "2"]
        return out


def write_scenario(tmp_path: Path, url: str) -> Path:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(APP, encoding="utf-8")
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(manifests=manifests, url=url, image=IMAGE), encoding="utf-8")
    return path


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def load_processes() -> list[psutil.Process]:
    """This test process's descendants that are load engines or relays (should be none)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            line = " ".join(child.cmdline())
            if child.status() != psutil.STATUS_ZOMBIE and "perfgate.load." in line:
                found.append(child)
    return found


def test_run_with_pod_load_generators_end_to_end(
    tmp_path: Path,
    fake: FakeKube,
    target: tuple[str, Seen],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = target
    scenario = write_scenario(tmp_path, url)
    ports = LocalPorts()
    fake.port_map.update({MASTER_PORT: ports.zmq, CONTROL_PORT: ports.control})
    (tmp_path / "pods").mkdir()
    kubelet = LocalKubelet(
        fake,
        tmp_path / "pods",
        selector=SELECTOR,
        rewrite=lambda _pod, command: ports.rewrite(command),
        env={"PYTHONPATH": str(ROOT)},
    )
    reports = tmp_path / "reports"
    before = fake.names("Namespace")
    try:
        with kubelet:
            code = _main(
                [
                    "run",
                    "--scenario",
                    str(scenario),
                    "--kubeconfig",
                    str(tmp_path / "kubeconfig"),
                    "--release",
                    "v1",
                    "--report-dir",
                    str(reports),
                    "--baseline-dir",
                    str(tmp_path / "baselines"),
                ]
            )
            procs = dict(kubelet.procs)
            worker_pids = {p.pid for name, p in procs.items() if "-worker-" in name}
            # the runner's quit reached the master, the master's quit the workers: all exit alone
            codes = {name: wait_exit(proc, 10.0) for name, proc in procs.items()}
            commands = dict(kubelet.commands)
    finally:
        pod_logs = kubelet.logs()
    err = capsys.readouterr().err
    assert code in (0, 1, 4), f"exit {code}\n{err}\n{pod_logs}"
    assert sorted(commands.values()) == sorted(
        [load_commands()["master"]] + [load_commands()["worker"]] * 2
    ), "one master and two worker pods ran"
    assert list(codes.values()) == [0, 0, 0], f"{codes}\n{pod_logs}"
    (result_path,) = reports.rglob("result.json")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    assert [s["users"] for s in result["steps"]] == [2, 4]
    assert all(s["requests"] > 0 for s in result["steps"]), result["steps"]
    assert result["generator"]["workers"] == 2
    with seen.lock:
        assert seen.requests >= sum(s["requests"] for s in result["steps"]) > 0
        assert seen.users == {0, 1, 2, 3}  # user_index unique across the two worker pods
        # the load came from the two worker pods' processes, and from nothing else
        assert len(worker_pids) == 2 and seen.client_pids == worker_pids, seen.client_pids
    assert fake.wait_for(lambda: fake.names("Namespace") == before), (
        "the staging namespace (with the load generators) is deleted"
    )
    with fake.cond:
        left = [key for key in fake.objects if key[1] and key[1] not in before]
    assert left == [], "no object of the run is left"
    assert load_processes() == []


def test_baseline_target_refuses_pod_load_generators(
    tmp_path: Path,
    fake: FakeKube,
    target: tuple[str, Seen],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = target
    scenario = write_scenario(tmp_path, url)
    code = _main(
        [
            "run",
            "--scenario",
            str(scenario),
            "--kubeconfig",
            str(tmp_path / "kubeconfig"),
            "--release",
            "v1",
            "--report-dir",
            str(tmp_path / "reports"),
            "--baseline-dir",
            str(tmp_path / "baselines"),
            "--baseline-target",
            "http://127.0.0.1:1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "load.placement" in err, err
    assert "--baseline-target" in err
    assert fake.writes() == [], "refused before any cluster request"
    assert seen.requests == 0
    assert not (tmp_path / "reports").exists()
