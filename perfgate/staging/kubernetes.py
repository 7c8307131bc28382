"""The ``kubernetes`` staging provider: a fresh namespace per run from manifests, always deleted.

This is the only module that imports the ``kubernetes`` client, and only when one of its functions
runs. What :func:`provision_kubernetes` does, in order:

1. render and check the manifests offline (:mod:`perfgate.staging.manifests`): a bad manifest is
   bad input (exit 2) and no request has reached any cluster yet;
2. load the cluster credentials like kubectl: ``--kubeconfig``, else ``$KUBECONFIG`` (a path
   list), else ``~/.kube/config``, else the pod's service account when ``KUBERNETES_SERVICE_HOST``
   is set; ``--context`` picks a context. No usable kubeconfig is bad input (exit 2);
3. create ``perfgate-<scenario>-<release>-<id>``, labelled ``app.kubernetes.io/managed-by=perfgate``
   and annotated with the run id;
4. server-side apply every object into it (REST ``PATCH`` with ``application/apply-patch+yaml``;
   kinds are found through API discovery, so custom resources work too);
5. wait until every Deployment, StatefulSet and DaemonSet is available and every Job complete,
   logging progress; on timeout, fail naming each object that is not ready and why (pod phase,
   container waiting reason such as ``ImagePullBackOff``, scheduling failure, warning events);
6. find the endpoint: ``staging.kubernetes.url`` (a template) if set; else the Service's
   LoadBalancer address; else, inside a pod, the Service's cluster DNS name; else a node address
   and the Service's nodePort, if a TCP connection to it succeeds from here; else a port-forward
   through the API server to a ready pod behind the Service (local listener on 127.0.0.1);
   with ``load.placement: kubernetes`` the load comes from pods in the namespace, so the target is
   ``staging.kubernetes.url`` if set, else the Service's cluster DNS name (no port-forward);
7. on every exit (success, exception, readiness timeout, KeyboardInterrupt, SIGTERM raised as an
   exception by the CLI) delete the namespace, unless ``keep_namespace``. Only a namespace that
   carries perfgate's label *and* this run's id is deleted, with a UID precondition so the object
   checked is the object deleted. Deletion is waited for, but only for a bounded time: a namespace
   stuck in Terminating (a finalizer that never finishes) gives a warning, not a hang.

:func:`deploy_load_generators` (called by the pipeline inside :func:`provision_kubernetes`'s
block, for ``load.placement: kubernetes``) adds Locust's master and worker pods to the namespace
(objects from :func:`perfgate.staging.manifests.load_generator_documents`), waits until they are
available and port-forwards to the master's control port; they go with the namespace.

Every error of the client (``ApiException``, urllib3, pydantic, kubeconfig) is translated into
:mod:`perfgate.errors`: the API server unreachable or refusing (401/403/5xx) is a
:class:`~perfgate.errors.StagingError` (exit 3) naming the server and the action; the server
rejecting a manifest (400/422) or a kind it does not serve is a
:class:`~perfgate.errors.ScenarioError` (exit 2). Credentials never appear in a message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import select
import selectors
import signal
import socket
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfgate.errors import InputError, Interrupted, ScenarioError, StagingError
from perfgate.models import KubernetesSpec, Scenario
from perfgate.staging.manifests import (
    LOAD_CONTROL_PORT,
    LOAD_MASTER_NAME,
    LOAD_NAME_PREFIX,
    LOAD_WORKER_NAME,
    RenderedDoc,
    check_documents,
    load_generator_documents,
    load_labels,
    render_manifests,
    render_url,
    reserved_name_errors,
)

if TYPE_CHECKING:
    from perfgate.staging import StagedTarget, StagingOptions

__all__ = [
    "FIELD_MANAGER",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "RUN_ID_ANNOTATION",
    "TIMING",
    "ClusterConfig",
    "Timing",
    "deploy_load_generators",
    "gc_namespaces",
    "load_cluster_config",
    "namespace_name",
    "parse_age",
    "provision_kubernetes",
]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "perfgate"
RUN_ID_ANNOTATION = "perfgate.dev/run-id"
SCENARIO_LABEL = "perfgate.dev/scenario"
RELEASE_LABEL = "perfgate.dev/release"
FIELD_MANAGER = "perfgate"
NAMESPACE_PREFIX = "perfgate-"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_REASON = 160
_MAX_NODE_PROBES = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Waits and timeouts of the provider (tests shrink them; real clusters need the defaults)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    poll_min_s: float = 0.05  # readiness polls start fast (a fake or warm cluster is ready soon)
    poll_max_s: float = 2.0  # ... and back off to this
    heartbeat_s: float = 10.0  # repeat an unchanged progress line this often
    delete_wait_s: float = 60.0  # how long to watch a namespace disappear before warning
    interrupted_delete_wait_s: float = 10.0  # the same after Ctrl-C/SIGTERM: the user wants out
    probe_timeout_s: float = 1.0  # TCP probe of a nodePort / port-forward check


TIMING = Timing()


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------


def _dns_part(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", text.lower())).strip("-")


def namespace_name(scenario: str, release: str, run_id: str) -> str:
    """``perfgate-<scenario>-<release>-<id>`` as a valid DNS label (≤ 63 chars, ``[a-z0-9-]``).

    Long scenario and release names are shortened; the run id (or, if longer than 12 characters,
    a hash of it) always stays whole, so names of different runs never collide.
    """
    rid = _dns_part(run_id)
    if not rid:
        raise ValueError(f"run id {run_id!r} has no letter or digit")
    if len(rid) > 12:
        rid = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    scen = _dns_part(scenario) or "scenario"
    rel = _dns_part(release) or "release"
    budget = 63 - len(NAMESPACE_PREFIX) - len(rid) - 2
    if len(scen) + len(rel) > budget:
        rel = rel[: max(budget // 2, budget - len(scen))].strip("-") or "r"
        scen = scen[: budget - len(rel)].strip("-") or "s"
    name = f"{NAMESPACE_PREFIX}{scen}-{rel}-{rid}"
    assert len(name) <= 63 and _DNS_LABEL.match(name), name
    return name


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def parse_age(text: str) -> float:
    """Seconds in ``30s``, ``90m``, ``6h``, ``2d`` or a bare number of seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise InputError(f"expected a duration like 30m, 6h or 2d, got {text!r}")
    return float(m.group(1)) * units.get(m.group(2) or "s", 1.0)


