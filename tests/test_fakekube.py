"""Keep the fake API server honest: the real ``kubernetes`` client must accept what it answers.

The typed client validates every response with pydantic, so these tests fail if the fake returns
incomplete objects, and they pin the status codes and reasons perfgate's error mapping relies on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from fakekube import FakeKube
except ImportError:  # pragma: no cover - when run as a package
    from tests.fakekube import FakeKube

kubernetes = pytest.importorskip("kubernetes")

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]},
        },
    },
}


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube(ready_delay_s=0.1, delete_delay_s=0.1) as server:
        yield server


@pytest.fixture
def client(fake: FakeKube, tmp_path: Path) -> Iterator[Any]:
    path = fake.write_kubeconfig(tmp_path / "kubeconfig")
    api = kubernetes.config.new_client_from_config(config_file=str(path), persist_config=False)
    try:
        yield api
    finally:
        api.close()


def status_of(call: Any) -> tuple[int, str]:
    import json

    with pytest.raises(kubernetes.client.ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body)["reason"]


def make_namespace(client: Any, name: str = "t") -> None:
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": name}})


def test_typed_client_reads_everything_the_fake_serves(fake: FakeKube, client: Any) -> None:
    core = kubernetes.client.CoreV1Api(client)
    apps = kubernetes.client.AppsV1Api(client)
    assert kubernetes.client.VersionApi(client).get_code().git_version.startswith("v1.37")
    make_namespace(client)
    ns = core.read_namespace("t")
    assert ns.status.phase == "Active" and ns.metadata.uid and ns.metadata.creation_timestamp
    apps.create_namespaced_deployment("t", DEPLOYMENT)
    service = {
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    created = core.create_namespaced_service("t", service)
    assert (
        created.spec.cluster_ip.startswith("127.0.2.") and created.spec.ports[0].node_port >= 30000
    )
    assert fake.wait_for(
        lambda: (
            (fake.get("Deployment", "t", "web") or {}).get("status", {}).get("availableReplicas")
            == 2
        )
    )
    deploy = apps.read_namespaced_deployment("web", "t")
    assert deploy.status.available_replicas == 2 and deploy.status.observed_generation == 1
    pods = core.list_namespaced_pod("t", label_selector="app=web").items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    endpoints = core.read_namespaced_endpoints("web", "t")
    assert len(endpoints.subsets[0].addresses) == 2
    nodes = core.list_node().items
    assert nodes[0].status.addresses[0].address == "127.0.0.1"
    assert core.list_namespaced_event("t").items == []


def test_watch_streams_transitions_and_ends_at_its_timeout(fake: FakeKube, client: Any) -> None:
    make_namespace(client)
    apps = kubernetes.client.AppsV1Api(client)
    apps.create_namespaced_deployment("t", DEPLOYMENT)
    seen = []
    started = time.monotonic()
    for event in kubernetes.watch.Watch().stream(
        apps.list_namespaced_deployment, "t", timeout_seconds=1
    ):
        seen.append((event["type"], event["object"].status.available_replicas))
    assert time.monotonic() - started < 3
    assert seen[0] == ("ADDED", None)
    assert seen[-1] == ("MODIFIED", 2)


def test_realistic_errors(fake: FakeKube, client: Any) -> None:
    core = kubernetes.client.CoreV1Api(client)
    apps = kubernetes.client.AppsV1Api(client)
    assert status_of(lambda: core.read_namespace("nope")) == (404, "NotFound")
    assert status_of(lambda: apps.create_namespaced_deployment("nope", DEPLOYMENT)) == (
        404,
        "NotFound",
    )
    make_namespace(client)
    assert status_of(lambda: make_namespace(client)) == (409, "AlreadyExists")
    mismatch = {
        **DEPLOYMENT,
        "spec": {**DEPLOYMENT["spec"], "selector": {"matchLabels": {"app": "x"}}},
    }
    assert status_of(lambda: apps.create_namespaced_deployment("t", mismatch)) == (422, "Invalid")
    dynamic = client  # raw bodies skip the typed client's own validation, like DynamicClient
    bad = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": "two"}}

    def raw(
        method: str, path: str, body: Any, ctype: str = "application/json", **query: str
    ) -> Any:
        m, url, headers, b, _ = dynamic.param_serialize(
            method, path, query_params=list(query.items()), header_params={"Content-Type": ctype},
            body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        return dynamic.call_api(m, url, header_params=headers, body=b)

    assert raw("POST", "/apis/apps/v1/namespaces/t/deployments", bad).status == 400
    typo = {"metadata": {"name": "c"}, "data": {}, "dta": {}}
    assert (
        raw("POST", "/api/v1/namespaces/t/configmaps", typo, fieldValidation="Strict").status == 400
    )
    warned = raw("POST", "/api/v1/namespaces/t/configmaps", typo)
    assert warned.status == 201 and "unknown field" in warned.getheader("Warning")
    apply = {**DEPLOYMENT, "metadata": {"name": "web"}}
    path = "/apis/apps/v1/namespaces/t/deployments/web"
    assert (
        raw("PATCH", path, apply, "application/apply-patch+yaml").status == 422
    )  # no fieldManager
    assert raw("PATCH", path, apply, "application/apply-patch+yaml", fieldManager="t").status == 201
    assert raw("PATCH", path, apply, "application/apply-patch+yaml", fieldManager="t").status == 200
    assert raw("PATCH", path, [{"op": "add"}], "application/json-patch+json").status == 415
    stale = apps.read_namespaced_deployment("web", "t")
    apps.patch_namespaced_deployment("web", "t", {"spec": {"replicas": 3}})
    assert status_of(lambda: apps.replace_namespaced_deployment("web", "t", stale)) == (
        409,
        "Conflict",
    )
    wrong_uid = {"preconditions": {"uid": "not-the-uid"}}
    assert status_of(lambda: core.delete_namespace("t", body=wrong_uid)) == (409, "Conflict")
    core.create_namespaced_config_map("t", {"metadata": {"name": "dry"}}, dry_run="All")
    assert fake.get("ConfigMap", "t", "dry") is None
    core.delete_namespace("t")
    assert core.read_namespace("t").status.phase == "Terminating"
    cm = {"metadata": {"name": "late"}}
    assert status_of(lambda: core.create_namespaced_config_map("t", cm)) == (403, "Forbidden")
    assert fake.wait_for(lambda: fake.names("Namespace") == [], 2.0)
    assert fake.names("ConfigMap", "t") == [] and fake.names("Pod", "t") == []
    fake.forbid.add(("list", "nodes"))
    assert status_of(core.list_node) == (403, "Forbidden")


def test_a_wrong_token_is_401(fake: FakeKube, tmp_path: Path) -> None:
    path = fake.write_kubeconfig(tmp_path / "kc", token="wrong")
    api = kubernetes.config.new_client_from_config(config_file=str(path), persist_config=False)
    try:
        assert status_of(lambda: kubernetes.client.CoreV1Api(api).list_namespace()) == (
            401,
            "Unauthorized",
        )
    finally:
        api.close()
