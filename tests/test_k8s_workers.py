"""Locust workers as pods in the staging namespace (``load.placement: kubernetes``).

The Kubernetes side runs against the project's fake API server (tests/fakekube.py): which objects
are created, where, with what, that readiness covers them and that they go with the namespace.
The load side runs the pods' own command lines (``--master``/``--worker … --config FILE``) as
local processes on 127.0.0.1, either started by :class:`fakekube.LocalKubelet` from the fake's
Deployments (the whole path: port-forward to the master, relay, real load) or directly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from perfgate.errors import InputError, LoadError, ScenarioError, StagingError
from perfgate.load import protocol
from perfgate.load.pods import (
    LOAD_MASTER_NAME,
    LOAD_NAME_PREFIX,
    load_commands,
    load_generator_documents,
)
from perfgate.load.protocol import CONTROL_PORT, MASTER_PORT
from perfgate.load.runner import LocustRunner, pod_files, relay_command
from perfgate.models import (
    GateSpec,
    KubernetesSpec,
    LoadSpec,
    RampSpec,
    RequestSpec,
    Scenario,
    Slo,
    StagingSpec,
    UsersSpec,
    from_jsonable,
    to_jsonable,
)
from perfgate.scenario import parse_scenario
from perfgate.staging import StagedTarget, StagingOptions, load_generators
from perfgate.staging.kubernetes import provision_kubernetes
from perfgate.staging.kubernetes import timing as kube_timing
from perfgate.staging.manifests import RenderedDoc, check_documents

try:
    from fakekube import FakeKube, LocalKubelet
except ImportError:  # pragma: no cover - when run as a package
    from tests.fakekube import FakeKube, LocalKubelet

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "registry.test/perfgate:1"
TOKEN = "s3cr3t-token-value"  # from ${API_TOKEN}: a scenario secret
KEY = "k3y-9f8e7d"  # a request header value
SLO = Slo(p95_ms=500.0, error_rate=0.5)
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


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


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
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    with FakeKube(ready_delay_s=0.05, delete_delay_s=0.05) as server:
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server


class Target:
    """The system under test: records the Authorization header and body of each request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.auth: set[str | None] = set()
        self.keys: set[str | None] = set()
        self.users: set[int] = set()


@pytest.fixture
def target() -> Iterator[tuple[str, Target]]:
    seen = Target()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_GET(self) -> None:
            time.sleep(0.005)
            with seen.lock:
                seen.auth.add(self.headers.get("Authorization"))
                seen.keys.add(self.headers.get("X-Api-Key"))
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


def users_spec() -> UsersSpec:
    return UsersSpec(
        requests=(
            RequestSpec(name="user", path="/u/{{ user_index }}", weight=2),
            RequestSpec(name="keyed", path="/k", headers={"X-Api-Key": KEY}),
        ),
        headers={"Authorization": f"Bearer {TOKEN}"},
        secret_values=(TOKEN,),
    )


def k8s_scenario(
    tmp_path: Path,
    *,
    url: str | None = None,
    workers: int = 2,
    text: str = APP,
    ready_timeout_s: float = 5.0,
) -> Scenario:
    manifest = tmp_path / "manifests" / "app.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(text, encoding="utf-8")
    spec = KubernetesSpec(
        manifests=(str(manifest.parent),),
        service="web",
        port=8080,
        url=url,
        image="example.test/web:1",
        ready_timeout_s=ready_timeout_s,
    )
    return Scenario(
        name="web",
        path=str(tmp_path / "scenario.yaml"),
        content_hash="x",
        staging=StagingSpec(provider="kubernetes", kubernetes=spec),
        users=users_spec(),
        ramp=RampSpec(),
        slo=SLO,
        gate=GateSpec(),
        load=LoadSpec(workers=workers, placement="kubernetes", worker_image=IMAGE),
    )


