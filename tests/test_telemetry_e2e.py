"""Why it broke, end to end through the real CLI: the embedded exchange's two releases, a real
Prometheus server, and Kubernetes staging against the API fake with its metrics API.

Prometheus is Debian's ``prometheus`` package (``scripts/install_test_deps.py``, which ``.ci/run``
calls, installs it); without it the test fails and says how to install it — never a skip. Every
run uses 1.5–2-s steps and one to three levels.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from perfgate.cli import _main
from perfgate.errors import EXIT_BLOCK, EXIT_INPUT, EXIT_PASS
from perfgate.exchange import ExchangeConfig
from perfgate.staging.embedded import run_exchange
from perfgate.telemetry import KubeSampler, Unavailable

try:
    from fakekube import FakeKube
    from test_k8s_side_by_side import Cli, Release, result_of
except ImportError:  # pragma: no cover - when run as a package
    from tests.fakekube import FakeKube
    from tests.test_k8s_side_by_side import Cli, Release, result_of

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _cli(folder: Path, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "PERFGATE_"))}
    env.update(HOME=str(folder), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "perfgate", *args],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _run(folder: Path, scenario: Path, *args: str) -> tuple[int, dict[str, Any], str, str]:
    """`perfgate run`: exit code, result.json, index.html and stderr."""
    done = _cli(
        folder, "run", "--scenario", str(scenario), "--release", "r",
        "--baseline-dir", str(folder / "baselines"), "--report-dir", str(folder / "reports"),
        *args,
    )  # fmt: skip
    (run_dir,) = (folder / "reports").glob("*/r-*")
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    return (
        done.returncode,
        result,
        (run_dir / "index.html").read_text(encoding="utf-8"),
        done.stderr,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _names(result: dict[str, Any]) -> set[str]:
    return {r["name"] for s in result["steps"] for r in (s["resources"] or {}).get("readings", ())}


# ---------------------------------------------------------------------------------------------
# the embedded exchange: the release without the cache, and the cached one
# ---------------------------------------------------------------------------------------------


def test_the_release_without_the_cache_is_attributed_to_the_order_book_rebuild(
    tmp_path: Path,
) -> None:
    """scenarios/exchange-nocache.yaml as shipped, plus a Prometheus that is down."""
    data = yaml.safe_load((ROOT / "scenarios/exchange-nocache.yaml").read_text(encoding="utf-8"))
    dead = f"http://127.0.0.1:{_free_port()}"
    data["metrics"] = {"prometheus": {"url": dead, "queries": {"queue": "exchange_queue_depth"}}}
    scenario = tmp_path / "nocache.yaml"
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, result, html, err = _run(
        tmp_path, scenario, "--step-seconds", "1.5", "--max-users", "150"
    )
    assert code == EXIT_BLOCK, err  # the floor: ~115 users < 250; telemetry changes nothing
    b = result["bottleneck"]
    assert (b["kind"], b["resource"], b["consumer"], b["request"]) == (
        "resource", "exchange slot pool", "order-book rebuild", "order book",
    ), b  # fmt: skip
    assert b["consumer_share"] > 0.6 and b["confidence"] == "high"
    assert b["cost"]["cpu_ms_per_request"] > 0
    assert {"exchange slot pool", "exchange CPU", "exchange memory"} <= _names(result)
    assert f"Prometheus at {dead} did not answer (ConnectError)" in b["missing"]
    assert "why: The exchange slot pool reached" in err
    assert f"not measured: Prometheus at {dead} did not answer" in err
    why = html[html.index('id="why"') : html.index('class="toc"')]
    assert (
        "exchange slot pool (limit 16 slots) — saturated first" in why
        and "What used the exchange slot pool" in why
    )
    assert why.count("<svg") == 2  # the resources (small multiples) and the shares


def test_the_cached_release_is_attributed_to_its_slot_pool(tmp_path: Path) -> None:
    """scenarios/exchange.yaml with a 100-ms SLO, so it breaks near 105 users instead of 526
    (the slot pool is full from 16 users on either way): three light levels."""
    data = yaml.safe_load((ROOT / "scenarios/exchange.yaml").read_text(encoding="utf-8"))
    data["slo"]["p95_ms"] = 100
    scenario = tmp_path / "cached.yaml"
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, result, html, err = _run(
        tmp_path, scenario, "--strategy", "linear", "--max-users", "150", "--step-seconds", "1.5",
    )  # fmt: skip
    assert code == EXIT_BLOCK, err  # ~105 users < the floor of 250
    b = result["bottleneck"]
    assert (b["kind"], b["resource"], b["consumer"]) == ("resource", "exchange slot pool", None), b
    assert "bound by the slot pool" in b["sentence"] and b["missing"] == []
    shares = {
        r["name"]: r["value"]
        for r in result["steps"][-1]["resources"]["readings"]
        if r["kind"] == "share"
    }
    assert shares["order-book rebuild"] == 0.0 and max(shares.values()) < 0.6, shares
    assert 'id="why"' in html


# ---------------------------------------------------------------------------------------------
# a real Prometheus server scraping the exchange
# ---------------------------------------------------------------------------------------------


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or next(
        (p for p in ("/usr/bin/prometheus", "/usr/sbin/prometheus") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            "the prometheus binary is missing: install Debian's package "
            "(apt-get install -y prometheus; scripts/install_test_deps.py does it)"
        )
    return found


def _wait_until_scraping(url: str, deadline: float) -> None:
    """Ready is not scraped: wait until the target's series have a few samples (a 1-s rate needs
    two), so the first load level is not measured before Prometheus has anything."""
    query = {"query": "count_over_time(exchange_slots[2s])"}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
            got = httpx.get(f"{url}/api/v1/query", params=query, timeout=1).json()
            if float(got["data"]["result"][0]["value"][1]) >= 3:
                return
        time.sleep(0.1)
    pytest.fail("prometheus did not scrape the exchange within 20 s")


@contextlib.contextmanager
def _prometheus(folder: Path, target: str) -> Iterator[str]:
    """Prometheus on 127.0.0.1 scraping ``target``'s /metrics every 200 ms."""
    port = _free_port()
    config = {
        "global": {"scrape_interval": "200ms", "scrape_timeout": "150ms"},
        "scrape_configs": [
            {"job_name": "exchange", "static_configs": [{"targets": [target.split("//")[1]]}]}
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (folder / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            _prometheus_binary(), f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break  # it scrapes from now on, long before the first window ends
            assert proc.poll() is None, (folder / "prometheus.log").read_text()
            time.sleep(0.1)
        else:
            pytest.fail(f"prometheus did not start: {(folder / 'prometheus.log').read_text()}")
        _wait_until_scraping(url, deadline)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


PROM_SCENARIO = """
name: prom
users:
  requests:
    - {{name: order book, path: /orderbook/BTC-USDT, weight: 1}}
    - {{name: balances, path: /balances/a, weight: 1}}
ramp: {{start_users: 10, step_users: 10, max_users: 20, step_seconds: 2, settle_seconds: 0.5}}
slo: {{p95_ms: 100000}}
metrics:
  prometheus:
    url: {url}
    queries:
      slot use:
        query: 'rate(exchange_slot_busy_seconds_total[1s]) / exchange_slots'
        limit: 1
      queue: {queue}
"""


def _validate(
    scenario: Path, capsys: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    """`perfgate validate` in this process (the run is the end-to-end part)."""
    capsys.readouterr()
    code = _main(["validate", str(scenario)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess([], code, out.out, out.err)


def test_each_prometheus_query_is_charted_against_users_and_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        run_exchange(ExchangeConfig(slots=4, service_ms=10.0)) as exchange,
        _prometheus(tmp_path, exchange.url) as url,
    ):
        scenario = tmp_path / "prom.yaml"
        good = PROM_SCENARIO.format(url=url, queue="sum(exchange_queue_depth)")
        scenario.write_text(good, encoding="utf-8")
        ok = _cli(tmp_path, "validate", str(scenario))
        assert ok.returncode == EXIT_PASS, ok.stderr
        assert f"2 PromQL query(ies) checked by the server at {url}" in ok.stdout
        bad = tmp_path / "bad.yaml"
        bad.write_text(PROM_SCENARIO.format(url=url, queue="rate(exchange_queue_depth)"))
        refused = _cli(tmp_path, "validate", str(bad))
        assert refused.returncode == EXIT_INPUT
        assert "metrics.prometheus.queries.queue: " in refused.stderr
        assert "range vector" in refused.stderr  # the server's own parser said it
        code, result, html, err = _run(tmp_path, scenario, "--target", exchange.url)
    assert code == EXIT_PASS, err
    busy = []
    for step in result["steps"]:
        got = {r["name"]: r for r in step["resources"]["readings"]}
        assert set(got) == {"slot use", "queue"}, step["resources"]
        busy.append(got["slot use"]["utilisation"])
    # 4 slots are busy from 10 users on; a 1-s rate over 2-s steps can catch a scrape late on a
    # busy machine (0.32 once), so every step shows use and the busiest most of the slots
    assert min(busy) > 0 and max(busy) > 0.5, busy
    assert result["bottleneck"]["resource"] == "slot use"
    why = html[html.index('id="why"') : html.index('class="toc"')]
    assert ">slot use (limit 1) — saturated first<" in why and ">queue<" in why
    offline = tmp_path / "offline.yaml"
    dead = f"http://127.0.0.1:{_free_port()}"
    offline.write_text(PROM_SCENARIO.format(url=dead, queue="x"), encoding="utf-8")
    assert f"offline only: {dead} did not answer" in _validate(offline, capsys).stdout


# ---------------------------------------------------------------------------------------------
# Kubernetes staging against the API fake, whose metrics API follows the load it forwards
# ---------------------------------------------------------------------------------------------

K8S_APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: "{{ image }}"
          ports: [{name: http, containerPort: 8080}]
          resources: {requests: {cpu: 50m}, limits: {cpu: 100m, memory: 128Mi}}
        - name: proxy
          image: example.test/proxy:1
          resources: {limits: {cpu: 500m, memory: 64Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: http}]
"""

K8S_SCENARIO = """\
name: sbs
staging:
  provider: kubernetes
  kubernetes:
    manifests: [app.yaml]
    service: web
    port: 8080
    image: "example.test/web:{{ release }}"
    ready_timeout_s: 20
users:
  requests:
    - {name: root, method: GET, path: /}
ramp: {start_users: 4, step_users: 2, max_users: 4, step_seconds: 2, settle_seconds: 0.5,
       min_samples: 0}
slo: {p95_ms: 5000, error_rate: 0.5}
gate: {min_users: 1}
"""


def test_kubernetes_pods_are_measured_against_their_limits_and_the_full_container_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "app.yaml").write_text(K8S_APP, encoding="utf-8")
    (tmp_path / "sbs.yaml").write_text(K8S_SCENARIO, encoding="utf-8")
    with FakeKube(ready_delay_s=0.05, delete_delay_s=0.05) as fake:
        fake.write_kubeconfig(tmp_path / "kubeconfig")
        served = Release()
        fake.image_ports["example.test/web:v1"] = served.port
        fake.cpu_per_request_s = 0.002  # 50 req/s fill the web container's 100m limit
        fake.oom_after_requests = 60
        try:
            cli = Cli(tmp_path, "v1")
            code = cli.finish()
        finally:
            served.close()
    assert code == EXIT_PASS, cli.text
    result = result_of(tmp_path)
    # named by workload (the Deployment) and container; the pod's own name is kept beside
    web, proxy = "container web/web CPU", "container web/proxy CPU"
    assert _names(result) == {web, proxy, "container web/web memory", "container web/proxy memory"}
    top = {r["name"]: r for r in result["steps"][-1]["resources"]["readings"]}
    assert (top[web]["limit"], top[proxy]["limit"]) == (0.1, 0.5)
    assert (top[web]["request"], top[proxy]["request"]) == (0.05, None)
    pod = top[web]["pod"]
    assert pod.startswith("web-") and top[web]["replicas"] == 1, top[web]
    b = result["bottleneck"]
    assert (b["kind"], b["resource"]) == ("resource", web), b
    assert "of its 0.1-core limit" in b["sentence"] and "CPU-bound" in b["sentence"]
    assert any(f"users: pod {pod}" in e for e in b["evidence"]), b["evidence"]
    events = [e for s in result["steps"] for e in s["resources"]["events"]]
    assert any("/web restarted 1× (OOMKilled) — OOM killed" in e for e in events), events
    assert f"why: The {web} reached" in cli.text


def test_a_cluster_without_a_metrics_api_is_named_through_the_real_client(tmp_path: Path) -> None:
    """What the gate says when metrics-server is absent (the run goes on: see the recorder)."""
    from perfgate.staging.kubernetes.config import load_cluster_config
    from perfgate.staging.kubernetes.provision import _api_get
    from perfgate.staging.kubernetes.rest import Api

    with FakeKube() as fake:
        fake.write_kubeconfig(tmp_path / "kubeconfig")
        api = Api(load_cluster_config(str(tmp_path / "kubeconfig"), None))
        try:
            sampler = KubeSampler(functools.partial(_api_get, api), "default")
            assert sampler.sample() == {"specs": {}, "owners": {}}  # served; nothing runs there
            fake.metrics_api = False
            with pytest.raises(Unavailable, match="no metrics API in the cluster"):
                sampler.sample()
        finally:
            api.close()
