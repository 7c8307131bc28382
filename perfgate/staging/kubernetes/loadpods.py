"""Load generators in the staging namespace (``load.placement: kubernetes``).

The load stage decides what its generators are (:mod:`perfgate.load.pods` builds their objects);
this module only creates the objects it is given in this run's namespace, waits until they are
ready and port-forwards to a pod of the one that drives them. They go with the namespace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from perfgate.errors import InputError, ScenarioError, StagingError
from perfgate.models import Scenario
from perfgate.staging.kubernetes.config import load_cluster_config
from perfgate.staging.kubernetes.portforward import PortForwarder
from perfgate.staging.kubernetes.readiness import pod_ready, pods_of, wait_ready
from perfgate.staging.kubernetes.rest import Api, ApiError
from perfgate.staging.manifests import RenderedDoc

if TYPE_CHECKING:
    from perfgate.staging import StagedTarget, StagingOptions

__all__ = ["deploy_load_generators"]

_WHERE = "load.placement kubernetes"  # the "file" of the load generators' objects in messages


@contextlib.contextmanager
def deploy_load_generators(
    scenario: Scenario,
    staged: StagedTarget,
    options: StagingOptions,
    *,
    documents: Sequence[Mapping[str, Any]],
    master: tuple[str, int],
) -> Iterator[tuple[str, int]]:
    """Create ``documents`` in the staging namespace; yield a local address of ``master``.

    ``master`` is (the name of a Deployment among ``documents``, a port of its pod): the yielded
    ``("127.0.0.1", port)`` is a port-forward through the API server to a ready pod of it. Call
    it inside :func:`provision_kubernetes`'s block; the objects are deleted with the namespace
    (with ``--keep-namespace`` their Deployments are scaled to zero on exit instead of loading
    nothing forever).
    """
    if staged.provider != "kubernetes" or not staged.namespace:
        raise InputError(
            "load.placement kubernetes needs the kubernetes staging provider "
            f"(this run uses {staged.provider}); set load.placement local"
        )
    namespace = staged.namespace
    docs = _placed(documents, namespace)
    master_name, master_port = master
    selector = _selector(docs, master_name)
    log = options.log
    spec = scenario.staging.kubernetes
    timeout_s = spec.ready_timeout_s if spec is not None else 300.0
    cluster = load_cluster_config(options.kubeconfig, options.context)
    api = Api(cluster)
    forwarder: PortForwarder | None = None
    try:
        images = ", ".join(sorted(_images(docs))) or "no image"
        log(f"kubernetes: starting the load generators ({images}) in {namespace}")
        for doc in docs:
            _create(api, doc, namespace)
            log(f"kubernetes: created {doc.kind}/{doc.name}")
        wait_ready(api, docs, namespace, timeout_s, log)
        pod = _ready_pod(api, namespace, master_name, selector)
        forwarder = PortForwarder(cluster, namespace, pod, master_port, log)
        forwarder.check()
        log(
            f"kubernetes: load generator {pod}: 127.0.0.1:{forwarder.port} -> "
            f"{pod}:{master_port} through the API server"
        )
        yield "127.0.0.1", forwarder.port
    finally:
        if forwarder is not None:
            forwarder.close()
        try:
            if options.keep_namespace:
                deployments = [d.name for d in reversed(docs) if d.kind == "Deployment"]
                _scale_to_zero(api, namespace, deployments, log)
        finally:
            api.close()


def _placed(documents: Sequence[Mapping[str, Any]], namespace: str) -> tuple[RenderedDoc, ...]:
    """The objects placed in the staging namespace, which the load stage does not know."""
    placed = []
    for index, obj in enumerate(documents, start=1):
        meta = obj.get("metadata")
        meta = {**meta, "namespace": namespace} if isinstance(meta, Mapping) else {}
        placed.append(RenderedDoc(file=_WHERE, index=index, obj={**obj, "metadata": meta}))
    return tuple(placed)


def _selector(docs: Sequence[RenderedDoc], name: str) -> dict[str, str]:
    """The pod labels of Deployment ``name`` (a caller's mistake when it is not there)."""
    for doc in docs:
        if doc.kind == "Deployment" and doc.name == name:
            match = ((doc.obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
            if isinstance(match, dict) and match:
                return {str(k): str(v) for k, v in match.items()}
    raise ValueError(f"no Deployment {name!r} with spec.selector.matchLabels among the documents")


def _images(docs: Sequence[RenderedDoc]) -> set[str]:
    pods = [
        ((d.obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for d in docs
        if d.kind == "Deployment"
    ]
    return {str(c.get("image")) for pod in pods for c in pod.get("containers") or ()}


def _create(api: Api, doc: RenderedDoc, namespace: str) -> None:
    """POST one object (never a patch: the names must be new, and the Secret needs only create)."""
    prefix, plural, _ = api.resource(doc.api_version, doc.kind, where=doc.where)
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    try:
        api.request("POST", path, action=f"creating {doc.kind}/{doc.name}", body=doc.obj)
    except ApiError as exc:
        if exc.status == 409:
            raise ScenarioError(
                f"{doc.kind}/{doc.name} already exists in {namespace}: this name is reserved "
                "for perfgate's load generators"
            ) from exc
        if exc.status in (400, 422):  # e.g. load.worker_image is not a valid image reference
            raise ScenarioError(
                f"{_WHERE}: {doc.kind}/{doc.name} rejected by the API server: {exc}"
            ) from exc
        if exc.status == 403:
            raise StagingError(
                f"{exc} (load.placement kubernetes also needs create on configmaps, secrets, "
                "services and deployments: see scenarios/k8s/rbac.yaml)"
            ) from exc
        raise


def _ready_pod(api: Api, namespace: str, name: str, selector: Mapping[str, str]) -> str:
    for pod in pods_of(api, namespace, selector, action=f"reading pods of {name}"):
        meta = pod.get("metadata") or {}
        if pod_ready(pod) and not meta.get("deletionTimestamp"):
            return str(meta["name"])
    raise StagingError(f"deployment {name} in {namespace} has no ready pod")


def _scale_to_zero(
    api: Api, namespace: str, deployments: Sequence[str], log: Callable[[str], None]
) -> None:
    """Best effort: a kept namespace keeps the load generators' objects, not running pods."""
    for name in deployments:
        try:
            api.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                action=f"scaling deployment {name} to zero",
                body={"spec": {"replicas": 0}},
                content_type="application/merge-patch+json",
            )
        except StagingError as exc:
            log(f"kubernetes: WARNING: {exc}")
            return
    log(f"kubernetes: load generators in {namespace} scaled to zero (the namespace is kept)")
