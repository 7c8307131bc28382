"""Provisioning: a fresh namespace per run from the scenario's manifests, always deleted.

What :func:`provision_kubernetes` does, in order:

1. render and check the manifests offline (:mod:`perfgate.staging.manifests`): a bad manifest is
   bad input (exit 2) and no request has reached any cluster yet;
2. load the cluster credentials like kubectl (:mod:`~perfgate.staging.kubernetes.config`);
3. create ``perfgate-<scenario>-<release>-<id>``, labelled ``app.kubernetes.io/managed-by=perfgate``
   and annotated with the run id;
4. server-side apply every object into it (REST ``PATCH`` with ``application/apply-patch+yaml``;
   kinds are found through API discovery, so custom resources work too), in Helm's order;
5. wait until every Deployment, StatefulSet and DaemonSet is available and every Job complete
   (:mod:`~perfgate.staging.kubernetes.readiness`);
6. find the endpoint: ``staging.kubernetes.url`` (a template) if set; with
   ``load.placement: kubernetes`` the load comes from pods in the namespace, so the Service's
   cluster DNS name (no port-forward); else :mod:`~perfgate.staging.kubernetes.endpoint`;
7. on every exit (success, exception, readiness timeout, KeyboardInterrupt, SIGTERM raised as an
   exception by the CLI) delete the namespace, unless ``keep_namespace``
   (:mod:`~perfgate.staging.kubernetes.teardown`).

With ``StagingOptions.recipe`` the namespace holds a previous release instead of the scenario as
written: the same manifests, rendered with the recipe's image and variables
(:mod:`~perfgate.staging.kubernetes.recipe`). Every target records its own recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfgate.errors import Interrupted, ScenarioError, StagingError
from perfgate.models import KubernetesSpec, Scenario
from perfgate.staging.kubernetes.config import ClusterConfig, load_cluster_config
from perfgate.staging.kubernetes.endpoint import backend_pod, find_endpoint
from perfgate.staging.kubernetes.names import (
    FIELD_MANAGER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RELEASE_LABEL,
    RUN_ID_ANNOTATION,
    SCENARIO_LABEL,
    RunNamespace,
    label_value,
    namespace_name,
)
from perfgate.staging.kubernetes.portforward import PortForwarder
from perfgate.staging.kubernetes.readiness import wait_ready
from perfgate.staging.kubernetes.recipe import (
    parse_recipe,
    recorded_recipe,
    uses_image,
    with_recipe,
)
from perfgate.staging.kubernetes.rest import Api, ApiError
from perfgate.staging.kubernetes.signals import signals_deferred
from perfgate.staging.kubernetes.teardown import teardown
from perfgate.staging.manifests import (
    RenderedDoc,
    check_documents,
    manifests_digest,
    render_image,
    render_manifests,
    render_url,
    reserved_name_errors,
)

if TYPE_CHECKING:
    from perfgate.staging import StagedTarget, StagingOptions

__all__ = ["apply_order", "provision_kubernetes"]

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


def apply_order(docs: Sequence[RenderedDoc]) -> list[RenderedDoc]:
    """``docs`` in Helm's install order (kinds not listed last, file order kept within a kind)."""
    rank = {kind: i for i, kind in enumerate(_KIND_ORDER)}
    return sorted(docs, key=lambda d: rank.get(d.kind, len(rank)))  # stable: file order within


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """What is decided offline, before any request reaches a cluster."""

    spec: KubernetesSpec  # the scenario's, with a recipe's variables over its own
    namespace: str
    run_id: str
    docs: tuple[RenderedDoc, ...]
    url: str | None  # staging.kubernetes.url, rendered, when set
    recipe: dict[str, Any]  # how this target is staged (StagedTarget.recipe)
    pull_fatal: frozenset[str]  # images whose failed pull ends the readiness wait at once