# ---------------------------------------------------------------------------------------------
# cluster configuration (kubectl's conventions)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """Where and as whom to talk to the API server."""

    configuration: Any = field(repr=False)  # kubernetes.client.Configuration (holds credentials)
    server: str  # API server URL, without credentials
    context: str  # kubeconfig context name, or "in-cluster"
    source: str  # the kubeconfig path(s), or "in-cluster service account"
    in_cluster: bool = False


def load_cluster_config(kubeconfig: str | None, context: str | None) -> ClusterConfig:
    """Load credentials like kubectl; every problem is an InputError naming the file."""
    import kubernetes
    import yaml

    env_list = os.environ.get("KUBECONFIG", "")
    if kubeconfig:
        files = [Path(kubeconfig).expanduser()]
        if not files[0].is_file():
            raise InputError(f"kubeconfig {kubeconfig}: no such file")
    elif env_list:
        listed = [Path(p).expanduser() for p in env_list.split(os.pathsep) if p]
        files = [p for p in listed if p.is_file()]
        if not files:
            raise InputError(f"KUBECONFIG={env_list}: no such file")
    elif Path("~/.kube/config").expanduser().is_file():
        files = [Path("~/.kube/config").expanduser()]
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster_config(context)
    else:
        raise InputError(
            "no kubeconfig: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, "
            "or run inside a pod with a service account"
        )
    shown = os.pathsep.join(str(p) for p in files)
    for path in files:
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise InputError(f"kubeconfig {path}: cannot read: {exc.strerror or exc}") from exc
    cfg = kubernetes.client.Configuration()
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=shown)
        names = [c.get("name") for c in contexts or () if isinstance(c, dict)]
        if context and context not in names:
            raise InputError(
                f"kubeconfig {shown}: no context {context!r} "
                f"(contexts: {', '.join(map(str, names)) or 'none'})"
            )
        chosen = context or (active or {}).get("name") or ""
        kubernetes.config.load_kube_config(
            config_file=shown, context=context, client_configuration=cfg, persist_config=False
        )
    except InputError:
        raise
    except kubernetes.config.ConfigException as exc:
        raise InputError(f"kubeconfig {shown}: {_scrub(str(exc), cfg)}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"kubeconfig {shown}: not valid YAML") from exc
    except OSError as exc:
        raise InputError(f"kubeconfig {shown}: {exc.strerror or exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # the loader indexes the YAML blindly: a malformed file surfaces as these
        raise InputError(f"kubeconfig {shown}: malformed ({type(exc).__name__})") from exc
    if not cfg.host:
        raise InputError(f"kubeconfig {shown}: context {chosen!r} names no server")
    return ClusterConfig(
        configuration=cfg, server=_safe_url(cfg.host), context=chosen or "?", source=shown
    )


def _in_cluster_config(context: str | None) -> ClusterConfig:
    import kubernetes

    if context:
        raise InputError(f"--context {context}: there is no kubeconfig (in-cluster config only)")
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException as exc:
        raise InputError(f"in-cluster config (service account of this pod): {exc}") from exc
    except OSError as exc:
        raise InputError(f"in-cluster config: {exc.strerror or exc}") from exc
    return ClusterConfig(
        configuration=cfg,
        server=_safe_url(cfg.host),
        context="in-cluster",
        source="in-cluster service account",
        in_cluster=True,
    )


def _safe_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _scrub(text: str, cfg: Any) -> str:
    """``text`` without any credential the configuration holds."""
    secrets: list[str] = []
    for value in (getattr(cfg, "api_key", None) or {}).values():
        if isinstance(value, str):
            secrets.extend(value.split())
    for attr in ("password", "username"):
        value = getattr(cfg, attr, None)
        if isinstance(value, str) and value:
            secrets.append(value)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4 and secret.lower() != "bearer":
            text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)


# ---------------------------------------------------------------------------------------------
# the REST layer: one place that talks HTTP and translates errors
# ---------------------------------------------------------------------------------------------


class _ApiError(StagingError):
    """The API server answered with an error status."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # Status.reason, e.g. AlreadyExists, NotFound, Forbidden


class _Api:
    """Plain-dict REST calls through the official client (auth, TLS, proxies, exec plugins)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        import kubernetes

        self.cluster = cluster
        self.server = cluster.server
        self.client = kubernetes.client.ApiClient(cluster.configuration)
        from perfgate import __version__

        self.client.user_agent = f"perfgate/{__version__}"
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON). Statuses in ``allow`` don't raise."""
        import kubernetes
        import pydantic
        import urllib3

        headers = {"Accept": "application/json", "Content-Type": content_type}
        timing = TIMING
        try:
            with warnings.catch_warnings():
                # insecure-skip-tls-verify is the kubeconfig's choice; kubectl does not nag either
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response, raw = self._send(method, path, query, headers, body, timing)
        except kubernetes.client.ApiException as exc:  # status 0: the transport failed
            raise self._unreachable(action, exc.reason or str(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unreachable(action, str(exc)) from exc
        except (pydantic.ValidationError, kubernetes.config.ConfigException) as exc:
            raise StagingError(
                f"{action} on {self.server}: client error: "
                f"{_scrub(str(exc), self.cluster.configuration)[:_MAX_REASON]}"
            ) from exc
        status = int(response.status)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if 200 <= status < 300 or status in allow:
            if data is None and 200 <= status < 300 and method != "DELETE":
                raise StagingError(f"{action} on {self.server}: the answer is not JSON")
            return status, data
        raise self._status_error(action, status, response.reason, data)

    def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        headers: dict[str, str],
        body: Any,
        timing: Timing,
    ) -> tuple[Any, bytes]:
        method_, url, hdrs, body_, post = self.client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(
            method_,
            url,
            header_params=hdrs,
            body=body_,
            post_params=post,
            _request_timeout=(timing.connect_timeout_s, timing.read_timeout_s),
        )
        return response, response.read()

    def _unreachable(self, action: str, detail: str) -> StagingError:
        return StagingError(
            f"{action} on {self.server}: cannot reach the API server ({_transport_reason(detail)})"
        )

    def _status_error(self, action: str, status: int, phrase: Any, data: Any) -> _ApiError:
        reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
        line = f"{action} on {self.server}: {status} {phrase or ''}".rstrip()
        if message and message.lower() != str(phrase).lower():
            line += f": {_scrub(message, self.cluster.configuration)[:300]}"
        if status == 401:
            line += " (the credentials were rejected: check the kubeconfig user)"
        return _ApiError(line, status=status, reason=reason)

    # -- discovery --------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str, *, where: str) -> tuple[str, str, bool]:
        """(path prefix, plural, namespaced) of a kind, found through API discovery."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        known = self._resources.get(api_version)
        if known is None:
            status, data = self.request(
                "GET", prefix, action=f"discovering {api_version}", allow=(404,)
            )
            known = {}
            if status == 200 and isinstance(data, dict):
                for r in data.get("resources") or ():
                    if isinstance(r, dict) and "/" not in str(r.get("name", "")):
                        known[str(r.get("kind"))] = (str(r["name"]), bool(r.get("namespaced")))
            self._resources[api_version] = known
        if kind not in known:
            raise ScenarioError(
                f"{where}: the cluster at {self.server} does not serve {kind} in {api_version}"
            )
        plural, namespaced = known[kind]
        return prefix, plural, namespaced


def _transport_reason(detail: str) -> str:
    text = detail.replace("\n", " ")
    for pattern, reason in (
        (r"(?i)connection refused", "connection refused"),
        (r"(?i)timed? ?out", "timed out"),
        (r"(?i)name or service not known|nodename nor servname|getaddrinfo failed", "unknown host"),
        (r"(?i)certificate verify failed|CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        (r"(?i)no route to host", "no route to host"),
        (r"(?i)network is unreachable", "network unreachable"),
        (r"(?i)connection reset", "connection reset"),
        (r"(?i)remote ?disconnected|connection aborted", "connection closed by the server"),
    ):
        if re.search(pattern, text):
            return reason
    return text[:_MAX_REASON] or "no answer"


# ---------------------------------------------------------------------------------------------
# signals: a create or delete request must not be cut in half
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the block, then deliver them to the handlers that were set.

    A Ctrl-C that lands between sending ``create namespace`` and reading the answer would leave a
    namespace we don't know we own; one during ``delete`` would leave it behind. The requests are
    short (bounded by the request timeout), so holding a signal that long is fine.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}

    def hold(signum: int, frame: Any) -> None:
        del frame
        pending.append(signum)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, hold)
    except (ValueError, OSError):  # not the main interpreter: nothing to defer
        for held, handler in previous.items():
            signal.signal(held, handler if handler is not None else signal.SIG_DFL)
        yield
        return
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


# ---------------------------------------------------------------------------------------------
# provisioning
# ---------------------------------------------------------------------------------------------

# Helm's install order: what others depend on (config, accounts, services) before workloads.
_KIND_ORDER = (
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
)
_WORKLOADS = {
    ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets",
    ("apps", "DaemonSet"): "daemonsets",
    ("batch", "Job"): "jobs",
}


def _apply_order(docs: Sequence[RenderedDoc]) -> list[RenderedDoc]:
    rank = {kind: i for i, kind in enumerate(_KIND_ORDER)}
    return sorted(docs, key=lambda d: rank.get(d.kind, len(rank)))  # stable: file order within


@contextlib.contextmanager
def provision_kubernetes(scenario: Scenario, options: StagingOptions) -> Iterator[StagedTarget]:
    """Build the scenario's staging namespace, yield its target, delete the namespace on exit."""
    from perfgate.staging import StagedTarget

    spec = scenario.staging.kubernetes
    if spec is None:
        raise ScenarioError(
            f"{scenario.path or scenario.name}: staging.kubernetes is required for the "
            "kubernetes provider"
        )
    log = options.log
    started = time.monotonic()
    run_id = options.run_id or uuid.uuid4().hex[:8]
    namespace = namespace_name(scenario.name, options.release, run_id)
    scenario_dir = Path(scenario.path).resolve().parent if scenario.path else Path.cwd()

    # 1. offline, before any cluster is touched
    docs = render_manifests(
        spec, release=options.release, namespace=namespace, scenario_dir=scenario_dir
    )
    problems = check_documents(docs, spec, strict=True)
    in_cluster_load = scenario.load.placement == "kubernetes"
    if in_cluster_load:
        problems += reserved_name_errors(docs)
    if problems:
        head = f"{len(problems)} manifest errors: " if len(problems) > 1 else "invalid manifest: "
        raise ScenarioError(head + "; ".join(problems))
    fixed_url = render_url(spec, release=options.release, namespace=namespace) if spec.url else None

    # 2. credentials
    cluster = load_cluster_config(options.kubeconfig, options.context)
    api = _Api(cluster)
    log(
        f"kubernetes: {cluster.server} (context {cluster.context}): creating namespace "
        f"{namespace} for {len(docs)} object(s)"
    )
    ns = _Namespace(name=namespace, run_id=run_id)
    forwarder: _PortForwarder | None = None
    interrupted = False
    try:
        ns.attempted = True
        with _signals_deferred():
            ns.uid = _create_namespace(api, ns, scenario=scenario, release=options.release)
        _apply(api, _apply_order(docs), namespace, log)
        _wait_ready(api, docs, namespace, spec.ready_timeout_s, log)
        if fixed_url is not None:
            url, via = fixed_url, "url"
        elif in_cluster_load:
            # the load generators run in this namespace: the Service's name is the shortest path
            url, via = f"http://{spec.service}.{namespace}.svc:{spec.port}", "cluster-dns"
        else:
            url, via, forwarder = _endpoint(api, spec, namespace, log)
        elapsed = time.monotonic() - started
        log(f"kubernetes: namespace {namespace} ready in {elapsed:.1f} s; target {url} ({via})")
        yield StagedTarget(
            url=url,
            provider="kubernetes",
            description=f"namespace {namespace} on {cluster.server} ({via})",
            namespace=namespace,
            details={
                "server": cluster.server,
                "context": cluster.context,
                "run_id": run_id,
                "endpoint": via,
                "objects": [f"{d.kind}/{d.name}" for d in docs],
                "provision_s": round(elapsed, 3),
            },
        )
    except (KeyboardInterrupt, Interrupted, SystemExit):
        interrupted = True
        raise
    finally:
        if forwarder is not None:
            forwarder.close()
        try:
            if ns.attempted:
                _teardown(api, ns, cluster, options, interrupted=interrupted)
        finally:
            api.close()


@dataclass(slots=True, kw_only=True)
class _Namespace:
    """What this run knows about its namespace (mutable: filled in as provisioning goes)."""

    name: str
    run_id: str
    attempted: bool = False  # a create request was sent (the namespace may exist)
    uid: str | None = None  # set once the API server confirmed the create


def _create_namespace(api: _Api, ns: _Namespace, *, scenario: Scenario, release: str) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns.name,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                SCENARIO_LABEL: _label_value(scenario.name) or "scenario",
                RELEASE_LABEL: _label_value(release) or "release",
            },
            "annotations": {RUN_ID_ANNOTATION: ns.run_id},
        },
    }
    try:
        _, data = api.request(
            "POST", "/api/v1/namespaces", action=f"creating namespace {ns.name}", body=body
        )
    except _ApiError as exc:
        if exc.status == 409:
            ns.attempted = False  # it is somebody else's (or an earlier run's): never delete it
            raise StagingError(
                f"creating namespace {ns.name} on {api.server}: it already exists; perfgate "
                "never reuses a namespace (leftovers of crashed runs: perfgate staging gc)"
            ) from exc
        raise
    return str(((data or {}).get("metadata") or {}).get("uid") or "") or ""


