"""Kubernetes staging: per-container CPU and memory of every workload in the staging namespace.

Usage comes from the metrics API (``metrics.k8s.io`` PodMetrics, what ``kubectl top`` reads);
each container's requests and limits, restarts and OOM kills from its pod. The API is reached
through the staging provider's client (``api_get``), so this module never imports ``kubernetes``.
Without a metrics API (404: no metrics-server) usage is not measured and every window says so.

Pod names change with every rollout and differ between the two namespaces of a side-by-side run,
so a series is named by its *workload* (the pod's controller: a Deployment, StatefulSet or
DaemonSet; see :func:`workload`) and container. A workload with several replicas is one series:
its busiest replica in the window (the fullest of its limit, else the highest use), whose pod is
recorded in ``ResourceReading.pod`` beside the number of replicas measured.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from perfgate.errors import PerfgateError
from perfgate.models import ResourceReading
from perfgate.readings import busier
from perfgate.telemetry.base import Snapshots, Summary, Unavailable, mean_in, series

ApiGet = Callable[[str], tuple[int, Any]]  # path -> (HTTP status, decoded JSON)
SPEC_EVERY = 4  # pod specs and statuses are read at every 4th sample (they rarely change)

_SUFFIX = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
)


def quantity(text: Any) -> float | None:
    """A Kubernetes quantity ("250m", "1.5", "64Mi", "1500000n") as a number; None if not one."""
    m = _QUANTITY.match(str(text).strip())
    if m is None:
        return None
    return float(m.group(1)) * _SUFFIX[m.group(2) or ""]


def workload(meta: dict[str, Any]) -> str:
    """The workload a pod belongs to (its metadata, from the pods API or PodMetrics), stable
    across rollouts and namespaces; the pod's own name when it has no controller.

    A Deployment's pods are owned by a ReplicaSet named ``<deployment>-<pod-template-hash>``;
    StatefulSet and DaemonSet pods by their workload itself. Without owner references (PodMetrics
    carry only the labels) the ``pod-template-hash`` and StatefulSet labels say the same.
    """
    name = str(meta.get("name") or "")
    labels = meta.get("labels") or {}
    template_hash = str(labels.get("pod-template-hash") or "")
    refs = [o for o in meta.get("ownerReferences") or () if isinstance(o, dict)]
    owner = next((o for o in refs if o.get("controller")), refs[0] if refs else None)
    if owner is not None and owner.get("name"):
        owner_name = str(owner["name"])
        if owner.get("kind") == "ReplicaSet" and owner_name.endswith(f"-{template_hash}"):
            return owner_name[: -len(template_hash) - 1]
        return owner_name
    if template_hash and f"-{template_hash}-" in name:
        return name[: name.rindex(f"-{template_hash}-")]
    if labels.get("statefulset.kubernetes.io/pod-name") == name and "-" in name:
        return name.rsplit("-", 1)[0]
    return name


class KubeSampler:
    """Pods of one namespace: usage (metrics API), limits, restarts and OOM kills (pods API)."""

    label = "the Kubernetes metrics API (metrics.k8s.io)"

    def __init__(self, api_get: ApiGet, namespace: str, *, exclude_prefix: str | None = None):
        self.api_get = api_get
        self.namespace = namespace
        self.exclude = exclude_prefix  # perfgate's own load-generator pods are not the target
        self.count = 0
        self.specs: dict[str, dict[str, float | str | None]] = {}  # "pod/container" -> spec
        self.owners: dict[str, str] = {}  # pod -> its workload (from the pods API)
        self.asked: set[str] = set()  # pods the pods API was read again for

    def _get(self, path: str) -> tuple[int, Any]:
        try:
            return self.api_get(path)
        except PerfgateError as exc:
            raise Unavailable(f"{self.label}: {exc}") from exc

    def sample(self) -> dict[Any, Any]:
        fresh = self.count % SPEC_EVERY == 0
        if fresh:
            self._read_pods()
        self.count += 1
        items = self._pod_metrics()
        new = {pod for pod, _ in items} - set(self.owners) - self.asked
        if new and not fresh:
            self.asked |= new  # once per pod: a pods API that does not answer is not hammered
            self._read_pods()  # a new pod (a rollout, a restage): its owner and limits now
        snap: dict[Any, Any] = {"specs": dict(self.specs), "owners": {}}
        for pod, item in items:
            snap["owners"][pod] = self.owners.get(pod) or workload(item.get("metadata") or {})
            for c in item.get("containers") or ():
                usage = c.get("usage") or {}
                who = f"{pod}/{c.get('name')}"
                snap[("cpu", who)] = quantity(usage.get("cpu"))
                snap[("memory", who)] = quantity(usage.get("memory"))
        return snap

    def _pod_metrics(self) -> list[tuple[str, dict[str, Any]]]:
        """(pod name, PodMetrics) of the namespace's pods, perfgate's own excluded."""
        path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{self.namespace}/pods"
        status, data = self._get(path)
        if status == 404:
            raise Unavailable(
                f"no metrics API in the cluster ({path}: 404; install metrics-server): "
                f"pod CPU and memory not measured"
            )
        if status == 403:
            raise Unavailable(
                f"not allowed to list pods.metrics.k8s.io in {self.namespace} (403; grant it as "
                f"scenarios/k8s/rbac.yaml does): pod CPU and memory not measured"
            )
        if status != 200 or not isinstance(data, dict):
            raise Unavailable(f"{self.label} answered HTTP {status}")
        out = []
        for item in data.get("items") or ():
            pod = str((item.get("metadata") or {}).get("name", ""))
            if not (self.exclude and pod.startswith(self.exclude)):
                out.append((pod, item))
        return out

    def _read_pods(self) -> None:
        status, data = self._get(f"/api/v1/namespaces/{self.namespace}/pods")
        if status != 200 or not isinstance(data, dict):
            return
        specs: dict[str, dict[str, float | str | None]] = {}
        owners: dict[str, str] = {}
        for pod in data.get("items") or ():
            meta = pod.get("metadata") or {}
            name = str(meta.get("name", ""))
            if self.exclude and name.startswith(self.exclude):
                continue
            owners[name] = workload(meta)
            statuses = {
                s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or ()
            }
            for c in (pod.get("spec") or {}).get("containers") or ():
                specs[f"{name}/{c.get('name')}"] = _spec(c, statuses.get(c.get("name")) or {})
        self.specs, self.owners = specs, owners

    def summarise(self, snaps: Snapshots, t0: float, t1: float) -> Summary:
        who = sorted({k[1] for _, s in snaps for k in s if isinstance(k, tuple)})
        specs = next((s["specs"] for t, s in reversed(snaps) if t <= t1 + 1), snaps[-1][1]["specs"])
        owners: dict[str, str] = {}
        for _, s in snaps:
            owners.update(s.get("owners") or {})
        groups: dict[tuple[str, str], list[ResourceReading]] = {}
        cores = 0.0
        for container in who:
            pod, _, name = container.partition("/")
            key = f"{owners.get(pod) or pod}/{name}"
            for kind in ("cpu", "memory"):
                value = mean_in(series(snaps, (kind, container)), t0, t1)
                if value is None:
                    continue
                cores += value if kind == "cpu" else 0.0
                reading = _reading(key, kind, value, specs.get(container) or {}, pod)
                groups.setdefault((key, kind), []).append(reading)
        readings = [_busiest(group) for _, group in sorted(groups.items())]
        return Summary(
            readings=tuple(readings),
            cpu_cores=cores if readings else None,
            events=_restarts(snaps, t0, t1),
        )


def _spec(c: dict[str, Any], st: dict[str, Any]) -> dict[str, float | str | None]:
    """What a container's pod says of it: requests, limits, restarts and why it last stopped."""
    res = c.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    last = ((st.get("lastState") or {}).get("terminated") or {}).get("reason")
    return {
        "cpu_limit": quantity(limits.get("cpu")),
        "cpu_request": quantity(requests.get("cpu")),
        "memory_limit": quantity(limits.get("memory")),
        "memory_request": quantity(requests.get("memory")),
        "restarts": float(st.get("restartCount") or 0),
        "last_reason": str(last or ""),
    }


