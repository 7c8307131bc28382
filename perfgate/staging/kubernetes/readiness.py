"""Readiness: when the applied workloads are up, and in words why not.

Deployments, StatefulSets and DaemonSets must be available and Jobs complete, as ``kubectl rollout
status`` (or ``wait --for=condition=complete``) sees them. While they are not, the log says why
(pod phase, container waiting reason such as ``ImagePullBackOff``, scheduling failure); on timeout
the error names each object that is not ready, with the newest warning event about it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perfgate.errors import StagingError
from perfgate.staging.kubernetes import timing
from perfgate.staging.kubernetes.rest import MAX_REASON, Api, list_items
from perfgate.staging.manifests import RenderedDoc

__all__ = [
    "WORKLOADS",
    "WorkloadState",
    "pod_problem",
    "pod_ready",
    "pods_of",
    "wait_ready",
    "workload_state",
]

# The kinds whose readiness is waited for: (API group, kind) → resource name.
WORKLOADS = {
    ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets",
    ("apps", "DaemonSet"): "daemonsets",
    ("batch", "Job"): "jobs",
}


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
    if kind == "Job":
        return _job_state(ref, obj)
    if _generation_pending(obj):
        return WorkloadState(ref=ref, ready=False, progress="rollout not yet observed")
    if kind == "DaemonSet":
        return _daemon_set_state(ref, obj)
    if kind == "Deployment":
        return _deployment_state(ref, obj)
    if kind == "StatefulSet":
        return _stateful_set_state(ref, obj)
    return WorkloadState(ref=ref, ready=True, progress="")


def _replicas(obj: dict[str, Any]) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return replicas if isinstance(replicas, int) else 1


def _job_state(ref: str, obj: dict[str, Any]) -> WorkloadState:
    conds = _conditions(obj)
    if (conds.get("Complete") or {}).get("status") == "True":
        return WorkloadState(ref=ref, ready=True, progress="complete")
    failed = conds.get("Failed") or {}
    if failed.get("status") == "True":
        why = failed.get("message") or failed.get("reason") or "failed"
        return WorkloadState(ref=ref, ready=False, progress="failed", failed=str(why))
    status = obj.get("status") or {}
    completions = (obj.get("spec") or {}).get("completions")
    want = completions if isinstance(completions, int) else 1
    return WorkloadState(
        ref=ref,
        ready=False,
        progress=(
            f"{_int(status.get('succeeded'))}/{want} complete, {_int(status.get('active'))} active"
        ),
    )


def _daemon_set_state(ref: str, obj: dict[str, Any]) -> WorkloadState:
    status = obj.get("status") or {}
    desired = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    ok = updated >= desired and available >= desired
    return WorkloadState(ref=ref, ready=ok, progress=f"{available}/{desired} available")


def _deployment_state(ref: str, obj: dict[str, Any]) -> WorkloadState:
    status = obj.get("status") or {}
    want = _replicas(obj)
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
    return WorkloadState(ref=ref, ready=available >= want, progress=f"{available}/{want} available")


def _stateful_set_state(ref: str, obj: dict[str, Any]) -> WorkloadState:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    want = _replicas(obj)
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


def pods_of(
    api: Api, namespace: str, selector: Mapping[str, str], *, action: str
) -> list[dict[str, Any]]:
    """The pods in ``namespace`` that match every label of ``selector``."""
    query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return list_items(
        api,
        f"/api/v1/namespaces/{namespace}/pods",
        action=action,
        query=(("labelSelector", query),),
    )


def pod_ready(pod: dict[str, Any]) -> bool:
    """Whether a pod's Ready condition is True (it passes its readiness probe)."""
    return (_conditions(pod).get("Ready") or {}).get("status") == "True"


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
                f"{waiting['reason']}: {message}"[:MAX_REASON]
                if message
                else str(waiting["reason"])
            )
        terminated = state.get("terminated") or {}
        if terminated and _int(terminated.get("exitCode")) != 0:
            return f"{terminated.get('reason') or 'Error'} (exit code {terminated.get('exitCode')})"
    scheduled = _conditions(pod).get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        msg = str(scheduled.get("message") or "").replace("\n", " ")
        return f"{scheduled.get('reason') or 'Unschedulable'}: {msg}"[:MAX_REASON]
    phase = status.get("phase") or "Pending"
    if phase == "Running" and not pod_ready(pod):
        return "Running, not ready (readiness probe failing?)"
    return str(phase)


def _describe_pods(pods: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, list[str]] = {}
    for pod in pods:
        if pod_ready(pod):
            continue
        counts.setdefault(pod_problem(pod), []).append(str((pod.get("metadata") or {}).get("name")))
    parts = []
    for problem, names in counts.items():
        who = f"pod {names[0]}" if len(names) == 1 else f"{len(names)} pods"
        parts.append(f"{who}: {problem}")
    return "; ".join(parts)


# Container waiting reasons that mean the image itself cannot be had.
PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)

# A workload that is not ready yet: its kind, its object ({} while missing) and its state.
_Pending = tuple[str, dict[str, Any], WorkloadState]