def _apply(
    api: _Api, docs: Sequence[RenderedDoc], namespace: str, log: Callable[[str], None]
) -> None:
    for doc in docs:
        prefix, plural, namespaced = api.resource(doc.api_version, doc.kind, where=doc.where)
        if not namespaced:
            raise ScenarioError(
                f"{doc.where}: {doc.kind} is cluster-scoped on {api.server}; perfgate only "
                "applies objects inside its staging namespace"
            )
        path = f"{prefix}/namespaces/{namespace}/{plural}/{urllib.parse.quote(doc.name, safe='')}"
        try:
            api.request(
                "PATCH",
                path,
                action=f"applying {doc.kind}/{doc.name}",
                query=(("fieldManager", FIELD_MANAGER), ("force", "true")),
                body=doc.obj,
                content_type="application/apply-patch+yaml",
            )
        except _ApiError as exc:
            if exc.status in (400, 422):  # the server says the manifest is wrong: bad input
                raise ScenarioError(f"{doc.where}: rejected by the API server: {exc}") from exc
            raise
        log(f"kubernetes: applied {doc.kind}/{doc.name}")


# ---------------------------------------------------------------------------------------------
# load generators in the namespace (load.placement: kubernetes)
# ---------------------------------------------------------------------------------------------

_COLLECTIONS = {
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
}


