"""The target's address: where the load reaches the Service the scenario names.

``staging.kubernetes.url`` (a template) wins when set and is handled by the provisioner; else, in
this order: the Service's LoadBalancer address; inside a pod, the Service's cluster DNS name; a
node address and the Service's nodePort, if a TCP connection to it succeeds from here; else a
port-forward through the API server to a ready pod behind the Service (127.0.0.1 listener).
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

from perfgate.errors import StagingError
from perfgate.models import KubernetesSpec
from perfgate.staging.kubernetes import timing
from perfgate.staging.kubernetes.portforward import PortForwarder
from perfgate.staging.kubernetes.readiness import pod_ready, pods_of
from perfgate.staging.kubernetes.rest import Api, ApiError, list_items

__all__ = ["backend_pod", "find_endpoint"]

_MAX_NODE_PROBES = 3


def _tcp_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timing.TIMING.probe_timeout_s):
            return True
    except OSError:
        return False


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _service(
    api: Api, spec: KubernetesSpec, namespace: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the Service, its spec, its port named by ``staging.kubernetes.port``)."""
    _, svc = api.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/services/{spec.service}",
        action=f"reading service {spec.service}",
    )
    svc_spec = svc.get("spec") or {}
    port = next((p for p in svc_spec.get("ports") or () if p.get("port") == spec.port), None)
    if port is None:
        raise StagingError(f"service {spec.service} in {namespace} has no port {spec.port}")
    return svc, svc_spec, port


def backend_pod(api: Api, spec: KubernetesSpec, namespace: str) -> tuple[str, int]:
    """(a ready pod behind the scenario's Service, its target port): where to port-forward."""
    _, svc_spec, port = _service(api, spec, namespace)
    return _backend_pod(api, spec, namespace, svc_spec, port)


def find_endpoint(
    api: Api, spec: KubernetesSpec, namespace: str, log: Callable[[str], None]
) -> tuple[str, str, PortForwarder | None]:
    """(url, how it was found, port-forwarder to close or None)."""
    svc, svc_spec, port = _service(api, spec, namespace)
    for ingress in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ():
        host = ingress.get("ip") or ingress.get("hostname")
        if host:
            return f"http://{_host_for_url(host)}:{spec.port}", "loadbalancer", None
    if api.cluster.in_cluster:
        return f"http://{spec.service}.{namespace}.svc:{spec.port}", "cluster-dns", None
    node_port = port.get("nodePort")
    if isinstance(node_port, int) and node_port > 0:
        for host in _node_hosts(api):
            if _tcp_reachable(host, node_port):
                return f"http://{_host_for_url(host)}:{node_port}", "nodeport", None
        log(f"kubernetes: nodePort {node_port} is not reachable from here; using a port-forward")
    pod, target_port = _backend_pod(api, spec, namespace, svc_spec, port)
    forwarder = PortForwarder(api.cluster, namespace, pod, target_port, log)
    try:
        forwarder.check()
    except BaseException:
        forwarder.close()
        raise
    log(
        f"kubernetes: port-forward 127.0.0.1:{forwarder.port} -> pod {pod}:{target_port} through "
        "the API server; throughput through a tunnel is not a release measurement "
        "(set staging.kubernetes.url or use a NodePort/LoadBalancer Service for that)"
    )
    return f"http://127.0.0.1:{forwarder.port}", "port-forward", forwarder


def _node_hosts(api: Api) -> list[str]:
    """Node addresses worth trying for a nodePort, best first, then the API server's host."""
    hosts: list[str] = []
    try:
        nodes = list_items(api, "/api/v1/nodes", action="listing nodes")
    except ApiError as exc:
        if exc.status != 403:  # RBAC without `list nodes` is fine: try the API host
            raise
        nodes = []
    for kind in ("ExternalIP", "InternalIP"):
        for node in nodes:
            for addr in (node.get("status") or {}).get("addresses") or ():
                if addr.get("type") == kind and addr.get("address") not in hosts:
                    hosts.append(str(addr["address"]))
    # every node serves every nodePort: a few candidates are enough, and each costs a probe
    hosts = hosts[:_MAX_NODE_PROBES]
    # kind and k3d publish node ports on the host that serves the API (e.g. 127.0.0.1)
    api_host = urllib.parse.urlsplit(api.server).hostname
    if api_host and api_host not in hosts and api_host != "0.0.0.0":
        hosts.append(api_host)
    return hosts


def _backend_pod(
    api: Api, spec: KubernetesSpec, namespace: str, svc_spec: dict[str, Any], port: dict[str, Any]
) -> tuple[str, int]:
    selector = svc_spec.get("selector") or {}
    if not selector:
        raise StagingError(
            f"service {spec.service} has no selector, so no pod to port-forward to; "
            "set staging.kubernetes.url"
        )
    for pod in pods_of(api, namespace, selector, action=f"reading pods of service {spec.service}"):
        if not pod_ready(pod) or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        target: Any = port.get("targetPort", port.get("port"))
        if isinstance(target, str):  # a named container port
            numbers = [
                p.get("containerPort")
                for c in (pod.get("spec") or {}).get("containers") or ()
                for p in c.get("ports") or ()
                if p.get("name") == target
            ]
            if not numbers:
                continue
            target = numbers[0]
        return str(pod["metadata"]["name"]), int(target)
    raise StagingError(f"service {spec.service} in {namespace} has no ready pod to forward to")