def _reading(key: str, kind: str, value: float, spec: dict[str, Any], pod: str) -> ResourceReading:
    """One container's reading: CPU in cores, memory in MB (MiB), against its limit."""
    scale = 1.0 if kind == "cpu" else 1 / 2**20
    limit, request = spec.get(f"{kind}_limit"), spec.get(f"{kind}_request")
    limit = limit * scale if isinstance(limit, float) and limit > 0 else None
    request = request * scale if isinstance(request, float) and request > 0 else None
    return ResourceReading(
        name=f"container {key} {'CPU' if kind == 'cpu' else 'memory'}",
        source="kubernetes",
        kind=kind,
        value=value * scale,
        unit="cores" if kind == "cpu" else "MB",
        limit=limit,
        utilisation=value * scale / limit if limit else None,
        request=request,
        pod=pod,
    )


def _busiest(group: list[ResourceReading]) -> ResourceReading:
    """A workload's replicas as one series: the busiest one, with how many were measured."""
    top = group[0]
    for r in group[1:]:
        top = r if busier(r, top) else top
    return dataclasses.replace(top, replicas=len(group))


def _restarts(snaps: Snapshots, t0: float, t1: float) -> tuple[str, ...]:
    """Containers whose restart count grew within the window (with the last reason: OOMKilled)."""
    inside = [s["specs"] for t, s in snaps if t0 <= t <= t1 + 1]
    before = [s["specs"] for t, s in snaps if t <= t0] or inside[:1]
    if not inside or not before:
        return ()
    events = []
    for container, spec in inside[-1].items():
        was = (before[-1].get(container) or {}).get("restarts", spec["restarts"])
        grew = int(float(spec["restarts"] or 0) - float(was or 0))
        if grew > 0:
            why = f" ({spec['last_reason']})" if spec["last_reason"] else ""
            oom = " — OOM killed" if spec["last_reason"] == "OOMKilled" else ""
            events.append(f"container {container} restarted {grew}×{why}{oom}")
    return tuple(events)