@contextlib.contextmanager
def deploy_load_generators(
    scenario: Scenario,
    staged: StagedTarget,
    options: StagingOptions,
    *,
    files: Mapping[str, str],
    secret_files: Mapping[str, str],
) -> Iterator[tuple[str, int]]:
    """Run Locust's master and ``load.workers`` worker pods in the staging namespace.

    ``files`` and ``secret_files`` become the ConfigMap and the Secret the pods read (see
    :func:`perfgate.load.runner.pod_files`). Yields the master's control address on this
    machine, ``("127.0.0.1", port)``: a port-forward through the API server. Call it inside
    :func:`provision_kubernetes`'s block; the pods are deleted with the namespace (with
    ``--keep-namespace`` they are scaled to zero on exit instead of loading nothing forever).
    """
    if staged.provider != "kubernetes" or not staged.namespace:
        raise InputError(
            "load.placement kubernetes needs the kubernetes staging provider "
            f"(this run uses {staged.provider}); set load.placement local"
        )
    image = scenario.load.worker_image
    if not image:
        raise ScenarioError(
            f"{scenario.path or scenario.name}: load.worker_image: required when "
            "load.placement is kubernetes"
        )
    namespace = staged.namespace
    log = options.log
    spec = scenario.staging.kubernetes
    timeout_s = spec.ready_timeout_s if spec is not None else 300.0
    docs = load_generator_documents(
        namespace=namespace,
        image=image,
        workers=scenario.load.workers,
        files=files,
        secret_files=secret_files,
    )
    cluster = load_cluster_config(options.kubeconfig, options.context)
    api = _Api(cluster)
    forwarder: _PortForwarder | None = None
    try:
        log(
            f"kubernetes: starting the Locust master and {scenario.load.workers} worker pod(s) "
            f"({image}) in {namespace}"
        )
        for doc in docs:
            _create(api, doc, namespace)
            log(f"kubernetes: created {doc.kind}/{doc.name}")
        _wait_ready(api, docs, namespace, timeout_s, log)
        pod = _ready_pod(api, namespace, LOAD_MASTER_NAME, "master")
        forwarder = _PortForwarder(cluster, namespace, pod, LOAD_CONTROL_PORT, log)
        forwarder.check()
        log(
            f"kubernetes: Locust master {pod}: control 127.0.0.1:{forwarder.port} -> "
            f"{pod}:{LOAD_CONTROL_PORT} through the API server"
        )
        yield "127.0.0.1", forwarder.port
    finally:
        if forwarder is not None:
            forwarder.close()
        try:
            if options.keep_namespace:
                _scale_to_zero(api, namespace, log)
        finally:
            api.close()


