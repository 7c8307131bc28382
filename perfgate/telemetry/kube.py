"""Kubernetes staging: per-container CPU and memory of every pod in the staging namespace.

Usage comes from the metrics API (``metrics.k8s.io`` PodMetrics, what ``kubectl top`` reads);
each container's requests and limits, restarts and OOM kills from its pod. The API is reached
through the staging provider's client (``api_get``), so this module never imports ``kubernetes``.
Without a metrics API (404: no metrics-server) usage is not measured and every window says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from perfgate.errors import PerfgateError
from perfgate.models import ResourceReading
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


class KubeSampler:
    """Pods of one namespace: usage (metrics API), limits, restarts and OOM kills (pods API)."""

    label = "the Kubernetes metrics API (metrics.k8s.io)"

    def __init__(self, api_get: ApiGet, namespace: str, *, exclude_prefix: str | None = None):
        self.api_get = api_get
        self.namespace = namespace
        self.exclude = exclude_prefix  # perfgate's own load-generator pods are not the target
        self.count = 0
        self.specs: dict[str, dict[str, float | str | None]] = {}

    def _get(self, path: str) -> tuple[int, Any]:
        try:
            return self.api_get(path)
        except PerfgateError as exc:
            raise Unavailable(f"{self.label}: {exc}") from exc

    def sample(self) -> dict[Any, Any]:
        if self.count % SPEC_EVERY == 0:
            self._read_pods()
        self.count += 1
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
        snap: dict[Any, Any] = {"specs": dict(self.specs)}
        for item in data.get("items") or ():
            pod = str((item.get("metadata") or {}).get("name", ""))
            if self.exclude and pod.startswith(self.exclude):
                continue
            for c in item.get("containers") or ():
                usage = c.get("usage") or {}
                who = f"{pod}/{c.get('name')}"
                snap[("cpu", who)] = quantity(usage.get("cpu"))
                snap[("memory", who)] = quantity(usage.get("memory"))
        return snap

    def _read_pods(self) -> None:
        status, data = self._get(f"/api/v1/namespaces/{self.namespace}/pods")
        if status != 200 or not isinstance(data, dict):
            return
        specs: dict[str, dict[str, float | str | None]] = {}
        for pod in data.get("items") or ():
            name = str((pod.get("metadata") or {}).get("name", ""))
            if self.exclude and name.startswith(self.exclude):
                continue
            statuses = {
                s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or ()
            }
            for c in (pod.get("spec") or {}).get("containers") or ():
                res = c.get("resources") or {}
                st = statuses.get(c.get("name")) or {}
                last = ((st.get("lastState") or {}).get("terminated") or {}).get("reason")
                specs[f"{name}/{c.get('name')}"] = {
                    "cpu_limit": quantity((res.get("limits") or {}).get("cpu")),
                    "cpu_request": quantity((res.get("requests") or {}).get("cpu")),
                    "memory_limit": quantity((res.get("limits") or {}).get("memory")),
                    "restarts": float(st.get("restartCount") or 0),
                    "last_reason": str(last or ""),
                }
        self.specs = specs

    def summarise(self, snaps: Snapshots, t0: float, t1: float) -> Summary:
        who = sorted({k[1] for _, s in snaps for k in s if isinstance(k, tuple)})
        specs = next((s["specs"] for t, s in reversed(snaps) if t <= t1 + 1), snaps[-1][1]["specs"])
        readings, cores = [], 0.0
        for container in who:
            spec = specs.get(container) or {}
            cpu = mean_in(series(snaps, ("cpu", container)), t0, t1)
            mem = mean_in(series(snaps, ("memory", container)), t0, t1)
            if cpu is not None:
                cores += cpu
                readings.append(
                    _reading(
                        f"container {container} CPU", "cpu", cpu, "cores", spec.get("cpu_limit")
                    )
                )
            if mem is not None:
                limit = spec.get("memory_limit")
                readings.append(
                    _reading(
                        f"container {container} memory",
                        "memory",
                        mem / 2**20,
                        "MB",
                        limit / 2**20 if isinstance(limit, float) else None,
                    )
                )
        return Summary(
            readings=tuple(readings),
            cpu_cores=cores if readings else None,
            events=_restarts(snaps, t0, t1),
        )


def _reading(name: str, kind: str, value: float, unit: str, limit: Any) -> ResourceReading:
    limit = limit if isinstance(limit, float) and limit > 0 else None
    return ResourceReading(
        name=name,
        source="kubernetes",
        kind=kind,
        value=value,
        unit=unit,
        limit=limit,
        utilisation=value / limit if limit else None,
    )


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