@contextlib.contextmanager
def provision_kubernetes(scenario: Scenario, options: StagingOptions) -> Iterator[StagedTarget]:
    """Build the scenario's staging namespace, yield its target, delete the namespace on exit.

    With ``options.recipe`` the namespace holds that previous release (see the module docstring).
    """
    started = time.monotonic()
    plan = _plan(scenario, options)  # 1. offline, before any cluster is touched
    cluster = load_cluster_config(options.kubeconfig, options.context)  # 2. credentials
    api = Api(cluster)
    what = f"{len(plan.docs)} object(s)"
    if options.recipe is not None:
        what += f" of release {options.release} from its recipe (image {plan.recipe['image']})"
    options.log(
        f"kubernetes: {cluster.server} (context {cluster.context}): creating namespace "
        f"{plan.namespace} for {what}"
    )
    ns = RunNamespace(name=plan.namespace, run_id=plan.run_id)
    forwarder: PortForwarder | None = None
    interrupted = False
    try:
        ns.attempted = True
        with signals_deferred():
            ns.uid = create_namespace(api, ns, scenario=scenario, release=options.release)
        apply_documents(api, apply_order(plan.docs), plan.namespace, options.log)
        wait_ready(
            api,
            plan.docs,
            plan.namespace,
            plan.spec.ready_timeout_s,
            options.log,
            pull_fatal=plan.pull_fatal,
        )
        url, via, forwarder = _target(api, scenario, plan, options.log)
        staged = _staged(plan, cluster, url=url, via=via, started=started, log=options.log)
        restage = _restager(api, scenario, options, plan, forwarder)
        yield dataclasses.replace(staged, restage=restage, api_get=functools.partial(_api_get, api))
    except (KeyboardInterrupt, Interrupted, SystemExit):
        interrupted = True
        raise
    finally:
        if forwarder is not None:
            forwarder.close()
        try:
            if ns.attempted:
                teardown(api, ns, cluster, options, interrupted=interrupted)
        finally:
            api.close()


def _plan(scenario: Scenario, options: StagingOptions) -> _Plan:
    """Render and check everything offline: a bad manifest or recipe costs no namespace."""
    spec = scenario.staging.kubernetes
    if spec is None:
        raise ScenarioError(
            f"{scenario.path or scenario.name}: staging.kubernetes is required for the "
            "kubernetes provider"
        )
    run_id = options.run_id or uuid.uuid4().hex[:8]
    namespace = namespace_name(scenario.name, options.release, run_id)
    scenario_dir = Path(scenario.path).resolve().parent if scenario.path else Path.cwd()
    recipe = parse_recipe(options.recipe, options.release)
    spec = with_recipe(spec, recipe)
    image = recipe.image if recipe is not None else None
    docs = render_manifests(
        spec, release=options.release, namespace=namespace, scenario_dir=scenario_dir, image=image
    )
    problems = check_documents(docs, spec, strict=True)
    if options.reserved_prefix:
        problems += reserved_name_errors(docs, options.reserved_prefix)
    if problems:
        head = f"{len(problems)} manifest errors: " if len(problems) > 1 else "invalid manifest: "
        raise ScenarioError(head + "; ".join(problems))
    digest = manifests_digest(spec)
    if recipe is not None:
        _check_recipe_fits(recipe.image, recipe.manifests_digest, docs, digest, options)
    else:
        image = render_image(spec, release=options.release, namespace=namespace)
    url = (
        render_url(spec, release=options.release, namespace=namespace, image=image)
        if spec.url
        else None
    )
    return _Plan(
        spec=spec,
        namespace=namespace,
        run_id=run_id,
        docs=docs,
        url=url,
        recipe=recorded_recipe(image, spec, digest),
        pull_fatal=frozenset({image} if recipe is not None and image else ()),
    )


# Kinds a cross-over does not re-apply: one-shot set-up (a Job's template is immutable, and a
# migration has already run); only what serves is swapped.
_ONE_SHOT = frozenset({"Job", "CronJob", "Pod"})


def _restager(
    api: Api,
    scenario: Scenario,
    options: StagingOptions,
    plan: _Plan,
    forwarder: PortForwarder | None,
) -> Callable[[Mapping[str, Any]], None] | None:
    """How this namespace serves another release (the gate's cross-over), or None if it cannot.

    The namespace's manifests are rendered again with the other release's recipe (its image and
    variables) and applied over the running objects; the rollout is waited for like the first
    one, and a port-forward follows the new pod. The namespace, its Service and the target URL
    stay. Without an image in this target's own recipe the swap back would be impossible.
    """
    if not plan.recipe.get("image"):
        return None

    def restage(recipe: Mapping[str, Any]) -> None:
        again = _plan(scenario, dataclasses.replace(options, recipe=recipe, run_id=plan.run_id))
        docs = [d for d in apply_order(again.docs) if d.kind not in _ONE_SHOT]
        options.log(
            f"kubernetes: cross-over: {plan.namespace} now serves image {again.recipe['image']}"
        )
        apply_documents(api, docs, plan.namespace, options.log)
        wait_ready(
            api,
            docs,
            plan.namespace,
            again.spec.ready_timeout_s,
            options.log,
            pull_fatal=again.pull_fatal,
        )
        if forwarder is not None:
            forwarder.retarget(*backend_pod(api, again.spec, plan.namespace))

    return restage