def _create(api: _Api, doc: RenderedDoc, namespace: str) -> None:
    """POST one object (never a patch: the names must be new, and the Secret needs only create)."""
    path = _COLLECTIONS[doc.kind].format(ns=namespace)
    try:
        api.request("POST", path, action=f"creating {doc.kind}/{doc.name}", body=doc.obj)
    except _ApiError as exc:
        if exc.status == 409:
            raise ScenarioError(
                f"{doc.kind}/{doc.name} already exists in {namespace}: names starting with "
                f"{LOAD_NAME_PREFIX!r} are reserved for perfgate's load generators"
            ) from exc
        if exc.status in (400, 422):  # e.g. load.worker_image is not a valid image reference
            raise ScenarioError(
                f"load.placement kubernetes: {doc.kind}/{doc.name} rejected by the API server: "
                f"{exc}"
            ) from exc
        if exc.status == 403:
            raise StagingError(
                f"{exc} (load.placement kubernetes also needs create on configmaps, secrets, "
                "services and deployments: see scenarios/k8s/rbac.yaml)"
            ) from exc
        raise


def _ready_pod(api: _Api, namespace: str, what: str, role: str) -> str:
    selector = {**load_labels(role)}
    selector.pop("app.kubernetes.io/managed-by")
    query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = _list(
        api,
        f"/api/v1/namespaces/{namespace}/pods",
        action=f"reading pods of {what}",
        query=(("labelSelector", query),),
    )
    for pod in pods:
        meta = pod.get("metadata") or {}
        conds = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or ()}
        if (conds.get("Ready") or {}).get("status") == "True" and not meta.get("deletionTimestamp"):
            return str(meta["name"])
    raise StagingError(f"deployment {what} in {namespace} has no ready pod")


def _scale_to_zero(api: _Api, namespace: str, log: Callable[[str], None]) -> None:
    """Best effort: a kept namespace keeps the load generators' objects, not running pods."""
    for name in (LOAD_WORKER_NAME, LOAD_MASTER_NAME):
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


# ---------------------------------------------------------------------------------------------
# readiness
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadState:
    """One workload's readiness, in words."""

    ref: str  # e.g. deployment/exchange
    ready: bool
    progress: str  # e.g. "1/2 available"
    failed: str | None = None  # set when it can no longer become ready (Job failed, deadline)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or ()
    return {str(c.get("type")): c for c in conds if isinstance(c, dict)}


