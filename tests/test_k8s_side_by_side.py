"""``perfgate run --staging kubernetes`` side by side, through the real CLI, against the API fake.

The previous release is staged from the recipe its baseline recorded (docs/kubernetes.md,
section 9): its own namespace, its own image. The fake (tests/fakekube.py) serves every image
from a loopback HTTP server of its own (``FakeKube.image_ports``), as a cluster runs the image a
pod names, so a slower candidate image is really slower and a broken previous image really fails.
The Services have no nodePort, so the load reaches each namespace's pod by perfgate's
port-forward through the fake. The baseline is recorded the way users record it: a first
``perfgate run --promote`` of ``v1``.

Each run: 2 and 4 users, 1 s steps, 1.5 s windows and a one-minute budget (about 20 s).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from perfgate import baseline
from perfgate.errors import EXIT_BLOCK, EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_INPUT, EXIT_PASS
from perfgate.scenario import load_scenario
from perfgate.staging import StagingOptions, provision

try:
    from fakekube import FakeKube
except ImportError:  # pragma: no cover - when run as a package
    from tests.fakekube import FakeKube

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_NAME = "sbs"
IMAGE = "example.test/web:{release}"  # what staging.kubernetes.image renders to per release
FAST_S = 0.04  # seconds a release at full speed takes per request (the tunnel adds its own)

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: {{ replicas }}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, release: "{{ release }}"}}
    spec:
      containers:
        - name: web
          image: "{{ image }}"
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: http}]
"""

# A p95 SLO of 5 s never breaks: the windows run at max_users (4), where each build's goodput is
# users / its latency. The gate's floor (min_users 1) always holds.
SCENARIO = """\
name: sbs
staging:
  provider: kubernetes
  kubernetes:
    manifests: [app.yaml]
    service: web
    port: 8080
    image: "example.test/web:{{ release }}"
    ready_timeout_s: 20
    variables: {replicas: 1}
users:
  requests:
    - {name: root, method: GET, path: /}
ramp: {start_users: 2, step_users: 2, max_users: 4, step_seconds: 1, settle_seconds: 0.25,
       min_samples: 0}
slo: {p95_ms: 5000, error_rate: 0.5}
gate: {min_users: 1, budget_minutes: 1}
"""