def _check_recipe_fits(
    image: str,
    recorded_digest: str | None,
    docs: Sequence[RenderedDoc],
    digest: str,
    options: StagingOptions,
) -> None:
    """A recipe must change what is staged; other manifests than its own are only worth a note."""
    if not uses_image(docs, image):
        raise StagingError(
            f"cannot stage release {options.release} from its recipe: no container of the "
            f"manifests uses its image {image} (they must use {{{{ image }}}})"
        )
    if recorded_digest and recorded_digest != digest:
        options.log(
            f"kubernetes: release {options.release} was recorded with other manifests "
            f"({recorded_digest[:19]}…, now {digest[:19]}…); staging it with this run's"
        )


def _target(
    api: Api, scenario: Scenario, plan: _Plan, log: Callable[[str], None]
) -> tuple[str, str, PortForwarder | None]:
    """(url, how it was found, port-forwarder to close or None)."""
    if plan.url is not None:
        return plan.url, "url", None
    if scenario.load.placement == "kubernetes":
        # the load generators run in this namespace: the Service's name is the shortest path
        spec = plan.spec
        return f"http://{spec.service}.{plan.namespace}.svc:{spec.port}", "cluster-dns", None
    return find_endpoint(api, plan.spec, plan.namespace, log)


def _staged(
    plan: _Plan,
    cluster: ClusterConfig,
    *,
    url: str,
    via: str,
    started: float,
    log: Callable[[str], None],
) -> StagedTarget:
    from perfgate.staging import StagedTarget

    elapsed = time.monotonic() - started
    log(f"kubernetes: namespace {plan.namespace} ready in {elapsed:.1f} s; target {url} ({via})")
    return StagedTarget(
        url=url,
        provider="kubernetes",
        description=f"namespace {plan.namespace} on {cluster.server} ({via})",
        namespace=plan.namespace,
        details={
            "server": cluster.server,
            "context": cluster.context,
            "run_id": plan.run_id,
            "endpoint": via,
            "objects": [f"{d.kind}/{d.name}" for d in plan.docs],
            "provision_s": round(elapsed, 3),
        },
        recipe=plan.recipe,
    )


def _api_get(api: Api, path: str) -> tuple[int, Any]:
    """GET ``path`` for the telemetry stage (metrics API): 403/404/503 are answers, not errors."""
    return api.request("GET", path, action=f"reading {path}", allow=(403, 404, 503))


def create_namespace(api: Api, ns: RunNamespace, *, scenario: Scenario, release: str) -> str:
    """Create this run's namespace, labelled and stamped with the run id; return its UID."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns.name,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                SCENARIO_LABEL: label_value(scenario.name) or "scenario",
                RELEASE_LABEL: label_value(release) or "release",
            },
            "annotations": {RUN_ID_ANNOTATION: ns.run_id},
        },
    }
    try:
        _, data = api.request(
            "POST", "/api/v1/namespaces", action=f"creating namespace {ns.name}", body=body
        )
    except ApiError as exc:
        if exc.status == 409:
            ns.attempted = False  # it is somebody else's (or an earlier run's): never delete it
            raise StagingError(
                f"creating namespace {ns.name} on {api.server}: it already exists; perfgate "
                "never reuses a namespace (leftovers of crashed runs: perfgate staging gc)"
            ) from exc
        raise
    return str(((data or {}).get("metadata") or {}).get("uid") or "") or ""


def apply_documents(
    api: Api, docs: Sequence[RenderedDoc], namespace: str, log: Callable[[str], None]
) -> None:
    """Server-side apply each object into ``namespace``; a rejected manifest is bad input."""
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
        except ApiError as exc:
            if exc.status in (400, 422):  # the server says the manifest is wrong: bad input
                raise ScenarioError(f"{doc.where}: rejected by the API server: {exc}") from exc
            raise
        log(f"kubernetes: applied {doc.kind}/{doc.name}")