def _generation_pending(obj: dict[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return isinstance(generation, int) and _int(observed) < generation


def workload_state(kind: str, obj: dict[str, Any]) -> WorkloadState:
    """Readiness as ``kubectl rollout status`` (or ``wait --for=condition=complete``) sees it."""
    name = (obj.get("metadata") or {}).get("name", "?")
    ref = f"{kind.lower()}/{name}"
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if kind == "Job":
        conds = _conditions(obj)
        if (conds.get("Complete") or {}).get("status") == "True":
            return WorkloadState(ref=ref, ready=True, progress="complete")
        failed = conds.get("Failed") or {}
        if failed.get("status") == "True":
            why = failed.get("message") or failed.get("reason") or "failed"
            return WorkloadState(ref=ref, ready=False, progress="failed", failed=str(why))
        completions = spec.get("completions")
        want = completions if isinstance(completions, int) else 1
        return WorkloadState(
            ref=ref,
            ready=False,
            progress=(
                f"{_int(status.get('succeeded'))}/{want} complete, "
                f"{_int(status.get('active'))} active"
            ),
        )
    if _generation_pending(obj):
        return WorkloadState(ref=ref, ready=False, progress="rollout not yet observed")
    if kind == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        updated = _int(status.get("updatedNumberScheduled"))
        available = _int(status.get("numberAvailable"))
        ok = updated >= desired and available >= desired
        return WorkloadState(ref=ref, ready=ok, progress=f"{available}/{desired} available")
    replicas = spec.get("replicas")
    want = replicas if isinstance(replicas, int) else 1
    if kind == "Deployment":
        progressing = _conditions(obj).get("Progressing") or {}
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return WorkloadState(
                ref=ref,
                ready=False,
                progress="progress deadline exceeded",
                failed=str(progressing.get("message") or "progress deadline exceeded"),
            )
        updated = _int(status.get("updatedReplicas"))
        total = _int(status.get("replicas"))
        available = _int(status.get("availableReplicas"))
        if updated < want:
            return WorkloadState(ref=ref, ready=False, progress=f"{updated}/{want} updated")
        if total > updated:
            return WorkloadState(
                ref=ref, ready=False, progress=f"{total - updated} old replica(s) terminating"
            )
        return WorkloadState(
            ref=ref, ready=available >= want, progress=f"{available}/{want} available"
        )
    if kind == "StatefulSet":
        ready = _int(status.get("readyReplicas"))
        sts_available = status.get("availableReplicas")
        current = status.get("currentRevision")
        update = status.get("updateRevision")
        if ready < want or (isinstance(sts_available, int) and sts_available < want):
            shown = min(ready, sts_available) if isinstance(sts_available, int) else ready
            return WorkloadState(ref=ref, ready=False, progress=f"{shown}/{want} ready")
        if (
            update
            and current != update
            and (spec.get("updateStrategy") or {}).get("type") != "OnDelete"
        ):
            return WorkloadState(ref=ref, ready=False, progress="rolling update in progress")
        return WorkloadState(ref=ref, ready=True, progress=f"{ready}/{want} ready")
    return WorkloadState(ref=ref, ready=True, progress="")


def _selects(selector: Any, labels: dict[str, Any]) -> bool:
    if not isinstance(selector, dict):
        return False
    match = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or ()
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return bool(match or selector.get("matchExpressions"))


def _owned_pods(
    kind: str, obj: dict[str, Any], pods: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    selector = (obj.get("spec") or {}).get("selector")
    name = (obj.get("metadata") or {}).get("name")
    owned = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if _selects(selector, labels) or (
            kind == "Job"
            and name in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name"))
        ):
            owned.append(pod)
    return owned


def pod_problem(pod: dict[str, Any]) -> str:
    """Why a pod is not ready, in a few words (the waiting reason kubectl shows in STATUS)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    for cs in list(status.get("initContainerStatuses") or ()) + list(
        status.get("containerStatuses") or ()
    ):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("PodInitializing",):
            message = str(waiting.get("message") or "").replace("\n", " ")
            return (
                f"{waiting['reason']}: {message}"[:_MAX_REASON]
                if message
                else str(waiting["reason"])
            )
        terminated = state.get("terminated") or {}
        if terminated and _int(terminated.get("exitCode")) != 0:
            return f"{terminated.get('reason') or 'Error'} (exit code {terminated.get('exitCode')})"
    conds = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, dict)}
    scheduled = conds.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        msg = str(scheduled.get("message") or "").replace("\n", " ")
        return f"{scheduled.get('reason') or 'Unschedulable'}: {msg}"[:_MAX_REASON]
    phase = status.get("phase") or "Pending"
    if phase == "Running" and (conds.get("Ready") or {}).get("status") != "True":
        return "Running, not ready (readiness probe failing?)"
    return str(phase)


def _describe_pods(pods: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, list[str]] = {}
    for pod in pods:
        conds = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or ()}
        if (conds.get("Ready") or {}).get("status") == "True":
            continue
        counts.setdefault(pod_problem(pod), []).append(str((pod.get("metadata") or {}).get("name")))
    parts = []
    for problem, names in counts.items():
        who = f"pod {names[0]}" if len(names) == 1 else f"{len(names)} pods"
        parts.append(f"{who}: {problem}")
    return "; ".join(parts)


def _list(
    api: _Api, path: str, *, action: str, query: Sequence[tuple[str, Any]] = ()
) -> list[dict[str, Any]]:
    _, data = api.request("GET", path, action=action, query=query)
    items = (data or {}).get("items") if isinstance(data, dict) else None
    return [i for i in items or () if isinstance(i, dict)]


def _wait_ready(
    api: _Api,
    docs: Sequence[RenderedDoc],
    namespace: str,
    timeout_s: float,
    log: Callable[[str], None],
) -> None:
    wanted: dict[tuple[str, str], list[str]] = {}
    for doc in docs:
        key = (doc.api_version.rpartition("/")[0], doc.kind)
        if key in _WORKLOADS:
            wanted.setdefault(key, []).append(doc.name)
    if not wanted:
        return
    started = time.monotonic()
    deadline = started + timeout_s
    poll = TIMING.poll_min_s
    last_line, last_logged = "", 0.0
    count = sum(len(v) for v in wanted.values())
    log(f"kubernetes: waiting up to {timeout_s:g} s for {count} workload(s) to become ready")
    while True:
        states, pending_objs = [], []
        for (group, kind), names in wanted.items():
            items = _list(
                api,
                f"/apis/{group}/v1/namespaces/{namespace}/{_WORKLOADS[(group, kind)]}",
                action=f"reading {kind}s in {namespace}",
            )
            by_name = {(i.get("metadata") or {}).get("name"): i for i in items}
            for name in names:
                obj = by_name.get(name)
                if obj is None:
                    state = WorkloadState(
                        ref=f"{kind.lower()}/{name}", ready=False, progress="missing"
                    )
                else:
                    state = workload_state(kind, obj)
                states.append(state)
                if not state.ready:
                    pending_objs.append((kind, obj or {}, state))
        failed = [s for s in states if s.failed]
        if failed:
            raise StagingError(
                f"namespace {namespace}: "
                + "; ".join(f"{s.ref} failed: {s.failed}"[:300] for s in failed)
            )
        if not pending_objs:
            took = time.monotonic() - started
            log(f"kubernetes: all {count} workload(s) ready after {took:.1f} s")
            return
        pods = _list(
            api, f"/api/v1/namespaces/{namespace}/pods", action=f"reading pods in {namespace}"
        )
        described = []
        for kind, obj, state in pending_objs:
            why = _describe_pods(_owned_pods(kind, obj, pods)) if obj else ""
            described.append(f"{state.ref} {state.progress}" + (f" ({why})" if why else ""))
        line = "; ".join(described)
        now = time.monotonic()
        if now >= deadline:
            events = _warning_events(api, namespace)
            details = []
            for (_, obj, state), text in zip(pending_objs, described, strict=True):
                name = (obj.get("metadata") or {}).get("name") or state.ref.partition("/")[2]
                extra = events.get(name) or next(
                    (m for n, m in events.items() if n.startswith(f"{name}-")), ""
                )
                details.append(text + (f" [event: {extra}]" if extra and extra not in text else ""))
            raise StagingError(
                f"namespace {namespace} not ready after {timeout_s:g} s: " + "; ".join(details)
            )
        if line != last_line or now - last_logged >= TIMING.heartbeat_s:
            log(f"kubernetes: waiting ({now - started:.0f}/{timeout_s:g} s): {line}")
            last_line, last_logged = line, now
        time.sleep(max(0.0, min(poll, deadline - now)))
        poll = min(poll * 1.5, TIMING.poll_max_s)


def _warning_events(api: _Api, namespace: str) -> dict[str, str]:
    """The newest warning event message per involved object name (best effort)."""
    try:
        items = _list(
            api,
            f"/api/v1/namespaces/{namespace}/events",
            action=f"reading events in {namespace}",
            query=(("fieldSelector", "type=Warning"),),
        )
    except StagingError:
        return {}
    newest: dict[str, tuple[str, str]] = {}
    for ev in items:
        name = str((ev.get("involvedObject") or {}).get("name") or "")
        stamp = str(ev.get("lastTimestamp") or ev.get("eventTime") or "")
        message = f"{ev.get('reason') or 'Warning'}: {ev.get('message') or ''}".strip()
        if name and (name not in newest or stamp >= newest[name][0]):
            newest[name] = (stamp, message[:_MAX_REASON].replace("\n", " "))
    return {k: v[1] for k, v in newest.items()}


# ---------------------------------------------------------------------------------------------
# endpoint
# ---------------------------------------------------------------------------------------------


def _tcp_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=TIMING.probe_timeout_s):
            return True
    except OSError:
        return False


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _endpoint(
    api: _Api, spec: KubernetesSpec, namespace: str, log: Callable[[str], None]
) -> tuple[str, str, _PortForwarder | None]:
    """(url, how it was found, port-forwarder to close or None)."""
    _, svc = api.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/services/{spec.service}",
        action=f"reading service {spec.service}",
    )
    svc_spec = svc.get("spec") or {}
    port = next((p for p in svc_spec.get("ports") or () if p.get("port") == spec.port), None)
    if port is None:
        raise StagingError(f"service {spec.service} in {namespace} has no port {spec.port}")
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
    forwarder = _PortForwarder(api.cluster, namespace, pod, target_port, log)
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


def _node_hosts(api: _Api) -> list[str]:
    """Node addresses worth trying for a nodePort, best first, then the API server's host."""
    hosts: list[str] = []
    try:
        nodes = _list(api, "/api/v1/nodes", action="listing nodes")
    except _ApiError as exc:
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
    api: _Api, spec: KubernetesSpec, namespace: str, svc_spec: dict[str, Any], port: dict[str, Any]
) -> tuple[str, int]:
    selector = svc_spec.get("selector") or {}
    if not selector:
        raise StagingError(
            f"service {spec.service} has no selector, so no pod to port-forward to; "
            "set staging.kubernetes.url"
        )
    query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = _list(
        api,
        f"/api/v1/namespaces/{namespace}/pods",
        action=f"reading pods of service {spec.service}",
        query=(("labelSelector", query),),
    )
    for pod in pods:
        conds = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or ()}
        if (conds.get("Ready") or {}).get("status") != "True":
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


class _PortForwarder:
    """127.0.0.1:<port> → pod:<port>: one websocket through the API server per connection.

    The websocket port-forward protocol (``v4.channel.k8s.io``): channel 0 carries data, channel 1
    errors, and each channel's first frame is the port number. The websocket comes from the
    official client's ``create_websocket`` (its TLS, proxy and auth handling); the frames are
    pumped here so that every socket is closed deterministically when a connection ends.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        namespace: str,
        pod: str,
        port: int,
        log: Callable[[str], None],
    ) -> None:
        import kubernetes

        self._client = kubernetes.client.ApiClient(cluster.configuration)
        self._server = cluster.server
        self.namespace, self.pod, self.target_port = namespace, pod, port
        self._log = log
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(0.2)  # accept() must notice close() (closing does not wake it)
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="perfgate-port-forward", daemon=True
        )
        self._acceptor.start()

    def _what(self) -> str:
        return f"port-forward to pod {self.pod}:{self.target_port} on {self._server}"

    def _open(self) -> Any:
        """A websocket to the pod's port, past the two port-number frames."""
        import websocket
        from kubernetes.stream.ws_client import create_websocket, get_websocket_url

        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/portforward"
        try:
            _, url, headers, _, _ = self._client.param_serialize(
                "GET",
                path,
                query_params=[("ports", str(self.target_port))],
                header_params={},
                auth_settings=["BearerToken"],
            )
            ws = create_websocket(
                self._client.configuration,
                get_websocket_url(url),
                headers={k.lower(): v for k, v in headers.items()},
            )
        except websocket.WebSocketBadStatusException as exc:
            raise StagingError(
                f"{self._what()}: {exc.status_code} {exc.status_message or ''}".rstrip()
            ) from exc
        except (websocket.WebSocketException, OSError) as exc:
            raise StagingError(f"{self._what()}: {_transport_reason(str(exc))}") from exc
        try:
            ws.settimeout(max(TIMING.connect_timeout_s, TIMING.probe_timeout_s))
            headers_seen = 0
            while headers_seen < 2:  # channel 0 and channel 1 each announce the port first
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise StagingError(f"{self._what()}: the API server closed the tunnel")
                if opcode == websocket.ABNF.OPCODE_BINARY and len(frame.data) == 3:
                    headers_seen += 1
            ws.settimeout(None)
        except BaseException as exc:
            _close_ws(ws)
            if isinstance(exc, StagingError | KeyboardInterrupt | Interrupted | SystemExit):
                raise
            raise StagingError(f"{self._what()}: {_transport_reason(str(exc))}") from exc
        return ws

    def check(self) -> None:
        """Open and close one tunnel, so RBAC or a dead pod fails now, not mid-ramp."""
        import websocket

        ws = self._open()
        try:
            # an unreachable pod port shows up on the error channel right away, or never
            ready, _, _ = select.select([ws.sock], [], [], min(0.2, TIMING.probe_timeout_s))
            if ready:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_BINARY and frame.data[:1] == b"\x01":
                    message = frame.data[1:].decode(errors="replace").strip()
                    raise StagingError(f"{self._what()}: {message[:_MAX_REASON]}")
        except (websocket.WebSocketException, OSError) as exc:
            raise StagingError(f"{self._what()}: {_transport_reason(str(exc))}") from exc
        finally:
            _close_ws(ws)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._conns_lock:
                self._conns.add(conn)
                self._workers = [t for t in self._workers if t.is_alive()]
                worker = threading.Thread(
                    target=self._serve, args=(conn,), name="perfgate-port-forward-conn", daemon=True
                )
                self._workers.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        ws = None
        try:
            ws = self._open()
            _pump(conn, ws, self._closed)
        except Exception as exc:  # one failed connection must not stop the run; load sees it
            if not self._closed.is_set():
                self._log(f"kubernetes: port-forward connection failed: {exc}")
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            if ws is not None:
                _close_ws(ws)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._conns_lock:
            conns = list(self._conns)
            workers = list(self._workers)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=2.0)
        for worker in workers:
            worker.join(timeout=2.0)
        with contextlib.suppress(Exception):
            self._client.close()