def staging_options(tmp_path: Path, logs: list[str], **kw: Any) -> StagingOptions:
    """Options as the pipeline gives them with load.placement kubernetes."""
    return StagingOptions(
        release="v1",
        run_id=uuid.uuid4().hex[:6],
        kubeconfig=str(tmp_path / "kubeconfig"),
        log=logs.append,
        reserved_prefix=LOAD_NAME_PREFIX,
        **kw,
    )


def generators(
    scen: Scenario,
    staged: StagedTarget,
    options: StagingOptions,
    files: dict[str, str] | None = None,
    secret_files: dict[str, str] | None = None,
) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """The pipeline's wiring: the load stage builds the objects, staging applies them."""
    if files is None or secret_files is None:
        files, secret_files = pod_files(staged.url, scen.users, scen.slo, scen.load)
    documents = load_generator_documents(scen.load, files=files, secret_files=secret_files)
    return load_generators(
        scen, staged, options, documents=documents, master=(LOAD_MASTER_NAME, CONTROL_PORT)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPorts:
    """Where the pods' fixed ports (5557, 5558) are on this machine."""

    def __init__(self, *, connect_timeout_s: float | None = None) -> None:
        self.zmq = free_port()
        self.control = free_port()
        self.connect_timeout_s = connect_timeout_s

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
            if self.connect_timeout_s is not None:
                out += ["--connect-timeout", str(self.connect_timeout_s)]
        else:
            out += ["--master-timeout", "2"]
        return out


def run_pod_commands(
    folder: Path,
    files: dict[str, str],
    secret_files: dict[str, str],
    ports: LocalPorts,
    *,
    workers: int,
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """Start the master and workers with the pods' commands (files as the volume holds them)."""
    mount = folder / "load"
    mount.mkdir(parents=True)
    for name, text in {**files, **secret_files}.items():
        (mount / name).write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(role: str, i: int) -> subprocess.Popen[bytes]:
        command = [
            sys.executable if a == "python" else a.replace("/etc/perfgate/load", str(mount))
            for a in ports.rewrite(load_commands()[role])
        ]
        log = (folder / f"{role}-{i}.log").open("wb")
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    master = start("master", 0)
    return master, [start("worker", i) for i in range(workers)]


def kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


@contextlib.contextmanager
def listening(port: int) -> Iterator[None]:
    """Something that accepts connections on 127.0.0.1:port (a pod port, for probes)."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def in_cluster_runner(
    scen: Scenario, staged: StagedTarget, options: StagingOptions
) -> contextlib.AbstractContextManager[LocustRunner]:
    """The pipeline's wiring for ``load.placement: kubernetes`` (docs/kubernetes.md)."""

    @contextlib.contextmanager
    def run() -> Iterator[LocustRunner]:
        with (
            generators(scen, staged, options) as (host, port),
            LocustRunner(
                staged.url,
                scen.users,
                scen.slo,
                scen.load,
                engine_command=relay_command(host, port),
            ) as runner,
        ):
            yield runner

    return run()


# ---------------------------------------------------------------------------------------------
# what the pods get: files without secrets, objects
# ---------------------------------------------------------------------------------------------


def test_pod_files_put_every_secret_in_the_secret_and_restore_them_exactly(
    tmp_path: Path,
) -> None:
    users = UsersSpec(
        requests=(
            RequestSpec(
                name="orders",
                method="POST",
                path=f"/orders?sig={TOKEN}",
                json={"note": f"token {TOKEN} inside", "n": 1},
                headers={"X-Api-Key": KEY, "X-Tiny": "1"},
            ),
        ),
        # "perfgate" also occurs inside the markers: it must not corrupt them
        headers={"Authorization": f"Bearer {TOKEN}", "X-Team": "perfgate"},
        secret_values=(TOKEN, "perfgate"),
    )
    files, secret_files = pod_files(
        "http://user:pa55word@web.ns.svc:8080", users, SLO, LoadSpec(workers=3)
    )
    shown = json.dumps(files)
    for secret in (TOKEN, KEY, "pa55word", f"Bearer {TOKEN}"):
        assert secret not in shown
    assert set(secret_files) == {"secrets.json"}
    assert TOKEN in secret_files["secrets.json"] and KEY in secret_files["secrets.json"]
    config_text = json.loads(files["config.json"])
    assert config_text["workers"] == 3 and config_text["request_timeout_s"] == 10.0
    for name, text in {**files, **secret_files}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    config = protocol.read_pod_config(tmp_path / "config.json")
    assert from_jsonable(UsersSpec, config["users"]) == users
    assert to_jsonable(from_jsonable(UsersSpec, config["users"]).headers) == users.headers
    assert config["url"] == "http://user:pa55word@web.ns.svc:8080"
    assert config["slo"] == to_jsonable(SLO)


def test_pod_files_without_secrets_have_no_secret(tmp_path: Path) -> None:
    users = UsersSpec(requests=(RequestSpec(name="home", path="/"),))
    files, secret_files = pod_files("http://web.ns.svc:8080", users, SLO, LoadSpec())
    assert secret_files == {}
    (tmp_path / "config.json").write_text(files["config.json"], encoding="utf-8")
    assert (
        from_jsonable(UsersSpec, protocol.read_pod_config(tmp_path / "config.json")["users"])
        == users
    )


def test_a_locustfile_travels_as_one_file_next_to_the_config(tmp_path: Path) -> None:
    source = tmp_path / "my_users.py"
    source.write_text("from locust import HttpUser\n", encoding="utf-8")
    users = UsersSpec(locustfile=str(source))
    files, _ = pod_files("http://web.ns.svc:8080", users, SLO, LoadSpec())
    assert files["locustfile.py"] == source.read_text()
    mount = tmp_path / "mount"
    mount.mkdir()
    for name, text in files.items():
        (mount / name).write_text(text, encoding="utf-8")
    config = protocol.read_pod_config(mount / "config.json")
    assert config["users"]["locustfile"] == str(mount / "locustfile.py")


def test_missing_secrets_name_the_file_and_never_a_value(tmp_path: Path) -> None:
    files, _ = pod_files("http://web.ns.svc:8080", users_spec(), SLO, LoadSpec())
    (tmp_path / "config.json").write_text(files["config.json"], encoding="utf-8")
    with pytest.raises(protocol.ProtocolError, match=r"config\.json: secret @@perfgate-secret-"):
        protocol.read_pod_config(tmp_path / "config.json")
    (tmp_path / "secrets.json").write_text(f'{{"markers": "{TOKEN}', encoding="utf-8")
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.read_pod_config(tmp_path / "config.json")
    assert "secrets.json: malformed" in str(info.value) and TOKEN not in str(info.value)


def test_users_too_large_for_a_configmap_is_a_scenario_error(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_text("#" * (1 << 20), encoding="utf-8")
    with pytest.raises(ScenarioError, match="more than a ConfigMap holds"):
        pod_files("http://web.ns.svc:8080", UsersSpec(locustfile=str(big)), SLO, LoadSpec())


def test_load_generator_objects_are_valid_and_carry_no_secret() -> None:
    files, secret_files = pod_files("http://web.ns.svc:8080", users_spec(), SLO, LoadSpec())
    objs = load_generator_documents(
        LoadSpec(workers=3, placement="kubernetes", worker_image=IMAGE),
        files=files,
        secret_files=secret_files,
    )
    docs = [RenderedDoc(file="pods", index=i, obj=o) for i, o in enumerate(objs, start=1)]
    assert check_documents(docs, KubernetesSpec(), strict=True) == ()
    by = {(d.kind, d.name): d.obj for d in docs}
    assert list(by) == [
        ("ConfigMap", "perfgate-locust-config"),
        ("Secret", "perfgate-locust-secrets"),
        ("Service", "perfgate-locust-master"),
        ("Deployment", "perfgate-locust-master"),
        ("Deployment", "perfgate-locust-worker"),
    ]
    for obj in by.values():
        assert "namespace" not in obj["metadata"]  # staging places them in its namespace
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "perfgate"
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "load-generator"
    assert TOKEN not in json.dumps(by[("ConfigMap", "perfgate-locust-config")])
    secret = by[("Secret", "perfgate-locust-secrets")]["data"]["secrets.json"]
    assert TOKEN in base64.b64decode(secret).decode()
    worker = by[("Deployment", "perfgate-locust-worker")]["spec"]
    master = by[("Deployment", "perfgate-locust-master")]["spec"]
    assert worker["replicas"] == 3 and master["replicas"] == 1
    for spec, role in ((worker, "worker"), (master, "master")):
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        assert container["command"] == load_commands()[role]
        assert container["resources"]["requests"]["cpu"]
        assert "cpu" not in container["resources"]["limits"]  # throttling would look like latency
        assert pod["automountServiceAccountToken"] is False
        sources = pod["volumes"][0]["projected"]["sources"]
        assert {next(iter(s)) for s in sources} == {"configMap", "secret"}
        assert spec["template"]["metadata"]["labels"]["perfgate.dev/load-role"] == role
    assert load_commands()["worker"][3:] == [
        "--worker",
        "perfgate-locust-master",
        "5557",
        "--config",
        "/etc/perfgate/load/config.json",
    ]
    assert master["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]
    no_secret = load_generator_documents(
        LoadSpec(placement="kubernetes", worker_image=IMAGE), files=files, secret_files={}
    )
    assert "Secret" not in {d["kind"] for d in no_secret}
    with pytest.raises(ScenarioError, match=r"load\.worker_image: required"):
        load_generator_documents(LoadSpec(placement="kubernetes"), files=files, secret_files={})


SCENARIO = """\
name: web
staging:
  provider: {provider}
  kubernetes: {{manifests: [{manifests}], service: web}}
users: {{requests: [{{name: home, path: /}}]}}
slo: {{p95_ms: 100}}
load: {load}
"""


@pytest.mark.parametrize(
    ("provider", "load", "expected"),
    [
        ("kubernetes", "{}", ("local", None)),
        ("kubernetes", "{placement: kubernetes, worker_image: 'r/pg:1'}", ("kubernetes", "r/pg:1")),
        ("embedded", "{placement: kubernetes, worker_image: 'r/pg:1'}", "needs staging.provider"),
        ("kubernetes", "{placement: kubernetes}", "load.worker_image: required"),
        ("kubernetes", "{placement: pods}", "load.placement: must be one of local, kubernetes"),
    ],
)
def test_scenario_keys(tmp_path: Path, provider: str, load: str, expected: Any) -> None:
    text = SCENARIO.format(provider=provider, manifests=tmp_path, load=load)
    if isinstance(expected, str):
        with pytest.raises(ScenarioError, match=expected):
            parse_scenario(text, base_dir=tmp_path)
        return
    spec = parse_scenario(text, base_dir=tmp_path).load
    assert (spec.placement, spec.worker_image) == expected


# ---------------------------------------------------------------------------------------------
# the objects in the fake cluster
# ---------------------------------------------------------------------------------------------


def test_objects_are_created_in_the_staging_namespace_and_go_with_it(
    tmp_path: Path, fake: FakeKube
) -> None:
    scen = k8s_scenario(tmp_path)
    logs: list[str] = []
    options = staging_options(tmp_path, logs)
    ports = LocalPorts()
    fake.port_map.update({MASTER_PORT: ports.zmq, CONTROL_PORT: ports.control})
    with listening(ports.zmq), listening(ports.control):
        with provision_kubernetes(scen, options) as staged:
            ns = staged.namespace
            assert ns is not None
            # the pods send the load: the Service's cluster name, no port-forward to the target
            assert staged.url == f"http://web.{ns}.svc:8080"
            assert staged.details["endpoint"] == "cluster-dns"
            files, secret_files = pod_files(staged.url, scen.users, scen.slo, scen.load)
            with generators(scen, staged, options, files, secret_files) as (host, port):
                assert host == "127.0.0.1" and port > 0
                config_map = fake.get("ConfigMap", ns, "perfgate-locust-config")
                secret = fake.get("Secret", ns, "perfgate-locust-secrets")
                worker = fake.get("Deployment", ns, "perfgate-locust-worker")
                master = fake.get("Deployment", ns, "perfgate-locust-master")
                service = fake.get("Service", ns, "perfgate-locust-master")
                pods = fake.names("Pod", ns)
        gone = fake.wait_for(lambda: fake.get("Namespace", "", ns) is None)
    assert config_map and secret and worker and master and service
    assert config_map["data"] == files
    assert TOKEN not in json.dumps(config_map) and KEY not in json.dumps(config_map)
    assert json.loads(config_map["data"]["config.json"])["url"] == f"http://web.{ns}.svc:8080"
    decoded = json.loads(base64.b64decode(secret["data"]["secrets.json"]))
    assert set(decoded["markers"].values()) == {f"Bearer {TOKEN}", KEY, TOKEN}
    assert worker["spec"]["replicas"] == 2
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["command"] == load_commands()["worker"]
    assert service["spec"]["ports"][0]["port"] == MASTER_PORT
    assert sum(p.startswith("perfgate-locust-worker-") for p in pods) == 2
    assert sum(p.startswith("perfgate-locust-master-") for p in pods) == 1
    created = [
        (r.resource, r.name or "(new)")
        for r in fake.writes()
        if r.namespace == ns and r.method == "POST"
    ]
    assert [r for r, _ in created] == [
        "configmaps",
        "secrets",
        "services",
        "deployments",
        "deployments",
    ]
    assert any("all 2 workload(s) ready" in line for line in logs)
    assert gone, "the namespace (and with it every load-generator object) is deleted"
    assert not any(TOKEN in line or KEY in line for line in logs)


def test_a_master_that_never_listens_fails_the_readiness_wait(
    tmp_path: Path, fake: FakeKube
) -> None:
    scen = k8s_scenario(tmp_path, ready_timeout_s=1.0)
    logs: list[str] = []
    options = staging_options(tmp_path, logs)
    fake.port_map[MASTER_PORT] = free_port()  # nothing there: the probe never passes
    with pytest.raises(StagingError) as info, provision_kubernetes(scen, options) as staged:
        namespace = staged.namespace
        with generators(scen, staged, options):
            pytest.fail("the master was never ready")
    message = str(info.value)
    assert "not ready after 1 s: deployment/perfgate-locust-master 0/1 available" in message
    assert "readiness probe failing" in message
    assert "perfgate-locust-worker" not in message  # the workers were ready
    assert fake.wait_for(lambda: fake.get("Namespace", "", namespace) is None)


def test_a_worker_image_that_cannot_be_pulled_is_named(tmp_path: Path, fake: FakeKube) -> None:
    scen = k8s_scenario(tmp_path, ready_timeout_s=1.0)
    fake.broken_images.add(IMAGE)
    options = staging_options(tmp_path, [])
    with (
        pytest.raises(StagingError) as info,
        provision_kubernetes(scen, options) as staged,
        generators(scen, staged, options),
    ):
        pytest.fail("the pods never ran")
    assert "deployment/perfgate-locust-worker 0/2 available (2 pods: ImagePullBackOff" in str(
        info.value
    )


def test_no_right_to_create_secrets_points_at_the_rbac_file(tmp_path: Path, fake: FakeKube) -> None:
    scen = k8s_scenario(tmp_path)
    fake.forbid.add(("create", "secrets"))
    options = staging_options(tmp_path, [])
    with (
        pytest.raises(StagingError, match=r"403.*scenarios/k8s/rbac\.yaml"),
        provision_kubernetes(scen, options) as staged,
        generators(scen, staged, options),
    ):
        pytest.fail("the Secret was forbidden")


def test_manifests_may_not_use_the_reserved_names(tmp_path: Path, fake: FakeKube) -> None:
    clash = APP + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: perfgate-locust-config}\n"
    scen = k8s_scenario(tmp_path, text=clash)
    with (
        pytest.raises(ScenarioError, match="'perfgate-locust-' is reserved"),
        provision_kubernetes(scen, staging_options(tmp_path, [])),
    ):
        pytest.fail("refused before any cluster request")
    assert fake.writes() == []


def test_the_load_generators_need_the_kubernetes_provider(tmp_path: Path) -> None:
    scen = k8s_scenario(tmp_path)
    staged = StagedTarget(url="http://127.0.0.1:1", provider="none", description="existing")
    with (
        pytest.raises(InputError, match="needs the kubernetes staging provider"),
        load_generators(
            scen, staged, StagingOptions(), documents=(), master=(LOAD_MASTER_NAME, CONTROL_PORT)
        ),
    ):
        pytest.fail("refused")


def test_a_kept_namespace_keeps_the_objects_but_no_running_load_generator(
    tmp_path: Path, fake: FakeKube
) -> None:
    scen = k8s_scenario(tmp_path)
    logs: list[str] = []
    options = staging_options(tmp_path, logs, keep_namespace=True)
    ports = LocalPorts()
    fake.port_map.update({MASTER_PORT: ports.zmq, CONTROL_PORT: ports.control})
    with (
        listening(ports.zmq),
        listening(ports.control),
        provision_kubernetes(scen, options) as staged,
    ):
        ns = staged.namespace
        assert ns is not None
        with generators(scen, staged, options):
            pass
    for name in ("perfgate-locust-master", "perfgate-locust-worker"):
        deployment = fake.get("Deployment", ns, name)
        assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert fake.get("Namespace", "", ns) is not None
    assert any("scaled to zero" in line for line in logs)


# ---------------------------------------------------------------------------------------------
# the load: the pods' commands, run on 127.0.0.1
# ---------------------------------------------------------------------------------------------


def test_in_cluster_load_end_to_end_through_the_fake(
    tmp_path: Path, fake: FakeKube, target: tuple[str, Target]
) -> None:
    url, seen = target
    scen = k8s_scenario(tmp_path, url=url, workers=2, ready_timeout_s=30.0)
    logs: list[str] = []
    options = staging_options(tmp_path, logs)
    ports = LocalPorts()
    fake.port_map.update({MASTER_PORT: ports.zmq, CONTROL_PORT: ports.control})
    kubelet = LocalKubelet(
        fake,
        tmp_path / "pods",
        selector=SELECTOR,
        rewrite=lambda _pod, command: ports.rewrite(command),
        env={"PYTHONPATH": str(ROOT)},
    )
    (tmp_path / "pods").mkdir()
    try:
        with kubelet, provision_kubernetes(scen, options) as staged:
            with in_cluster_runner(scen, staged, options) as runner:
                assert runner.ready["remote"] is True and runner.ready["workers"] == 2
                stats = runner.measure(4, settle_s=0.5, min_s=1.5, max_s=1.5, min_samples=0)
            procs = list(kubelet.procs.values())
            # the runner's quit reached the master, the master's quit the workers: all exit
            codes = [wait_exit(p, 10.0) for p in procs]
            commands = dict(kubelet.commands)
    finally:
        logs_text = kubelet.logs()
    assert codes == [0, 0, 0], logs_text
    assert sorted(commands.values()) == sorted(
        [load_commands()["master"]] + [load_commands()["worker"]] * 2
    )
    assert stats.users == 4 and stats.requests > 20 and stats.failures == 0
    assert {e.name for e in stats.endpoints} == {"user", "keyed"}
    assert stats.generator is not None and stats.generator.little_ratio is not None
    with seen.lock:
        assert seen.auth == {f"Bearer {TOKEN}"}  # the Secret reached the workers
        assert seen.keys >= {KEY}
        assert seen.users == {0, 1, 2, 3}  # user_index unique across the two worker pods
    assert TOKEN not in logs_text and KEY not in logs_text
    assert not any(TOKEN in line for line in logs)


@pytest.fixture
def pod_files_local(
    tmp_path: Path, target: tuple[str, Target]
) -> tuple[dict[str, str], dict[str, str]]:
    url, _ = target
    return pod_files(url, users_spec(), SLO, LoadSpec(workers=2))


def test_too_few_workers_is_a_load_error_naming_how_many(
    tmp_path: Path,
    target: tuple[str, Target],
    pod_files_local: tuple[dict[str, str], dict[str, str]],
) -> None:
    url, _ = target
    ports = LocalPorts(connect_timeout_s=1.5)
    master, workers = run_pod_commands(tmp_path, *pod_files_local, ports, workers=1)
    try:
        wait_listening(ports.control)
        with (
            pytest.raises(LoadError, match=r"only 1 of 2 load workers connected within 1\.5 s"),
            LocustRunner(
                url,
                users_spec(),
                SLO,
                LoadSpec(workers=2),
                engine_command=relay_command("127.0.0.1", ports.control),
            ),
        ):
            pytest.fail("the master must not be ready")
        assert wait_exit(master, 5.0) == 1
    finally:
        kill_all([master, *workers])


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return  # a probe: the master waits for the next connection
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_workers_quit_when_the_master_is_gone_and_the_run_fails(
    tmp_path: Path,
    target: tuple[str, Target],
    pod_files_local: tuple[dict[str, str], dict[str, str]],
) -> None:
    url, _ = target
    ports = LocalPorts()
    master, workers = run_pod_commands(tmp_path, *pod_files_local, ports, workers=2)
    try:
        wait_listening(ports.control)  # also proves a probe connection does not end the master
        with LocustRunner(
            url,
            users_spec(),
            SLO,
            LoadSpec(workers=2),
            engine_command=relay_command("127.0.0.1", ports.control),
        ) as runner:
            assert runner.ready["workers"] == 2
            runner.measure(2, settle_s=0.2, min_s=0.5, max_s=0.5, min_samples=0)
            os.killpg(master.pid, signal.SIGKILL)
            with pytest.raises(
                LoadError, match=r"load master closed the connection|connection to the load master"
            ):
                runner.measure(2, settle_s=0.2, min_s=0.5, max_s=0.5, min_samples=0)
        # no stdin to watch in a pod: Locust's master heartbeat check (2 s here) ends them
        assert [wait_exit(w, 10.0) for w in workers] == [0, 0]
    finally:
        kill_all([master, *workers])


def test_a_worker_pod_that_disconnects_fails_the_run(
    tmp_path: Path,
    target: tuple[str, Target],
    pod_files_local: tuple[dict[str, str], dict[str, str]],
) -> None:
    url, _ = target
    ports = LocalPorts()
    master, workers = run_pod_commands(tmp_path, *pod_files_local, ports, workers=2)
    try:
        wait_listening(ports.control)
        with LocustRunner(
            url,
            users_spec(),
            SLO,
            LoadSpec(workers=2),
            engine_command=relay_command("127.0.0.1", ports.control),
        ) as runner:
            os.killpg(workers[1].pid, signal.SIGKILL)
            with pytest.raises(
                LoadError, match=r"a load worker disconnected: 1 of 2 still connected"
            ):
                runner.measure(2, settle_s=0.2, min_s=8.0, max_s=8.0, min_samples=0)
        assert wait_exit(master, 5.0) is not None
    finally:
        kill_all([master, *workers])


def test_a_relay_without_a_master_is_a_load_error() -> None:
    port = free_port()
    with (
        pytest.raises(
            LoadError, match=rf"cannot connect to the load master at 127\.0\.0\.1:{port}"
        ),
        LocustRunner(
            "http://127.0.0.1:1", users_spec(), SLO, engine_command=relay_command("127.0.0.1", port)
        ),
    ):
        pytest.fail("nothing listens")


def test_the_relay_module_runs_without_locust() -> None:
    code = textwrap.dedent(
        """
        import runpy, sys
        sys.argv = ["protocol", "--bad"]
        try:
            runpy.run_module("perfgate.load.protocol", run_name="__main__")
        except SystemExit as exc:
            assert exc.code == 2
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("locust", "gevent")))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert "usage: python -m perfgate.load.protocol --relay HOST PORT" in proc.stderr
