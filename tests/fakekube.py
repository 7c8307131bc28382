# ruff: noqa: E501  (verbatim API server messages read better unbroken)
"""A small fake of the Kubernetes API server, over real HTTP on 127.0.0.1, for perfgate's tests.

The real ``kubernetes`` client talks to it through a generated kubeconfig, so URL building,
(de)serialisation, auth headers, error mapping, watch streaming and the websocket port-forward of
the client are all exercised. Standard library plus PyYAML and kubernetes-validate (both already
dependencies of perfgate).

Emulated:

- discovery (``/version``, ``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``) for the
  built-in kinds perfgate's manifests use; bearer-token auth (401 on a wrong token);
- namespaces: Active → ``DELETE`` → Terminating (``deletionTimestamp``, phase) → contents deleted →
  gone after ``delete_delay_s`` (None: stuck in Terminating forever); creating into a terminating
  namespace is 403, into a missing one 404;
- Deployments, StatefulSets, DaemonSets → pods (ContainerCreating) → after ``ready_delay_s`` pods
  Running/Ready and the owner's status available (``observedGeneration``, ``updatedReplicas`` …);
  images in ``broken_images`` stay in ``ImagePullBackOff`` (with a Warning event), images in
  ``failing_images`` crash (``CrashLoopBackOff``; a Job's pod fails and the Job gets ``Failed``);
- Jobs → a pod → Complete after ``job_delay_s``; Services (clusterIP 127.0.2.x, nodePorts from
  30000 unless given, duplicates refused) and their Endpoints; a node at ``127.0.0.1``;
- list with label/field selectors, watch (initial ADDED events, then changes, ends at
  ``timeoutSeconds``), create, get, replace (409 on a stale resourceVersion), merge and strategic
  merge patch (both as RFC 7386 merge), server-side apply (``application/apply-patch+yaml``,
  ``fieldManager`` required, creates or merges), delete with ``preconditions`` (409 on a UID
  mismatch), ``dryRun=All``, ``fieldValidation`` Strict (400) / Warn (``Warning`` header);
- realistic errors as ``Status`` objects: 400 (undecodable), 401, 403 (RBAC via ``forbid``,
  terminating namespace), 404, 405, 409 (AlreadyExists, Conflict), 415, 422 (schema via
  kubernetes-validate, selector not matching the template labels, Job restartPolicy);
- ``pods/portforward`` over a websocket (``v4.channel.k8s.io``), connecting to
  ``127.0.0.1:<containerPort>`` (or ``port_map[containerPort]``), like kubelet would to the pod;
  a pod running an image in ``image_ports`` is served at ``127.0.0.1:image_ports[image]``
  instead (different images serve differently, e.g. two releases side by side);
- the metrics API (``metrics.k8s.io/v1beta1`` PodMetrics, what metrics-server serves; off with
  ``metrics_api = False``, then 404 like a cluster without metrics-server), with usage driven by
  the load the fake sees: every HTTP request a port-forward carries to a pod costs its first
  container ``cpu_per_request_s`` of CPU, up to its CPU limit (the kernel throttles a container
  there), over a 1-s window; other containers idle at ``idle_cpu_cores``; memory
  ``memory_base_bytes``; each PodMetrics carries its pod's labels, as metrics-server's do. ``oom_after_requests``: a pod's first container is OOM killed and
  restarted (``restartCount``, ``lastState.terminated.reason``) after that many requests;
- ``tcpSocket`` readiness probes: a running pod whose container has one becomes Ready only once
  ``127.0.0.1:<port>`` (the same mapping as the port-forward; a named port is looked up in the
  container's ports) accepts a connection, probed every 0.1 s (other probes: ready at once).

Not emulated (kept out on purpose): RBAC rules beyond ``forbid``, admission, managedFields and
apply conflicts (server-side apply is a merge here), ReplicaSets, pod logs, 410 Gone, TLS.

Knobs are plain attributes and may be changed while the server runs. Run it by hand with
``python tests/fakekube.py --kubeconfig /tmp/fake.kubeconfig`` to point ``perfgate`` at it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import functools
import hashlib
import heapq
import http
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

KUBE_VERSION = "1.37"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ("status",)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = (
    ResourceType("", "v1", "namespaces", "Namespace", False, ("status", "finalize")),
    ResourceType("", "v1", "nodes", "Node", False),
    ResourceType("", "v1", "pods", "Pod", True, ("status", "portforward", "log")),
    ResourceType("", "v1", "services", "Service", True),
    ResourceType("", "v1", "endpoints", "Endpoints", True, ()),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ()),
    ResourceType("", "v1", "secrets", "Secret", True, ()),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ()),
    ResourceType("", "v1", "events", "Event", True, ()),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True),
    ResourceType("", "v1", "limitranges", "LimitRange", True, ()),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("status", "scale")),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, ("status", "scale")),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True),
    ResourceType("batch", "v1", "jobs", "Job", True),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ()),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, ()),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, ()),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, ()),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {r.kind: r for r in RESOURCES}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Request:
    """One request the fake answered (for tests that assert what reached the "cluster")."""

    method: str
    path: str
    query: dict[str, str]
    verb: str
    resource: str
    namespace: str
    name: str
    status: int


class ApiError(Exception):
    """Answer with a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _parse_selector(text: str) -> list[tuple[str, str, Any]]:
    terms: list[tuple[str, str, Any]] = []
    for part in re.split(r",(?![^()]*\))", text or ""):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            terms.append((m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            terms.append((k.strip(), "!=", v.strip()))
        elif "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            terms.append((k.strip(), "=", v.strip()))
        elif part.startswith("!"):
            terms.append((part[1:].strip(), "!", None))
        else:
            terms.append((part, "exists", None))
    return terms


def _matches(terms: list[tuple[str, str, Any]], values: dict[str, Any]) -> bool:
    for key, op, want in terms:
        have = values.get(key)
        if (
            (op == "=" and have != want)
            or (op == "!=" and have == want)
            or (op == "in" and have not in want)
            or (op == "notin" and have in want)
            or (op == "exists" and key not in values)
            or (op == "!" and key in values)
        ):
            return False
    return True


def _field_values(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    values = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
    status = obj.get("status") or {}
    if "phase" in status:
        values["status.phase"] = status["phase"]
    if obj.get("kind") == "Event" or "involvedObject" in obj:
        values["type"] = obj.get("type")
        values["reason"] = obj.get("reason")
        values["involvedObject.name"] = (obj.get("involvedObject") or {}).get("name")
    return values


class FakeKube:
    """The fake API server. ``start()`` it (or use it as a context manager), then point clients at ``url``."""

    def __init__(
        self,
        *,
        ready_delay_s: float | None = 0.1,
        delete_delay_s: float | None = 0.1,
        job_delay_s: float | None = 0.1,
        token: str = "fake-token-do-not-print",
        user: str = "system:serviceaccount:ci:perfgate",
    ) -> None:
        self.ready_delay_s = ready_delay_s
        self.delete_delay_s = delete_delay_s
        self.job_delay_s = job_delay_s
        self.token = token
        self.user = user
        self.broken_images: set[str] = set()
        self.failing_images: set[str] = set()
        self.forbid: set[tuple[str, str]] = set()  # (verb, resource) or ("*", resource) → 403
        self.port_map: dict[int, int] = {}  # containerPort → 127.0.0.1 port for port-forwards
        self.image_ports: dict[str, int] = {}  # image → 127.0.0.1 port its pods serve on
        self.metrics_api = True  # serve metrics.k8s.io (PodMetrics)
        self.cpu_per_request_s = 0.002  # CPU seconds a forwarded request costs the pod
        self.idle_cpu_cores = 0.002
        self.memory_base_bytes = 40 * 2**20
        self.oom_after_requests: int | None = None
        self.served: dict[tuple[str, str], list[float]] = {}  # (ns, pod) -> request times
        self.requests: list[Request] = []
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (qualified, ns, name)
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, type, qualified, obj)
        self.cond = threading.Condition(threading.RLock())
        self._rv = 0
        self._ips = itertools.count(2)
        self._node_ports = itertools.count(30000)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stopping = False
        self._sockets: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        with self.cond:
            self._put_node()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeKube:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        for target, name in (
            (functools.partial(self._httpd.serve_forever, poll_interval=0.05), "fakekube-http"),
            (self._controller, "fakekube-ctl"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self.cond:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        context: str = "fake",
        token: str | None = None,
        extra_contexts: dict[str, str] | None = None,
    ) -> Path:
        """A kubeconfig for this server (``extra_contexts``: more context name → server URL)."""
        clusters = [{"name": "fake", "cluster": {"server": self.url}}]
        contexts = [{"name": context, "context": {"cluster": "fake", "user": "perfgate-ci"}}]
        for name, server in (extra_contexts or {}).items():
            clusters.append({"name": f"c-{name}", "cluster": {"server": server}})
            contexts.append(
                {"name": name, "context": {"cluster": f"c-{name}", "user": "perfgate-ci"}}
            )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "users": [{"name": "perfgate-ci", "user": {"token": token or self.token}}],
            "contexts": contexts,
            "current-context": context,
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # -- inspection helpers for tests -------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects.get((_BY_KIND[kind].qualified, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def names(self, kind: str, namespace: str = "") -> list[str]:
        qualified = _BY_KIND[kind].qualified
        with self.cond:
            return sorted(n for (q, ns, n) in self.objects if q == qualified and ns == namespace)

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    def add_namespace(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        age_s: float = 0.0,
    ) -> dict[str, Any]:
        """Create a namespace directly (as another tool would), optionally backdated."""
        created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
        obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
        }
        with self.cond:
            stored = self._create(_BY_KIND["Namespace"], "", obj)
            stored["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
            return copy.deepcopy(stored)

    def set_annotation(self, namespace: str, key: str, value: str) -> None:
        with self.cond:
            obj = self.objects[("namespaces", "", namespace)]
            obj["metadata"].setdefault("annotations", {})[key] = value
            self._bump(_BY_KIND["Namespace"], obj, "MODIFIED")

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
        return True

    # -- store ------------------------------------------------------------------------------

    def _bump(self, rt: ResourceType, obj: dict[str, Any], event: str) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        self.objects[(rt.qualified, meta.get("namespace", ""), meta["name"])] = obj
        self.events.append((self._rv, event, rt.qualified, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _remove(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((rt.qualified, namespace, name), None)
        if obj is None:
            return None
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.events.append((self._rv, "DELETED", rt.qualified, copy.deepcopy(obj)))
        self.cond.notify_all()
        # cascading deletion of owned objects (the garbage collector, at once)
        uid = obj["metadata"].get("uid")
        for (q, ns, n), child in list(self.objects.items()):
            owners = child["metadata"].get("ownerReferences") or ()
            if ns == namespace and any(o.get("uid") == uid for o in owners):
                self._remove(_qualified_type(q), ns, n)
        return obj

    def _schedule(self, delay_s: float | None, fn: Callable[[], None]) -> None:
        if delay_s is None:
            return  # frozen: this transition never happens
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), fn))
        self.cond.notify_all()

    def _controller(self) -> None:
        with self.cond:
            while not self._stopping:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, fn = heapq.heappop(self._timers)
                    fn()
                wait = self._timers[0][0] - now if self._timers else 0.5
                self.cond.wait(max(0.001, min(wait, 0.5)))

    # -- object lifecycle (all under self.cond) ---------------------------------------------

    def _namespace_state(self, namespace: str) -> str | None:
        obj = self.objects.get(("namespaces", "", namespace))
        if obj is None:
            return None
        return "Terminating" if obj["metadata"].get("deletionTimestamp") else "Active"

    def _create(
        self, rt: ResourceType, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if not isinstance(name, str) or not name:
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
            )
        if rt.namespaced:
            state = self._namespace_state(namespace)
            if state is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            if state == "Terminating":
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{rt.qualified} "{name}" is forbidden: unable to create new content in namespace {namespace} because it is being terminated',
                    {"name": name, "kind": rt.plural},
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if (rt.qualified, namespace if rt.namespaced else "", name) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified} "{name}" already exists',
                {"name": name, "kind": rt.plural},
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        self._default(rt, obj)
        _validate(rt, obj)
        if rt.kind == "Service":
            self._allocate_service(obj)
        if dry_run:
            return obj
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        self._bump(rt, obj, "ADDED")
        self._after_write(rt, obj, spec_changed=True)
        return obj

    def _default(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        spec = (
            obj.setdefault("spec", {})
            if rt.kind
            not in (
                "ConfigMap",
                "Secret",
                "ServiceAccount",
                "Endpoints",
                "Event",
                "Role",
                "RoleBinding",
                "ClusterRole",
            )
            else None
        )
        if rt.kind == "Namespace":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
            spec.setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
        elif rt.kind in ("Deployment", "StatefulSet") and spec is not None:
            spec.setdefault("replicas", 1)
            obj.setdefault("status", {})
        elif rt.kind == "Job" and spec is not None:
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("backoffLimit", 6)
            obj.setdefault("status", {})
        elif rt.kind == "Service" and spec is not None:
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            for p in spec.get("ports") or ():
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})

    def _allocate_service(self, obj: dict[str, Any]) -> None:
        spec = obj["spec"]
        if spec.get("clusterIP") != "None" and not spec.get("clusterIP"):
            spec["clusterIP"] = f"127.0.2.{next(self._ips) % 250 + 2}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            used = {
                p.get("nodePort")
                for (q, _, _), o in self.objects.items()
                if q == "services" and o["metadata"].get("uid") != obj["metadata"].get("uid")
                for p in (o.get("spec") or {}).get("ports") or ()
            }
            for i, p in enumerate(spec.get("ports") or ()):
                if p.get("nodePort"):
                    if p["nodePort"] in used:
                        raise ApiError(
                            422,
                            "Invalid",
                            f'Service "{obj["metadata"]["name"]}" is invalid: spec.ports[{i}].nodePort: Invalid value: {p["nodePort"]}: provided port is already allocated',
                        )
                else:
                    port = next(self._node_ports)
                    while port in used:
                        port = next(self._node_ports)
                    p["nodePort"] = port

    def _replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        new: dict[str, Any],
        *,
        dry_run: bool = False,
        status_only: bool = False,
    ) -> dict[str, Any]:
        key = (rt.qualified, namespace if rt.namespaced else "", name)
        old = self.objects.get(key)
        if old is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.qualified} "{name}" not found',
                {"name": name, "kind": rt.plural},
            )
        obj = copy.deepcopy(new)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                {"name": name, "kind": rt.plural},
            )
        if status_only:
            merged = copy.deepcopy(old)
            merged["status"] = obj.get("status", {})
        else:
            merged = copy.deepcopy(obj)
            merged["status"] = copy.deepcopy(old.get("status", {}))
            keep = {
                k: old["metadata"][k]
                for k in (
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "namespace",
                    "deletionTimestamp",
                )
                if k in old["metadata"]
            }
            merged["metadata"] = {**meta, **keep, "name": name}
            merged["apiVersion"], merged["kind"] = rt.api_version, rt.kind
            self._default(rt, merged)
            if rt.kind == "Namespace":
                merged["status"] = copy.deepcopy(old["status"])
            _validate(rt, merged)
            if rt.kind == "Service":
                self._allocate_service(merged)
        spec_changed = merged.get("spec") != old.get("spec")
        if spec_changed:
            merged["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if dry_run:
            return merged
        if _strip_rv(merged) == _strip_rv(old):
            return copy.deepcopy(old)  # a no-op write does not bump the resourceVersion
        self._bump(rt, merged, "MODIFIED")
        self._after_write(rt, merged, spec_changed=spec_changed and not status_only)
        return merged

    def _delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        key = (rt.qualified, namespace if rt.namespaced else "", name)
        obj = self.objects.get(key)
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.qualified} "{name}" not found',
                {"name": name, "kind": rt.plural},
            )
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {obj['metadata']['uid']}",
                {"name": name, "kind": rt.plural},
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]
        ):
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in object meta: {obj['metadata']['resourceVersion']}",
            )
        if dry_run:
            return copy.deepcopy(obj)
        if rt.kind == "Namespace":
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["status"] = {
                    "phase": "Terminating",
                    "conditions": [
                        {
                            "type": "NamespaceDeletionContentFailure",
                            "status": "False",
                            "reason": "ContentDeleted",
                            "lastTransitionTime": _now(),
                        }
                    ],
                }
                self._bump(rt, obj, "MODIFIED")
                self._schedule(self.delete_delay_s, lambda: self._finalize_namespace(name))
            return copy.deepcopy(obj)
        removed = self._remove(rt, key[1], name)
        if rt.kind == "Pod":
            self._sync_endpoints(namespace)
        return removed or {}

    def _finalize_namespace(self, name: str) -> None:
        if ("namespaces", "", name) not in self.objects:
            return
        for q, ns, n in list(self.objects):
            if ns == name:
                self._remove(_qualified_type(q), ns, n)
        self._remove(_BY_KIND["Namespace"], "", name)

    # -- controllers ------------------------------------------------------------------------

    def _after_write(self, rt: ResourceType, obj: dict[str, Any], *, spec_changed: bool) -> None:
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        if rt.kind in ("Deployment", "StatefulSet", "DaemonSet") and spec_changed:
            self._rollout(rt, ns, name)
        elif rt.kind == "Job" and spec_changed and not obj.get("status", {}).get("startTime"):
            self._start_job(ns, name)
        elif rt.kind == "Service":
            self._sync_endpoints(ns)

    def _images(self, template: dict[str, Any]) -> list[str]:
        return [
            str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or ()
        ]

    def _new_pod(
        self,
        owner: dict[str, Any],
        owner_kind: str,
        name: str,
        template: dict[str, Any],
        extra_labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        ns = owner["metadata"]["namespace"]
        spec = copy.deepcopy(template.get("spec") or {})
        spec.setdefault("restartPolicy", "Always")
        spec["nodeName"] = "fake-node"
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(extra_labels or {})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner_kind,
                        "name": owner["metadata"]["name"],
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": spec,
            "status": {
                "phase": "Pending",
                "hostIP": "127.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False"},
                ],
                "containerStatuses": [
                    {
                        "name": c.get("name", "c"),
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                    for c in spec.get("containers") or ()
                ],
            },
        }
        self._bump(_BY_KIND["Pod"], pod, "ADDED")
        return pod

    def _rollout(self, rt: ResourceType, ns: str, name: str) -> None:
        owner = self.objects[(rt.qualified, ns, name)]
        spec = owner["spec"]
        template = spec.get("template") or {}
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        want = 1 if rt.kind == "DaemonSet" else int(spec.get("replicas", 1))
        uid = owner["metadata"]["uid"]
        pods = [
            p
            for (q, pns, _), p in self.objects.items()
            if q == "pods"
            and pns == ns
            and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or ())
        ]
        for pod in pods:  # a new template replaces every pod (no surge: the fake is impatient)
            if pod["metadata"]["labels"].get("pod-template-hash") != digest:
                self._remove(_BY_KIND["Pod"], ns, pod["metadata"]["name"])
        current = [
            p
            for p in pods
            if p["metadata"]["labels"].get("pod-template-hash") == digest
            and ("pods", ns, p["metadata"]["name"]) in self.objects
        ]
        for pod in current[want:]:
            self._remove(_BY_KIND["Pod"], ns, pod["metadata"]["name"])
        for i in range(len(current), want):
            if rt.kind == "StatefulSet":
                pod_name = f"{name}-{i}"
            else:
                pod_name = f"{name}-{digest[:8]}-{uuid.uuid4().hex[:5]}"
            self._new_pod(owner, rt.kind, pod_name, template, {"pod-template-hash": digest})
        self._owner_status(rt, ns, name)
        self._sync_endpoints(ns)
        self._schedule(self.ready_delay_s, lambda: self._start_pods(rt, ns, name, digest))

    def _start_pods(self, rt: ResourceType, ns: str, name: str, digest: str) -> None:
        owner = self.objects.get((rt.qualified, ns, name))
        if owner is None:
            return
        uid = owner["metadata"]["uid"]
        for (q, pns, _), pod in list(self.objects.items()):
            if (
                q != "pods"
                or pns != ns
                or not any(
                    o.get("uid") == uid for o in pod["metadata"].get("ownerReferences") or ()
                )
            ):
                continue
            if pod["metadata"]["labels"].get("pod-template-hash") != digest:
                continue
            self._run_pod(pod, restart_policy="Always")
        self._owner_status(rt, ns, name)
        self._sync_endpoints(ns)

    def _run_pod(self, pod: dict[str, Any], *, restart_policy: str) -> str:
        """Move a pending pod on; returns the outcome: running, broken, failed or succeeded."""
        images = [c.get("image", "") for c in pod["spec"].get("containers") or ()]
        statuses = pod["status"]["containerStatuses"]
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        broken = next((i for i in images if i in self.broken_images), None)
        failing = next((i for i in images if i in self.failing_images), None)
        if broken:
            for cs in statuses:
                cs["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{broken}"',
                    }
                }
            self._event(
                ns,
                pod,
                "Failed",
                f'Failed to pull image "{broken}": rpc error: code = NotFound desc = failed to pull and unpack image "{broken}": not found',
            )
            outcome = "broken"
        elif failing and restart_policy == "Always":
            pod["status"]["phase"] = "Running"
            for cs in statuses:
                cs.update(
                    restartCount=3,
                    state={
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off 40s restarting failed container={cs['name']} pod={name}",
                        }
                    },
                    lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
                )
            outcome = "broken"
        elif failing:
            pod["status"]["phase"] = "Failed"
            for cs in statuses:
                cs.update(
                    state={
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "startedAt": _now(),
                            "finishedAt": _now(),
                        }
                    }
                )
            outcome = "failed"
        elif restart_policy != "Always":
            pod["status"]["phase"] = "Succeeded"
            for cs in statuses:
                cs.update(
                    state={
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": _now(),
                            "finishedAt": _now(),
                        }
                    }
                )
            outcome = "succeeded"
        else:
            pod["status"].update(
                phase="Running", podIP=f"127.0.1.{next(self._ips) % 250 + 2}", startTime=_now()
            )
            pod["status"]["conditions"] = [
                {"type": t, "status": "True"}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ]
            for cs in statuses:
                cs.update(ready=True, started=True, state={"running": {"startedAt": _now()}})
            outcome = "running"
            port = self._tcp_probe_port(pod)
            if port is not None:  # Ready only when the probe passes
                for cond in pod["status"]["conditions"]:
                    if cond["type"] in ("ContainersReady", "Ready"):
                        cond["status"] = "False"
                for cs in statuses:
                    cs["ready"] = False
                self._schedule(0.05, lambda: self._probe(ns, name, port))
        self._bump(_BY_KIND["Pod"], pod, "MODIFIED")
        return outcome

    def _local_port(self, pod: dict[str, Any], port: int) -> int:
        """Where on 127.0.0.1 the pod's ``port`` is served: by its image, else ``port_map``."""
        for c in pod["spec"].get("containers") or ():
            if c.get("image") in self.image_ports:
                return self.image_ports[c["image"]]
        return self.port_map.get(port, port)

    def _tcp_probe_port(self, pod: dict[str, Any]) -> int | None:
        for c in pod["spec"].get("containers") or ():
            port = ((c.get("readinessProbe") or {}).get("tcpSocket") or {}).get("port")
            if isinstance(port, str):
                port = next(
                    (p.get("containerPort") for p in c.get("ports") or () if p.get("name") == port),
                    None,
                )
            if isinstance(port, int):
                return port
        return None

    def _probe(self, ns: str, name: str, port: int) -> None:
        pod = self.objects.get(("pods", ns, name))
        if pod is None or pod["status"].get("phase") != "Running":
            return
        try:
            with socket.create_connection(("127.0.0.1", self._local_port(pod, port)), timeout=0.1):
                pass
        except OSError:
            self._schedule(0.1, lambda: self._probe(ns, name, port))
            return
        for cond in pod["status"]["conditions"]:
            cond["status"] = "True"
        for cs in pod["status"]["containerStatuses"]:
            cs["ready"] = True
        self._bump(_BY_KIND["Pod"], pod, "MODIFIED")
        for ref in pod["metadata"].get("ownerReferences") or ():
            if ref.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
                self._owner_status(_BY_KIND[ref["kind"]], ns, ref["name"])
        self._sync_endpoints(ns)

    def _event(self, ns: str, about: dict[str, Any], reason: str, message: str) -> None:
        if self._namespace_state(ns) != "Active":
            return
        name = f"{about['metadata']['name']}.{uuid.uuid4().hex[:12]}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
            },
            "involvedObject": {
                "kind": about["kind"],
                "name": about["metadata"]["name"],
                "namespace": ns,
                "uid": about["metadata"]["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Warning",
            "count": 1,
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "source": {"component": "kubelet", "host": "fake-node"},
        }
        self._bump(_BY_KIND["Event"], event, "ADDED")

    def _owned_pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        ns = owner["metadata"]["namespace"]
        return [
            p
            for (q, pns, _), p in self.objects.items()
            if q == "pods"
            and pns == ns
            and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or ())
        ]

    def _owner_status(self, rt: ResourceType, ns: str, name: str) -> None:
        owner = self.objects.get((rt.qualified, ns, name))
        if owner is None:
            return
        pods = self._owned_pods(owner)
        ready = sum(
            1
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"]
            )
        )
        n = len(pods)
        gen = owner["metadata"].get("generation", 1)
        if rt.kind == "Deployment":
            want = int(owner["spec"].get("replicas", 1))
            status = {
                "observedGeneration": gen,
                "replicas": n,
                "updatedReplicas": n,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": max(0, want - ready),
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True" if ready >= want else "False",
                        "reason": "MinimumReplicasAvailable"
                        if ready >= want
                        else "MinimumReplicasUnavailable",
                        "message": "Deployment has minimum availability."
                        if ready >= want
                        else "Deployment does not have minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable"
                        if ready >= want
                        else "ReplicaSetUpdated",
                        "message": f'ReplicaSet "{name}" is progressing.',
                    },
                ],
            }
            if ready == 0:
                status.pop("readyReplicas")
                status.pop("availableReplicas")
        elif rt.kind == "StatefulSet":
            revision = f"{name}-{owner['metadata'].get('generation', 1)}"
            status = {
                "observedGeneration": gen,
                "replicas": n,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": n,
                "updatedReplicas": n,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            }
        else:  # DaemonSet
            status = {
                "observedGeneration": gen,
                "currentNumberScheduled": n,
                "desiredNumberScheduled": 1,
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": ready,
                "updatedNumberScheduled": n,
            }
        if owner.get("status") != status:
            owner["status"] = status
            self._bump(rt, owner, "MODIFIED")

    def _start_job(self, ns: str, name: str) -> None:
        job = self.objects[("jobs.batch", ns, name)]
        uid = job["metadata"]["uid"]
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
        }
        job["spec"].setdefault(
            "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        )
        template = job["spec"].setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        job["status"] = {"startTime": _now(), "active": 1, "ready": 0, "terminating": 0}
        self._bump(_BY_KIND["Job"], job, "MODIFIED")
        pod = self._new_pod(job, "Job", f"{name}-{uuid.uuid4().hex[:5]}", template, labels)
        pod_name = pod["metadata"]["name"]
        self._schedule(self.job_delay_s, lambda: self._finish_job(ns, name, pod_name))

    def _finish_job(self, ns: str, name: str, pod_name: str) -> None:
        job = self.objects.get(("jobs.batch", ns, name))
        pod = self.objects.get(("pods", ns, pod_name))
        if job is None or pod is None:
            return
        outcome = self._run_pod(pod, restart_policy=str(pod["spec"].get("restartPolicy", "Never")))
        if outcome == "succeeded":
            job["status"] = {
                "startTime": job["status"].get("startTime"),
                "completionTime": _now(),
                "succeeded": 1,
                "ready": 0,
                "terminating": 0,
                "conditions": [
                    {
                        "type": "SuccessCriteriaMet",
                        "status": "True",
                        "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                    },
                    {
                        "type": "Complete",
                        "status": "True",
                        "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                    },
                ],
            }
        elif outcome == "failed":
            job["status"] = {
                "startTime": job["status"].get("startTime"),
                "failed": 1,
                "ready": 0,
                "terminating": 0,
                "conditions": [
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    },
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    },
                ],
            }
        else:
            return
        self._bump(_BY_KIND["Job"], job, "MODIFIED")

    def _sync_endpoints(self, ns: str) -> None:
        if self._namespace_state(ns) != "Active":
            return
        pods = [p for (q, pns, _), p in self.objects.items() if q == "pods" and pns == ns]
        for (q, sns, sname), svc in list(self.objects.items()):
            if q != "services" or sns != ns:
                continue
            selector = (svc.get("spec") or {}).get("selector") or {}
            if not selector:
                continue
            ready, not_ready = [], []
            for pod in pods:
                if all(pod["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()):
                    addr = {
                        "ip": pod["status"].get("podIP", "127.0.1.1"),
                        "nodeName": "fake-node",
                        "targetRef": {
                            "kind": "Pod",
                            "name": pod["metadata"]["name"],
                            "namespace": ns,
                            "uid": pod["metadata"]["uid"],
                        },
                    }
                    is_ready = any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in pod["status"]["conditions"]
                    )
                    (ready if is_ready else not_ready).append(addr)
            ports = [
                {
                    "name": p.get("name", ""),
                    "port": p.get("targetPort", p.get("port")),
                    "protocol": p.get("protocol", "TCP"),
                }
                for p in svc["spec"].get("ports") or ()
            ]
            subset: dict[str, Any] = {"ports": ports}
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            subsets = [subset] if (ready or not_ready) else []
            existing = self.objects.get(("endpoints", ns, sname))
            if existing is None:
                ep = {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {
                        "name": sname,
                        "namespace": ns,
                        "uid": str(uuid.uuid4()),
                        "creationTimestamp": _now(),
                        "labels": dict(svc["metadata"].get("labels") or {}),
                    },
                    "subsets": subsets,
                }
                self._bump(_BY_KIND["Endpoints"], ep, "ADDED")
            elif existing.get("subsets") != subsets:
                existing["subsets"] = subsets
                self._bump(_BY_KIND["Endpoints"], existing, "MODIFIED")

    def _put_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "fake-node",
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/hostname": "fake-node"},
            },
            "spec": {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": "fake-node"},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }
        self._bump(_BY_KIND["Node"], node, "ADDED")

    # -- HTTP -------------------------------------------------------------------------------

    def _route(self, h: _Handler, method: str) -> None:
        h._body_read = False  # the handler lives as long as the keep-alive connection
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        info = {"verb": "", "resource": "", "namespace": "", "name": ""}
        status = 500
        try:
            if (
                path not in ("/healthz", "/readyz", "/livez")
                and h.headers.get("Authorization") != f"Bearer {self.token}"
            ):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            status = self._dispatch(h, method, path, query, info)
        except ApiError as exc:
            status = exc.code
            h.send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            status = 499
        finally:
            with self.cond:
                self.requests.append(
                    Request(
                        method,
                        path,
                        query,
                        info["verb"],
                        info["resource"],
                        info["namespace"],
                        info["name"],
                        status,
                    )
                )

    def _dispatch(
        self, h: _Handler, method: str, path: str, query: dict[str, str], info: dict[str, str]
    ) -> int:
        if path in ("/healthz", "/readyz", "/livez"):
            return h.send_text(200, "ok")
        if path == "/version":
            return h.send_json(
                200,
                {
                    "major": "1",
                    "minor": KUBE_VERSION.split(".")[1],
                    "emulationMajor": "1",
                    "emulationMinor": KUBE_VERSION.split(".")[1],
                    "minCompatibilityMajor": "1",
                    "minCompatibilityMinor": "36",
                    "gitVersion": f"v{KUBE_VERSION}.0-fake",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.25.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                },
            )
        if path == "/api":
            return h.send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                },
            )
        if self.metrics_api and path.startswith("/apis/metrics.k8s.io/v1beta1"):
            return self._metrics(h, path, info)
        if path == "/apis":
            groups = {}
            for r in RESOURCES:
                if r.group:
                    gv = {"groupVersion": r.api_version, "version": r.version}
                    groups.setdefault(
                        r.group, {"name": r.group, "versions": [gv], "preferredVersion": gv}
                    )
            if self.metrics_api:
                gv = {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}
                groups["metrics.k8s.io"] = {
                    "name": "metrics.k8s.io", "versions": [gv], "preferredVersion": gv,
                }  # fmt: skip
            return h.send_json(
                200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(groups.values())}
            )
        m = re.match(r"^/(?:api/(v1)|apis/([^/]+)/([^/]+))(?:/(.*))?$", path)
        if not m:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version = (m.group(2) or "", m.group(1) or m.group(3))
        rest = [p for p in (m.group(4) or "").split("/") if p]
        if not rest:
            return self._discovery(h, group, version)
        namespace = ""
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and (group, version, rest[2]) in _BY_PATH
            and _BY_PATH[(group, version, rest[2])].namespaced
        ):
            namespace, rest = rest[1], rest[2:]
        rt = _BY_PATH.get((group, version, rest[0]))
        if rt is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = {
            "GET": "get" if name else ("watch" if query.get("watch") in ("1", "true") else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
        resource = f"{rt.plural}/{sub}" if sub else rt.plural
        if sub == "portforward":
            verb = "create"
        info.update(verb=verb, resource=resource, namespace=namespace, name=name)
        if (verb, resource) in self.forbid or ("*", resource) in self.forbid:
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            raise ApiError(
                403,
                "Forbidden",
                f'{rt.qualified}{(" " + json.dumps(name)) if name else ""} is forbidden: User "{self.user}" '
                f'cannot {verb} resource "{resource}" in API group "{rt.group}" {scope}',
                {"name": name, "kind": rt.plural},
            )
        if rt.namespaced and not namespace and (name or method != "GET"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        dry_run = query.get("dryRun") == "All"
        if sub == "portforward":
            return self._portforward(h, namespace, name, query)
        with self.cond:
            if method == "GET" and not name and verb != "watch":
                return h.send_json(200, self._list(rt, namespace, query))
            elif method == "GET" and name:
                return h.send_json(200, self._get(rt, namespace, name))
            elif method == "POST":
                if name:
                    raise ApiError(
                        405,
                        "MethodNotAllowed",
                        "the server does not allow this method on the requested resource",
                    )
                body = self._body(h, rt)
                if rt.namespaced and body.get("metadata", {}).get("namespace") not in (
                    None,
                    "",
                    namespace,
                ):
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                warnings = self._field_validation(rt, body, query)
                return h.send_json(
                    201, self._create(rt, namespace, body, dry_run=dry_run), warnings
                )
            elif method == "PUT":
                body = self._body(h, rt)
                warnings = self._field_validation(rt, body, query)
                return h.send_json(
                    200,
                    self._replace(
                        rt, namespace, name, body, dry_run=dry_run, status_only=sub == "status"
                    ),
                    warnings,
                )
            elif method == "PATCH":
                return self._patch(h, rt, namespace, name, sub, query, dry_run)
            elif method == "DELETE":
                if not name:
                    raise ApiError(
                        405, "MethodNotAllowed", "the fake does not implement deletecollection"
                    )
                options = self._body(h, None, allow_empty=True)
                return h.send_json(200, self._delete(rt, namespace, name, options, dry_run=dry_run))
        return self._watch(h, rt, namespace, query)

    # -- metrics.k8s.io -----------------------------------------------------------------------

    def _metrics(self, h: _Handler, path: str, info: dict[str, str]) -> int:
        m = re.match(
            r"^/apis/metrics\.k8s\.io/v1beta1(?:/namespaces/([^/]+))?/pods(?:/([^/]+))?$", path
        )
        if path == "/apis/metrics.k8s.io/v1beta1":
            resource = {
                "name": "pods",
                "singularName": "",
                "namespaced": True,
                "kind": "PodMetrics",
                "verbs": ["get", "list"],
            }
            return h.send_json(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": "metrics.k8s.io/v1beta1",
                    "resources": [resource],
                },
            )
        if m is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name = m.group(1) or "", m.group(2) or ""
        info.update(
            verb="get" if name else "list",
            resource="pods.metrics.k8s.io",
            namespace=namespace,
            name=name,
        )
        with self.cond:
            pods = [
                p for (q, ns, n), p in self.objects.items()
                if q == "pods" and (not namespace or ns == namespace) and (not name or n == name)
                and p["status"].get("phase") == "Running"
            ]  # fmt: skip
            items = [self._pod_metrics(p) for p in pods]
        if name:
            if not items:
                raise ApiError(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found')
            return h.send_json(200, items[0])
        return h.send_json(
            200,
            {
                "kind": "PodMetricsList",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": items,
            },
        )

    def _pod_metrics(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Usage over the last second, driven by the requests forwarded to this pod."""
        meta = pod["metadata"]
        now = time.monotonic()
        times = self.served.get((meta["namespace"], meta["name"]), [])
        rate = sum(1 for t in times if t >= now - 1.0)
        containers = []
        for i, c in enumerate(pod["spec"].get("containers") or ()):
            cores = self.idle_cpu_cores + (rate * self.cpu_per_request_s if i == 0 else 0.0)
            limit = _cpu_cores(((c.get("resources") or {}).get("limits") or {}).get("cpu"))
            if limit is not None:
                cores = min(cores, limit)  # throttled at its limit
            containers.append({
                "name": c["name"],
                "usage": {"cpu": f"{int(cores * 1e9)}n", "memory": f"{self.memory_base_bytes // 1024}Ki"},
            })  # fmt: skip
        return {
            "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta.get("labels") or {}), "creationTimestamp": _now()},
            "timestamp": _now(), "window": "1s", "containers": containers,
        }  # fmt: skip

    def _count_requests(self, namespace: str, name: str, data: bytes) -> None:
        """HTTP requests a port-forward carried to a pod (what drives its PodMetrics)."""
        n = data.count(b"\r\n\r\n")
        if not n:
            return
        now = time.monotonic()
        with self.cond:
            times = self.served.setdefault((namespace, name), [])
            times.extend([now] * n)
            del times[: max(0, len(times) - 100_000)]
            total = len(times)
            if self.oom_after_requests is not None and total >= self.oom_after_requests:
                self.oom_after_requests = None
                self._oom_kill(namespace, name)

    def _oom_kill(self, namespace: str, name: str) -> None:
        pod = self.objects.get(("pods", namespace, name))
        if pod is None:
            return
        statuses = pod["status"].get("containerStatuses") or []
        if statuses:
            st = statuses[0]
            st["restartCount"] = int(st.get("restartCount") or 0) + 1
            st["lastState"] = {
                "terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": _now()}
            }
            self._bump(_BY_KIND["Pod"], pod, "MODIFIED")

    def _discovery(self, h: _Handler, group: str, version: str) -> int:
        found = [r for r in RESOURCES if r.group == group and r.version == version]
        if not found:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for r in found:
            resources.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": _VERBS,
                }
            )
            for sub in r.subresources:
                resources.append(
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return h.send_json(
            200,
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": found[0].api_version,
                "resources": resources,
            },
        )

    def _body(
        self,
        h: _Handler,
        rt: ResourceType | None,
        *,
        allow_empty: bool = False,
        yaml_ok: bool = False,
    ) -> dict[str, Any]:
        raw = h.read_body()
        if not raw:
            if allow_empty:
                return {}
            raise ApiError(
                400,
                "BadRequest",
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
            )
        try:
            data = yaml.safe_load(raw) if yaml_ok else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(
                400, "BadRequest", f"the body of the request could not be decoded: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        if rt is not None:  # the URL says what it is, as on a real server
            data.setdefault("apiVersion", rt.api_version)
            data.setdefault("kind", rt.kind)
        if rt is not None and data.get("kind") not in (None, rt.kind):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({data.get('apiVersion')}) does not match the expected API version ({rt.api_version})"
                if data.get("apiVersion") != rt.api_version
                else f"the kind in the data ({data.get('kind')}) does not match the expected kind ({rt.kind})",
            )
        return data

    def _field_validation(
        self, rt: ResourceType, body: dict[str, Any], query: dict[str, str]
    ) -> list[str]:
        mode = query.get("fieldValidation", "Warn")
        unknown = _unknown_fields(rt, body)
        if unknown and mode == "Strict":
            raise ApiError(
                400,
                "BadRequest",
                "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
            )
        return [f'299 - "unknown field \\"{u}\\""' for u in unknown] if mode == "Warn" else []

    def _get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((rt.qualified, namespace if rt.namespaced else "", name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.qualified} "{name}" not found',
                {"name": name, "kind": rt.plural},
            )
        return obj

    def _select(
        self,
        rt: ResourceType,
        namespace: str,
        query: dict[str, str],
        objs: Iterator[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        labels = _parse_selector(query.get("labelSelector", ""))
        fields = _parse_selector(query.get("fieldSelector", ""))
        out = []
        for obj in objs:
            meta = obj["metadata"]
            if rt.namespaced and namespace and meta.get("namespace") != namespace:
                continue
            if _matches(labels, meta.get("labels") or {}) and _matches(fields, _field_values(obj)):
                out.append(obj)
        return out

    def _list(self, rt: ResourceType, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        objs = (o for (q, _, _), o in sorted(self.objects.items()) if q == rt.qualified)
        items = []
        for obj in self._select(rt, namespace, query, objs):
            item = copy.deepcopy(obj)
            item.pop("apiVersion", None)  # like the real server, typed lists omit these per item
            item.pop("kind", None)
            items.append(item)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _patch(
        self,
        h: _Handler,
        rt: ResourceType,
        namespace: str,
        name: str,
        sub: str,
        query: dict[str, str],
        dry_run: bool,
    ) -> int:
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise ApiError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                )
            body = self._body(h, rt, yaml_ok=True)
            if body.get("apiVersion") != rt.api_version or body.get("kind") != rt.kind:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"apiVersion and kind of the applied object ({body.get('apiVersion')} {body.get('kind')}) must be {rt.api_version} {rt.kind}",
                )
            if (body.get("metadata") or {}).get("name") != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"the name of the object ({(body.get('metadata') or {}).get('name')}) does not match the name on the URL ({name})",
                )
            warnings = self._field_validation(
                rt,
                body,
                {"fieldValidation": query.get("fieldValidation", "Strict")}
                if query.get("fieldValidation")
                else query,
            )
            key = (rt.qualified, namespace if rt.namespaced else "", name)
            if key not in self.objects:
                body.setdefault("metadata", {}).pop("resourceVersion", None)
                return h.send_json(
                    201, self._create(rt, namespace, body, dry_run=dry_run), warnings
                )
            current = self.objects[key]
            merged = _merge(_strip_rv(current), _strip_rv(body))
            return h.send_json(
                200,
                self._replace(
                    rt, namespace, name, merged, dry_run=dry_run, status_only=sub == "status"
                ),
                warnings,
            )
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            body = self._body(h, None)
            current = self._get(rt, namespace, name)
            merged = _merge(_strip_rv(current), body)
            if (body.get("metadata") or {}).get("resourceVersion"):
                merged["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
            return h.send_json(
                200,
                self._replace(
                    rt, namespace, name, merged, dry_run=dry_run, status_only=sub == "status"
                ),
            )
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (not {ctype})",
        )

    def _watch(self, h: _Handler, rt: ResourceType, namespace: str, query: dict[str, str]) -> int:
        timeout_s = float(query.get("timeoutSeconds") or 60)
        deadline = time.monotonic() + min(timeout_s, 600)
        h.start_stream()
        with self.cond:
            since = query.get("resourceVersion", "")
            if since in ("", "0"):
                initial = self._select(
                    rt,
                    namespace,
                    query,
                    (o for (q, _, _), o in sorted(self.objects.items()) if q == rt.qualified),
                )
                pending = [("ADDED", copy.deepcopy(o)) for o in initial]
                cursor = self._rv
            else:
                pending, cursor = [], int(since)
        try:
            while True:
                for event_type, obj in pending:
                    h.send_chunk(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
                with self.cond:
                    while (
                        not self._stopping
                        and time.monotonic() < deadline
                        and not (self.events and self.events[-1][0] > cursor)
                    ):
                        self.cond.wait(min(0.2, max(0.001, deadline - time.monotonic())))
                    if self._stopping or time.monotonic() >= deadline:
                        break
                    new = [e for e in self.events if e[0] > cursor and e[2] == rt.qualified]
                    cursor = self.events[-1][0]
                    pending = [
                        (t, copy.deepcopy(o))
                        for (_, t, _, o) in new
                        if self._select(rt, namespace, query, iter([o]))
                    ]
            h.end_stream()
        except OSError:
            h.close_connection = True
        return 200

    # -- port-forward over a websocket ------------------------------------------------------

    def _portforward(self, h: _Handler, namespace: str, name: str, query: dict[str, str]) -> int:
        with self.cond:
            pod = self._get(_BY_KIND["Pod"], namespace, name)
            if pod["status"].get("phase") != "Running":
                raise ApiError(400, "BadRequest", f"pod {name} is not running")
        if (h.headers.get("Upgrade") or "").lower() != "websocket" or not h.headers.get(
            "Sec-WebSocket-Key"
        ):
            raise ApiError(400, "BadRequest", "Upgrade request required")
        try:
            ports = [int(p) for p in (query.get("ports") or "").split(",") if p]
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid port: {query.get('ports')}") from exc
        if len(ports) != 1:
            raise ApiError(400, "BadRequest", "the fake forwards exactly one port per connection")
        port = ports[0]
        accept = base64.b64encode(
            hashlib.sha1((h.headers["Sec-WebSocket-Key"] + _WS_GUID).encode()).digest()
        ).decode()
        offered = [p.strip() for p in (h.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        protocol = (
            "v4.channel.k8s.io"
            if "v4.channel.k8s.io" in offered
            else (offered[0] if offered else "")
        )
        h.close_connection = True
        head = f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
        if protocol:
            head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        h.wfile.write((head + "\r\n").encode())
        h.wfile.flush()
        ws = _WebSocket(h)
        prefix = bytes([port & 0xFF, port >> 8])
        ws.send(b"\x00" + prefix)
        ws.send(b"\x01" + prefix)
        try:
            backend = socket.create_connection(
                ("127.0.0.1", self._local_port(pod, port)), timeout=2
            )
        except OSError as exc:
            ws.send(
                b"\x01"
                + f"error forwarding port {port} to pod {name}, uid : failed to connect to localhost:{port}: {exc}".encode()
            )
            ws.close()
            return 101
        backend.settimeout(None)
        with self.cond:
            self._sockets.add(backend)

        def upstream() -> None:
            try:
                while True:
                    data = backend.recv(65536)
                    if not data:
                        break
                    ws.send(b"\x00" + data)
            except OSError:
                pass
            ws.close()

        t = threading.Thread(target=upstream, name="fakekube-pf", daemon=True)
        t.start()
        try:
            while True:
                frame = ws.receive()
                if frame is None:
                    break
                if frame[:1] == b"\x00" and len(frame) > 1:
                    backend.sendall(frame[1:])
                    self._count_requests(namespace, name, frame[1:])
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                backend.shutdown(socket.SHUT_RDWR)
            t.join(timeout=2)
            backend.close()
            with self.cond:
                self._sockets.discard(backend)
        return 101


def _cpu_cores(text: Any) -> float | None:
    if text is None:
        return None
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _qualified_type(qualified: str) -> ResourceType:
    return next(r for r in RESOURCES if r.qualified == qualified)


def _strip_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    (out.get("metadata") or {}).pop("resourceVersion", None)
    return out


@functools.lru_cache(maxsize=128)
def _schema(kind: str, api_version: str, strict: bool) -> Any:
    """A cached validator for one kind (kubernetes-validate re-reads 2 MB of JSON per call)."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Resource

    folder = f"kubernetes-json-schema/v{KUBE_VERSION}.0-local" + ("-strict" if strict else "")
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(
            f"{folder}/{kind.lower()}-{group_version}.json", KUBE_VERSION
        )
    except FileNotFoundError:
        return None
    registry: Any = Resource.from_contents(schema) @ _definitions(folder)
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@functools.cache
def _definitions(folder: str) -> Any:
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    defs = utils.schema_contents(f"{folder}/_definitions.json", KUBE_VERSION)
    return Resource.from_contents(defs) @ Registry()


def _schema_errors(obj: dict[str, Any], strict: bool) -> list[Any]:
    validator = _schema(str(obj.get("kind")), str(obj.get("apiVersion")), strict)
    if validator is None:
        return []
    body = {k: v for k, v in obj.items() if k != "status"}
    return sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.path])


def _validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    """What the real API server would refuse: 400 for undecodable types, 422 for invalid values."""
    name = obj["metadata"].get("name", "")
    if (
        not _NAME_RE.match(name)
        or len(name) > 253
        or (rt.kind in ("Namespace", "Service") and (len(name) > 63 or "." in name))
    ):
        raise ApiError(
            422,
            "Invalid",
            f'{rt.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \'-\'',
        )
    errors = _schema_errors(obj, strict=False)
    for exc in errors:
        if (
            exc.validator == "type"
        ):  # the real server fails while decoding JSON: 400, first one only
            where = ".".join(str(p) for p in exc.path)
            raise ApiError(
                400,
                "BadRequest",
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot unmarshal {where}: {exc.message}',
            )
    if errors:
        causes = "; ".join(f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in errors)
        raise ApiError(
            422, "Invalid", f'{rt.kind}.{rt.group or "core"} "{name}" is invalid: {causes}'
        )
    spec = obj.get("spec") or {}
    if rt.kind in ("Deployment", "StatefulSet", "DaemonSet"):
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in match.items()):
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind}.{rt.group} "{name}" is invalid: spec.template.metadata.labels: Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`',
            )
    if rt.kind == "Job" and ((spec.get("template") or {}).get("spec") or {}).get(
        "restartPolicy", "Always"
    ) not in ("Never", "OnFailure"):
        raise ApiError(
            422,
            "Invalid",
            f'Job.batch "{name}" is invalid: spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"',
        )


def _unknown_fields(rt: ResourceType, obj: dict[str, Any]) -> list[str]:
    del rt
    found: list[str] = []
    for exc in _schema_errors(obj, strict=True):
        if exc.validator == "additionalProperties":
            base = ".".join(str(p) for p in exc.path)
            names = re.findall(r"'([^']+)'", exc.message.split("(", 1)[-1])
            found.extend(f"{base}.{n}" if base else n for n in names)
    return found


class _WebSocket:
    """Just enough RFC 6455 for binary frames on an upgraded connection."""

    def __init__(self, h: _Handler) -> None:
        self.rfile, self.wfile = h.rfile, h.wfile
        self._lock = threading.Lock()
        self.closed = False

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, n])
        elif n < 1 << 16:
            head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
        with self._lock:
            if self.closed and opcode != 0x8:
                return
            with contextlib.suppress(OSError):
                self.wfile.write(head + payload)
                self.wfile.flush()

    def close(self) -> None:
        if not self.closed:
            self.send(b"\x03\xe8", opcode=0x8)
            self.closed = True

    def receive(self) -> bytes | None:
        """The next data frame's payload; None once the peer closes."""
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return None
            opcode, masked, n = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            elif n == 127:
                n = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if masked else b""
            payload = self.rfile.read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                self.close()
                return None
            if opcode == 0x9:
                self.send(payload, opcode=0xA)
                continue
            if opcode in (0x1, 0x2, 0x0):
                return payload


class _QuietHTTPServer(ThreadingHTTPServer):
    """Clients that hang up mid-request (an interrupted load generator) are not errors here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakekube/1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    fake: FakeKube

    def setup(self) -> None:
        super().setup()
        with self.fake.cond:
            self.fake._sockets.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.fake.cond:
            self.fake._sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args  # quiet: tests read fake.requests instead

    def do_GET(self) -> None:
        self.fake._route(self, "GET")

    def do_POST(self) -> None:
        self.fake._route(self, "POST")

    def do_PUT(self) -> None:
        self.fake._route(self, "PUT")

    def do_PATCH(self) -> None:
        self.fake._route(self, "PATCH")

    def do_DELETE(self) -> None:
        self.fake._route(self, "DELETE")

    def read_body(self) -> bytes:
        if getattr(self, "_body_read", False):
            return self._body
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        self._body_read = True
        return self._body

    def send_json(self, code: int, obj: Any, warnings: list[str] | None = None) -> int:
        self.read_body()  # drain it, so keep-alive stays in sync even on an error
        data = json.dumps(obj).encode()
        self.send_response(code, http.HTTPStatus(code).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for w in warnings or ():
            self.send_header("Warning", w)
        self.end_headers()
        self.wfile.write(data)
        return code

    def send_text(self, code: int, text: str) -> int:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return code

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# ---------------------------------------------------------------------------------------------
# helpers for tests that run the CLI (or anything else) against the fake
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_in_background(kubeconfig: str | Path, **knobs: Any) -> Iterator[FakeKube]:
    """Start a fake in background threads, write a kubeconfig for it, stop it afterwards.

    ``knobs`` are FakeKube's constructor arguments. A subprocess (``perfgate run --staging
    kubernetes --kubeconfig PATH``) can use the kubeconfig while the test inspects the fake.
    """
    fake = FakeKube(**knobs).start()
    try:
        fake.write_kubeconfig(kubeconfig)
        yield fake
    finally:
        fake.stop()


class LocalKubelet:
    """Runs the containers of the fake's pods as local processes (what kubelet would do).

    Only pods of Deployments whose labels match ``selector``; one process per pod, started once
    the pod exists. ``configMap``, ``secret`` and ``projected`` volumes are written as files under
    ``folder/<pod>/`` and every mount path in the command is replaced by that folder; ``env``
    values and ``fieldRef`` (``metadata.namespace``/``metadata.name``) are set. ``rewrite(pod,
    command)`` adapts the rest (hosts, ports) to 127.0.0.1. ``stop()`` kills every process group.
    """

    def __init__(
        self,
        fake: FakeKube,
        folder: Path,
        *,
        selector: dict[str, str],
        rewrite: Callable[[dict[str, Any], list[str]], list[str]] = lambda _pod, cmd: cmd,
        env: dict[str, str] | None = None,
    ) -> None:
        self.fake = fake
        self.folder = folder
        self.selector = selector
        self.rewrite = rewrite
        self.env = dict(env or {})
        self.procs: dict[str, Any] = {}  # pod name -> subprocess.Popen
        self.commands: dict[str, list[str]] = {}  # pod name -> the command as the pod had it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-kubelet", daemon=True)

    def __enter__(self) -> LocalKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            with self.fake.cond:
                pods = [
                    copy.deepcopy(p)
                    for (q, _, n), p in self.fake.objects.items()
                    if q == "pods"
                    and n not in self.procs
                    and all(p["metadata"]["labels"].get(k) == v for k, v in self.selector.items())
                ]
            for pod in pods:
                if not self._stop.is_set():
                    self._start(pod)

    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name = meta["namespace"], meta["name"]
        container = spec["containers"][0]
        command = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        self.commands[name] = list(command)
        volumes = {v["name"]: v for v in spec.get("volumes") or ()}
        for mount in container.get("volumeMounts") or ():
            local = self.folder / name / mount["mountPath"].strip("/")
            local.mkdir(parents=True, exist_ok=True)
            volume = volumes[mount["name"]]
            sources = (volume.get("projected") or {}).get("sources") or [volume]
            for source in sources:
                if "configMap" in source:
                    obj = self.fake.get("ConfigMap", ns, source["configMap"]["name"]) or {}
                    files = dict(obj.get("data") or {})
                elif "secret" in source:
                    obj = (
                        self.fake.get(
                            "Secret",
                            ns,
                            source["secret"].get("secretName") or source["secret"]["name"],
                        )
                        or {}
                    )
                    files = {
                        k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()
                    }
                else:
                    continue
                for key, text in files.items():
                    (local / key).write_text(text, encoding="utf-8")
            command = [a.replace(mount["mountPath"], str(local)) for a in command]
        if command[:1] == ["python"]:
            command[0] = sys.executable
        env = {**os.environ, **self.env, "HOSTNAME": name}
        for item in container.get("env") or ():
            ref = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if ref:
                env[item["name"]] = {"metadata.namespace": ns, "metadata.name": name}.get(ref, "")
            else:
                env[item["name"]] = str(item.get("value", ""))
        log = (self.folder / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            self.rewrite(pod, command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}"
            for p in sorted(self.folder.glob("*.log"))
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=timeout_s)


class LoopbackHTTP:
    """A tiny HTTP server on 127.0.0.1 (what a pod "serves", reached via nodePort or port-forward)."""

    def __init__(self, body: bytes = b'{"status": "ok"}\n', *, delay_s: float = 0.0) -> None:
        payload = body

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                if delay_s:
                    time.sleep(delay_s)  # a service with some latency, so a load test has a knee
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="loopback-http", daemon=True
        )

    def __enter__(self) -> LoopbackHTTP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    """Run the fake until Ctrl-C (for trying ``perfgate run --staging kubernetes`` by hand)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="write a kubeconfig for the fake here")
    parser.add_argument("--ready-delay", type=float, default=0.5)
    parser.add_argument("--delete-delay", type=float, default=0.5)
    args = parser.parse_args(argv)
    with serve_in_background(
        args.kubeconfig, ready_delay_s=args.ready_delay, delete_delay_s=args.delete_delay
    ) as fake:
        print(
            f"fake Kubernetes API on {fake.url}; kubeconfig {args.kubeconfig}; Ctrl-C stops",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