def _close_ws(ws: Any) -> None:
    # close() skips the socket when the peer closed first; shutdown() always releases it
    with contextlib.suppress(Exception):
        ws.close(timeout=0.1)
    with contextlib.suppress(Exception):
        ws.shutdown()


def _pump(conn: socket.socket, ws: Any, closed: threading.Event) -> None:
    """Copy bytes between a local connection and a port-forward websocket until either closes."""
    import ssl

    import websocket

    sel = selectors.DefaultSelector()
    try:
        sel.register(conn, selectors.EVENT_READ)
        sel.register(ws.sock, selectors.EVENT_READ)
        while not closed.is_set():
            for key, _ in sel.select(timeout=0.5):
                if key.fileobj is conn:
                    data = conn.recv(65536)
                    if not data:
                        return
                    ws.send_binary(b"\x00" + data)
                    continue
                while True:  # a TLS record may hold more frames than select() can see
                    opcode, frame = ws.recv_data_frame(True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        return
                    if opcode == websocket.ABNF.OPCODE_BINARY and frame.data[:1] == b"\x00":
                        conn.sendall(frame.data[1:])
                    elif opcode == websocket.ABNF.OPCODE_BINARY and len(frame.data) > 1:
                        return  # the error channel spoke: the pod's port refused or went away
                    if not (isinstance(ws.sock, ssl.SSLSocket) and ws.sock.pending()):
                        break
    except (OSError, websocket.WebSocketException):
        return
    finally:
        sel.close()


# ---------------------------------------------------------------------------------------------
# teardown and garbage collection
# ---------------------------------------------------------------------------------------------


def _kubectl_hint(cluster: ClusterConfig, namespace: str) -> str:
    flags = ""
    if not cluster.in_cluster:
        flags += f" --kubeconfig {cluster.source}" if os.pathsep not in cluster.source else ""
        flags += f" --context {cluster.context}" if cluster.context not in ("", "?") else ""
    return f"kubectl{flags} delete namespace {namespace}"


def _owned(obj: dict[str, Any], run_id: str | None) -> bool:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    stamped = annotations.get(RUN_ID_ANNOTATION)
    if run_id is None:
        return bool(stamped)
    return stamped == run_id


def _delete_namespace(api: _Api, name: str, uid: str) -> bool:
    """DELETE with a UID precondition; False if it was already gone."""
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": uid},
    }
    status, _ = api.request(
        "DELETE",
        f"/api/v1/namespaces/{name}",
        action=f"deleting namespace {name}",
        body=body,
        allow=(404,),
    )
    return status != 404