# ---------------------------------------------------------------------------------------------
# what the images serve, the cluster, the CLI
# ---------------------------------------------------------------------------------------------


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (an interrupted run) is not news."""


class Release:
    """What one image serves on 127.0.0.1: every request after ``delay_s``, with ``status``."""

    def __init__(self, delay_s: float = FAST_S, status: int = 200) -> None:
        self.delay_s, self.status, self.requests = delay_s, status, 0
        lock = threading.Lock()
        release = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                time.sleep(release.delay_s)
                with lock:
                    release.requests += 1
                body = b'{"ok": true}\n'
                self.send_response(release.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.httpd = _Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Cluster:
    """The fake API server and the releases its images serve."""

    fake: FakeKube
    folder: Path
    releases: dict[str, Release] = field(default_factory=dict)

    def serve(self, release: str, **how: Any) -> Release:
        served = self.releases[release] = Release(**how)
        self.fake.image_ports[IMAGE.format(release=release)] = served.port
        return served

    def created(self, qualified: str) -> list[dict[str, Any]]:
        """Every object of that type created during the test (the fake's event log)."""
        with self.fake.cond:
            return [
                obj for _, kind, q, obj in self.fake.events if kind == "ADDED" and q == qualified
            ]

    def namespaces(self) -> dict[str, str]:
        """release label → namespace, for every namespace created."""
        return {
            ns["metadata"]["labels"]["perfgate.dev/release"]: ns["metadata"]["name"]
            for ns in self.created("namespaces")
        }

    def images(self) -> dict[str, str]:
        """namespace → the image of its Deployment."""
        return {
            d["metadata"]["namespace"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
            for d in self.created("deployments.apps")
        }

    def images_served(self) -> dict[str, set[str]]:
        """namespace → every image its Deployment had (a cross-over swaps them)."""
        served: dict[str, set[str]] = {}
        with self.fake.cond:
            for _, _, q, obj in self.fake.events:
                if q == "deployments.apps":
                    image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
                    served.setdefault(obj["metadata"]["namespace"], set()).add(image)
        return served

    def namespace_writes(self) -> list[tuple[str, str]]:
        """(method, name) of every namespace create and delete that succeeded, in order."""
        with self.fake.cond:
            return [
                (r.method, r.name)
                for r in self.fake.requests
                if r.resource == "namespaces" and r.method in ("POST", "DELETE") and r.status < 300
            ]

    def all_deleted(self) -> bool:
        """No namespace left; perfgate asked to delete each one it created."""
        deleted = {name for method, name in self.namespace_writes() if method == "DELETE"}
        created = set(self.namespaces().values())
        return self.fake.wait_for(lambda: self.fake.names("Namespace") == [], 2.0) and (
            created <= deleted
        )


@pytest.fixture
def cluster(tmp_path: Path, recorded_v1: Path) -> Iterator[Cluster]:
    """A fresh fake with the scenario and v1's baseline (as recorded) in ``tmp_path``."""
    (tmp_path / "home").mkdir()
    for name in ("app.yaml", "sbs.yaml"):
        shutil.copyfile(recorded_v1 / name, tmp_path / name)
    shutil.copytree(recorded_v1 / "baselines", tmp_path / "baselines")
    with FakeKube(ready_delay_s=0.05, delete_delay_s=0.05) as fake:
        fake.write_kubeconfig(tmp_path / "kubeconfig")
        handle = Cluster(fake=fake, folder=tmp_path)
        try:
            yield handle
        finally:
            for served in handle.releases.values():
                served.close()


class Cli:
    """``python -m perfgate run`` in a subprocess; its stderr collected line by line."""

    def __init__(self, folder: Path, release: str, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.update(HOME=str(folder / "home"), PYTHONPATH=str(ROOT))
        env.pop("PERFGATE_DEBUG", None)
        args = [
            "run", "--scenario", str(folder / "sbs.yaml"), "--staging", "kubernetes",
            "--kubeconfig", str(folder / "kubeconfig"), "--release", release, "--seed", "1",
            "--baseline-dir", str(folder / "baselines"), "--report-dir", str(folder / "reports"),
            *extra,
        ]  # fmt: skip
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perfgate", *args],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, needle: str, timeout_s: float = 40.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if needle in line), None)
            if found is not None:
                return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {needle!r} in:\n{self.text}")

    def finish(self, timeout_s: float = 55.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def result_of(folder: Path) -> dict[str, Any]:
    (path,) = (folder / "reports" / SCENARIO_NAME).glob("*/result.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def window_builds(result: dict[str, Any]) -> set[str]:
    return {w["build"] for w in result["windows"]}


# ---------------------------------------------------------------------------------------------
# the baseline of v1, recorded once by `perfgate run --promote` on the fake
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with app.yaml, sbs.yaml and baselines/ holding v1's baseline and recipe."""
    folder = tmp_path_factory.mktemp("recorded")
    (folder / "home").mkdir()
    (folder / "app.yaml").write_text(APP, encoding="utf-8")
    (folder / "sbs.yaml").write_text(SCENARIO, encoding="utf-8")
    with FakeKube(ready_delay_s=0.05, delete_delay_s=0.05) as fake:
        fake.write_kubeconfig(folder / "kubeconfig")
        cluster = Cluster(fake=fake, folder=folder)
        cluster.serve("v1")
        try:
            cli = Cli(folder, "v1", "--promote")
            code = cli.finish()
        finally:
            cluster.releases["v1"].close()
        assert code == EXIT_PASS, cli.text
        assert cluster.all_deleted(), cli.text
    stored = baseline.previous_baseline(folder / "baselines", SCENARIO_NAME, "v2")
    assert stored is not None and stored.release == "v1"
    assert stored.recipe["image"] == "example.test/web:v1", stored.recipe
    return folder


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_side_by_side_stages_v1_from_its_recipe_and_deletes_both_namespaces(
    cluster: Cluster,
) -> None:
    v1, v2 = cluster.serve("v1"), cluster.serve("v2")
    cli = Cli(cluster.folder, "v2")
    code = cli.finish()
    assert code == EXIT_PASS, cli.text
    namespaces = cluster.namespaces()
    assert set(namespaces) == {"v1", "v2"}, namespaces
    assert cluster.images() == {
        namespaces["v1"]: "example.test/web:v1",
        namespaces["v2"]: "example.test/web:v2",
    }
    assert v1.requests > 0 and v2.requests > 0, "the load reached both releases"
    result = result_of(cluster.folder)
    assert result["verdict"] == "pass", result["reasons"]
    assert result["baseline"]["release"] == "v1"
    assert result["baseline"]["mode"] == "side-by-side"
    assert window_builds(result) == {"candidate", "baseline"}
    assert result["staging_recipe"]["image"] == "example.test/web:v2"
    # the cross-over: each namespace served both images, and the windows saw both arrangements
    both = {"example.test/web:v1", "example.test/web:v2"}
    assert cluster.images_served() == {namespaces["v1"]: both, namespaces["v2"]: both}
    assert {w["arrangement"] for w in result["windows"]} == {1, -1}
    assert "cross-over" in next(r for r in result["rules"] if r["name"] == "regression")["message"]
    assert cluster.all_deleted(), cli.text
    # both up at once, then the inner one (the previous release) deleted first
    assert [m for m, _ in cluster.namespace_writes()] == ["POST", "POST", "DELETE", "DELETE"]
    deleted = [name for m, name in cluster.namespace_writes() if m == "DELETE"]
    assert deleted == [namespaces["v1"], namespaces["v2"]]
    assert "Traceback" not in cli.text


@pytest.mark.slow
def test_both_releases_resources_meet_by_workload_though_their_pods_are_named_apart(
    cluster: Cluster,
) -> None:
    """Each namespace's pods have their own names (another template hash per image, another
    random suffix); the report still overlays v1's curve on v2's (docs/attribution.md)."""
    cluster.serve("v1"), cluster.serve("v2")
    cli = Cli(cluster.folder, "v2")
    assert cli.finish() == EXIT_PASS, cli.text
    result = result_of(cluster.folder)
    assert result["baseline"]["mode"] == "side-by-side"

    def measured(steps: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
        readings = [r for s in steps for r in (s["resources"] or {}).get("readings", ())]
        return {r["name"] for r in readings}, {r["pod"] for r in readings}

    names, pods = measured(result["steps"])
    base_names, base_pods = measured(result["baseline_steps"])
    assert names == base_names == {"container web/web CPU", "container web/web memory"}
    assert pods and base_pods and all(p.startswith("web-") for p in pods | base_pods)
    assert pods != base_pods, (pods, base_pods)
    (run_dir,) = (cluster.folder / "reports" / SCENARIO_NAME).glob("*/")
    html = (run_dir / "index.html").read_text(encoding="utf-8")
    why = html[html.index('id="why"') : html.index('class="toc"')]
    assert "baseline v1" in why  # the overlay: drawn only where v1's series was found
    assert cluster.all_deleted(), cli.text


@pytest.mark.slow
def test_a_slower_candidate_image_is_blocked_side_by_side(cluster: Cluster) -> None:
    cluster.serve("v1")
    cluster.serve("v2", delay_s=3 * FAST_S)  # the same manifests, a slower build
    cli = Cli(cluster.folder, "v2")
    assert cli.finish() == EXIT_BLOCK, cli.text
    result = result_of(cluster.folder)
    assert result["verdict"] == "block"
    assert result["baseline"]["mode"] == "side-by-side"
    assert window_builds(result) == {"candidate", "baseline"}
    regression = next(r for r in result["rules"] if r["name"] == "regression")
    assert regression["outcome"] == "fail" and regression["value"] < 0.8, regression
    assert set(cluster.namespaces()) == {"v1", "v2"}
    assert cluster.all_deleted(), cli.text


@pytest.mark.slow
def test_an_unpullable_previous_image_falls_back_to_the_stored_numbers(cluster: Cluster) -> None:
    cluster.fake.broken_images.add("example.test/web:v1")  # gone from the registry
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2")
    code = cli.finish()
    assert code in (EXIT_PASS, EXIT_BLOCK, EXIT_INCONCLUSIVE), cli.text
    result = result_of(cluster.folder)
    assert result["baseline"]["mode"] == "stored"
    assert window_builds(result) <= {"candidate"}
    fallback = result["reasons"][0]
    assert fallback.startswith("baseline: the previous release v1 could not be staged"), fallback
    assert "image example.test/web:v1 cannot be pulled" in fallback
    assert fallback.endswith("judged against its stored numbers"), fallback
    namespaces = cluster.namespaces()
    assert set(namespaces) == {"v1", "v2"}, "it was tried, in its own namespace"
    assert cluster.all_deleted(), cli.text
    assert cluster.namespace_writes()[2] == ("DELETE", namespaces["v1"]), "v1's went at once"
    assert "Traceback" not in cli.text


@pytest.mark.slow
def test_a_load_failure_after_staging_exits_3_and_deletes_both_namespaces(
    cluster: Cluster,
) -> None:
    cluster.serve("v1", status=503)  # staged and ready, but it answers nothing useful
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2")
    assert cli.finish() == EXIT_INFRA, cli.text
    error = cli.wait_for_line("perfgate: error:")
    assert "the previous release completed no request" in error, error
    result = result_of(cluster.folder)
    assert result["aborted"] is True and result["verdict"] == "inconclusive"
    assert result["steps"], "what was measured is kept"
    assert set(cluster.namespaces()) == {"v1", "v2"}
    assert cluster.all_deleted(), cli.text
    assert "Traceback" not in cli.text


def _load_engines(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _all_gone(procs: list[psutil.Process], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize(("how", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_windows_run_deletes_both_namespaces(
    cluster: Cluster, how: str, code: int
) -> None:
    cluster.serve("v1")
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2")
    cli.wait_for_line("window   1 baseline")
    engines = _load_engines(cli.proc.pid)
    assert len(engines) >= 2, "one load engine per build"
    assert len(cluster.fake.names("Namespace")) == 2
    cli.proc.send_signal(getattr(signal, how))
    assert cli.finish() == code, cli.text
    assert f"interrupted by {how}" in cli.text
    result = result_of(cluster.folder)
    assert result["aborted"] is True and result["verdict"] == "inconclusive"
    assert result["baseline"]["mode"] == "side-by-side"
    assert window_builds(result) == {"candidate", "baseline"}, "the windows so far are kept"
    assert cluster.all_deleted(), cli.text
    assert _all_gone(engines), "load engines left behind"
    assert "Traceback" not in cli.text


@pytest.mark.parametrize(("how", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_the_previous_release_is_staged_deletes_both_namespaces(
    cluster: Cluster, how: str, code: int
) -> None:
    cluster.fake.ready_delay_s = 1.0  # pods take a second to start: the signal lands in the wait
    cluster.serve("v1")
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2")
    cli.wait_for_line("of release v1 from its recipe")
    cli.proc.send_signal(getattr(signal, how))
    assert cli.finish() == code, cli.text
    assert f"interrupted by {how}" in cli.text
    assert set(cluster.namespaces()) == {"v1", "v2"}
    assert cluster.all_deleted(), cli.text
    assert cluster.releases["v1"].requests == 0
    assert result_of(cluster.folder)["aborted"] is True
    assert "Traceback" not in cli.text


@pytest.mark.slow
def test_no_side_by_side_stages_the_candidate_only(cluster: Cluster) -> None:
    cluster.serve("v1")
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2", "--no-side-by-side")
    assert cli.finish() in (EXIT_PASS, EXIT_BLOCK, EXIT_INCONCLUSIVE), cli.text
    assert set(cluster.namespaces()) == {"v2"}
    assert cluster.releases["v1"].requests == 0
    result = result_of(cluster.folder)
    assert result["baseline"]["release"] == "v1"
    assert result["baseline"]["mode"] == "stored"
    assert window_builds(result) <= {"candidate"}
    assert cluster.all_deleted(), cli.text


@pytest.mark.slow
def test_baseline_image_stages_the_previous_release_from_that_image(cluster: Cluster) -> None:
    cluster.serve("v1")
    rebuilt = cluster.serve("v1-rebuilt")
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2", "--baseline-image", "example.test/web:v1-rebuilt")
    assert cli.finish() in (EXIT_PASS, EXIT_INCONCLUSIVE), cli.text
    namespaces = cluster.namespaces()
    assert set(namespaces) == {"v1", "v2"}, namespaces
    assert cluster.images()[namespaces["v1"]] == "example.test/web:v1-rebuilt"
    assert rebuilt.requests > 0 and cluster.releases["v1"].requests == 0
    result = result_of(cluster.folder)
    assert result["baseline"]["mode"] == "side-by-side"
    assert window_builds(result) == {"candidate", "baseline"}
    assert cluster.all_deleted(), cli.text


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ((), "no baseline of this scenario is stored"),
        (("--no-side-by-side",), "it contradicts --no-side-by-side"),
        (("--baseline-target", "http://127.0.0.1:9"), "it contradicts --baseline-target"),
        (("--staging", "embedded"), "it needs --staging kubernetes (staging here: embedded)"),
    ],
)
def test_a_baseline_image_that_would_be_ignored_is_refused_before_any_request(
    cluster: Cluster, extra: tuple[str, ...], why: str
) -> None:
    """Not a pass with no comparison: the user asked to compare with that image."""
    if not extra:
        shutil.rmtree(cluster.folder / "baselines")
    cluster.serve("v2")
    cli = Cli(cluster.folder, "v2", "--baseline-image", "example.test/web:v0", *extra)
    assert cli.finish() == EXIT_INPUT, cli.text
    error = cli.wait_for_line("perfgate: error:")
    assert error.startswith("perfgate: error: --baseline-image example.test/web:v0: "), error
    assert why in error, error
    assert cluster.fake.requests == [], "refused before anything reached the cluster"
    assert not (cluster.folder / "reports").exists()


def test_the_port_forward_measures_the_release_not_a_delayed_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response written in two parts (headers, body) crosses the tunnel in two frames; without
    TCP_NODELAY on perfgate's local end, Nagle held the second for the client's delayed ACK
    (40 ms): p95 52 ms for a 5 ms service, and noisy windows."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "app.yaml").write_text(APP, encoding="utf-8")
    (tmp_path / "sbs.yaml").write_text(SCENARIO, encoding="utf-8")
    scen = load_scenario(tmp_path / "sbs.yaml")
    with FakeKube(ready_delay_s=0.05, delete_delay_s=0.05) as fake:
        fake.write_kubeconfig(tmp_path / "kubeconfig")
        cluster = Cluster(fake=fake, folder=tmp_path)
        cluster.serve("v9", delay_s=0.005)
        options = StagingOptions(
            release="v9", run_id="pf1", kubeconfig=str(tmp_path / "kubeconfig"), log=print
        )
        try:
            with provision(scen, options=options) as staged:
                assert staged.details.get("endpoint") == "port-forward", staged.details
                seconds = _sequential_gets(staged.url, 100)
        finally:
            cluster.releases["v9"].close()
    p95_ms = 1000 * sorted(seconds)[94]
    assert p95_ms < 30, f"p95 {p95_ms:.0f} ms through the tunnel for a 5 ms service"


def _sequential_gets(url: str, n: int) -> list[float]:
    """Seconds per GET, one keep-alive connection (as a Locust user has)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    seconds = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            seconds.append(time.perf_counter() - started)
    finally:
        conn.close()
    return seconds