def wait_ready(
    api: Api,
    docs: Sequence[RenderedDoc],
    namespace: str,
    timeout_s: float,
    log: Callable[[str], None],
    *,
    pull_fatal: Collection[str] = (),
) -> None:
    """Wait until every workload in ``docs`` is ready; else a StagingError saying what and why.

    A pod whose image in ``pull_fatal`` cannot be pulled ends the wait at once, not at the
    timeout: a previous release's image gone from the registry does not come back, and the
    caller has somewhere else to turn.
    """
    wanted = _wanted(docs)
    if not wanted:
        return
    started = time.monotonic()
    deadline = started + timeout_s
    poll = timing.TIMING.poll_min_s
    last_line, last_logged = "", 0.0
    count = sum(len(v) for v in wanted.values())
    log(f"kubernetes: waiting up to {timeout_s:g} s for {count} workload(s) to become ready")
    while True:
        pending = _pending(api, wanted, namespace)
        if not pending:
            took = time.monotonic() - started
            log(f"kubernetes: all {count} workload(s) ready after {took:.1f} s")
            return
        pods = list_items(
            api, f"/api/v1/namespaces/{namespace}/pods", action=f"reading pods in {namespace}"
        )
        if pull_fatal:
            _raise_on_pull_failure(pods, pull_fatal, namespace)
        described = []
        for kind, obj, state in pending:
            why = _describe_pods(_owned_pods(kind, obj, pods)) if obj else ""
            described.append(f"{state.ref} {state.progress}" + (f" ({why})" if why else ""))
        line = "; ".join(described)
        now = time.monotonic()
        if now >= deadline:
            raise _not_ready(api, namespace, timeout_s, pending, described)
        if line != last_line or now - last_logged >= timing.TIMING.heartbeat_s:
            log(f"kubernetes: waiting ({now - started:.0f}/{timeout_s:g} s): {line}")
            last_line, last_logged = line, now
        time.sleep(max(0.0, min(poll, deadline - now)))
        poll = min(poll * 1.5, timing.TIMING.poll_max_s)


def _wanted(docs: Sequence[RenderedDoc]) -> dict[tuple[str, str], list[str]]:
    """The names of the workloads among ``docs``, by (API group, kind)."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for doc in docs:
        key = (doc.api_version.rpartition("/")[0], doc.kind)
        if key in WORKLOADS:
            wanted.setdefault(key, []).append(doc.name)
    return wanted


def _pending(api: Api, wanted: dict[tuple[str, str], list[str]], namespace: str) -> list[_Pending]:
    """The workloads not ready yet; a StagingError if one can no longer become ready."""
    states, pending = [], []
    for (group, kind), names in wanted.items():
        items = list_items(
            api,
            f"/apis/{group}/v1/namespaces/{namespace}/{WORKLOADS[(group, kind)]}",
            action=f"reading {kind}s in {namespace}",
        )
        by_name = {(i.get("metadata") or {}).get("name"): i for i in items}
        for name in names:
            obj = by_name.get(name)
            if obj is None:
                state = WorkloadState(ref=f"{kind.lower()}/{name}", ready=False, progress="missing")
            else:
                state = workload_state(kind, obj)
            states.append(state)
            if not state.ready:
                pending.append((kind, obj or {}, state))
    failed = [s for s in states if s.failed]
    if failed:
        raise StagingError(
            f"namespace {namespace}: "
            + "; ".join(f"{s.ref} failed: {s.failed}"[:300] for s in failed)
        )
    return pending


def _raise_on_pull_failure(
    pods: Sequence[dict[str, Any]], images: Collection[str], namespace: str
) -> None:
    """A StagingError naming the image when a container of ``images`` cannot be pulled."""
    for pod in pods:
        spec = pod.get("spec") or {}
        declared = {
            c.get("name"): c.get("image")
            for c in list(spec.get("initContainers") or ()) + list(spec.get("containers") or ())
            if isinstance(c, dict)
        }
        status = pod.get("status") or {}
        for cs in list(status.get("initContainerStatuses") or ()) + list(
            status.get("containerStatuses") or ()
        ):
            image = declared.get(cs.get("name")) or cs.get("image")
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if image in images and waiting.get("reason") in PULL_FAILURES:
                name = (pod.get("metadata") or {}).get("name")
                raise StagingError(
                    f"namespace {namespace}: image {image} cannot be pulled "
                    f"(pod {name}: {pod_problem(pod)})"
                )


def _not_ready(
    api: Api,
    namespace: str,
    timeout_s: float,
    pending: Sequence[_Pending],
    described: Sequence[str],
) -> StagingError:
    """The timeout error: each workload not ready, why, and the newest warning event about it."""
    events = _warning_events(api, namespace)
    details = []
    for (_, obj, state), text in zip(pending, described, strict=True):
        name = (obj.get("metadata") or {}).get("name") or state.ref.partition("/")[2]
        extra = events.get(name) or next(
            (m for n, m in events.items() if n.startswith(f"{name}-")), ""
        )
        details.append(text + (f" [event: {extra}]" if extra and extra not in text else ""))
    return StagingError(
        f"namespace {namespace} not ready after {timeout_s:g} s: " + "; ".join(details)
    )


def _warning_events(api: Api, namespace: str) -> dict[str, str]:
    """The newest warning event message per involved object name (best effort)."""
    try:
        items = list_items(
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
            newest[name] = (stamp, message[:MAX_REASON].replace("\n", " "))
    return {k: v[1] for k, v in newest.items()}