def _teardown(
    api: _Api,
    ns: _Namespace,
    cluster: ClusterConfig,
    options: StagingOptions,
    *,
    interrupted: bool,
) -> None:
    """Delete this run's namespace (only if it is ours); never raise, never hang."""
    log = options.log
    hint = _kubectl_hint(cluster, ns.name)
    if options.keep_namespace:
        log(
            f"kubernetes: keeping namespace {ns.name} (--keep-namespace); delete it later with: "
            f"{hint}   (or: perfgate staging gc --older-than 0s)"
        )
        return
    try:
        with _signals_deferred():
            status, current = api.request(
                "GET",
                f"/api/v1/namespaces/{ns.name}",
                action=f"reading namespace {ns.name}",
                allow=(404,),
            )
            if status == 404:
                return  # never created (or already gone)
            meta = (current or {}).get("metadata") or {}
            if not _owned(current or {}, ns.run_id) or (ns.uid and meta.get("uid") != ns.uid):
                log(
                    f"kubernetes: WARNING: namespace {ns.name} does not carry this run's label and "
                    "id; not deleting a namespace perfgate did not create"
                )
                return
            uid = str(meta.get("uid") or "")
            if not meta.get("deletionTimestamp") and not _delete_namespace(api, ns.name, uid):
                return
    except StagingError as exc:
        log(
            f"kubernetes: WARNING: could not delete namespace {ns.name}: {exc}. "
            f"Delete it with: {hint}"
        )
        return
    bound = TIMING.interrupted_delete_wait_s if interrupted else TIMING.delete_wait_s
    log(f"kubernetes: deleting namespace {ns.name} (waiting up to {bound:g} s)")
    try:
        gone = _wait_gone(api, ns.name, bound)
    except (KeyboardInterrupt, Interrupted):
        log(f"kubernetes: not waiting for namespace {ns.name}: Kubernetes finishes deleting it")
        raise
    except StagingError as exc:
        log(f"kubernetes: WARNING: could not confirm namespace {ns.name} was deleted: {exc}")
        return
    if gone:
        log(f"kubernetes: namespace {ns.name} deleted")
    else:
        log(
            f"kubernetes: WARNING: namespace {ns.name} is still Terminating after {bound:g} s "
            "(a finalizer that does not finish?); Kubernetes keeps deleting it. Inspect with: "
            f"kubectl get namespace {ns.name} -o yaml"
        )


def _wait_gone(api: _Api, name: str, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    poll = TIMING.poll_min_s
    while True:
        status, _ = api.request(
            "GET", f"/api/v1/namespaces/{name}", action=f"reading namespace {name}", allow=(404,)
        )
        if status == 404:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(poll, deadline - now))
        poll = min(poll * 1.5, TIMING.poll_max_s)


def _created_at(obj: dict[str, Any]) -> dt.datetime | None:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def gc_namespaces(
    *,
    older_than_s: float,
    kubeconfig: str | None,
    context: str | None,
    log: Callable[[str], None] = print,
    dry_run: bool = False,
) -> tuple[str, ...]:
    """Delete perfgate's leftover namespaces older than ``older_than_s``; return their names.

    Only namespaces named ``perfgate-…`` that carry perfgate's label *and* a run-id annotation are
    candidates: a namespace someone else created is never touched. Deletion is not waited for.
    """
    if older_than_s < 0:
        raise InputError(f"--older-than must not be negative, got {older_than_s:g} s")
    cluster = load_cluster_config(kubeconfig, context)
    api = _Api(cluster)
    try:
        items = _list(
            api,
            "/api/v1/namespaces",
            action="listing perfgate namespaces",
            query=(("labelSelector", f"{MANAGED_BY_LABEL}={MANAGED_BY}"),),
        )
        now = dt.datetime.now(dt.UTC)
        chosen: list[str] = []
        for obj in sorted(items, key=lambda o: str((o.get("metadata") or {}).get("name"))):
            meta = obj.get("metadata") or {}
            name = str(meta.get("name") or "")
            if not name.startswith(NAMESPACE_PREFIX) or not _owned(obj, None):
                continue
            created = _created_at(obj)
            if created is None:
                continue
            age_s = (now - created).total_seconds()
            if age_s < older_than_s:
                continue
            if meta.get("deletionTimestamp"):
                log(f"{name}: already being deleted")
                continue
            age = _format_age(age_s)
            if dry_run:
                log(
                    f"would delete namespace {name} "
                    f"(age {age}, run {meta['annotations'][RUN_ID_ANNOTATION]})"
                )
                chosen.append(name)
                continue
            if _delete_namespace(api, name, str(meta.get("uid") or "")):
                log(f"deleted namespace {name} (age {age})")
                chosen.append(name)
        return tuple(chosen)
    finally:
        api.close()


def _format_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
