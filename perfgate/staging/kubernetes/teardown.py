"""Teardown: delete this run's namespace on every exit, and leftovers of crashed runs on demand.

Only a namespace that carries perfgate's label *and* this run's id is deleted, with a UID
precondition so that the object checked is the object deleted. Deletion is waited for, but only
for a bounded time: a namespace stuck in Terminating (a finalizer that never finishes) gives a
warning, not a hang. Teardown never raises, except to let an interrupt through.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perfgate.errors import InputError, Interrupted, StagingError
from perfgate.staging.kubernetes import timing
from perfgate.staging.kubernetes.config import ClusterConfig, load_cluster_config
from perfgate.staging.kubernetes.names import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NAMESPACE_PREFIX,
    RUN_ID_ANNOTATION,
    RunNamespace,
    owned,
)
from perfgate.staging.kubernetes.rest import Api, list_items
from perfgate.staging.kubernetes.signals import signals_deferred

if TYPE_CHECKING:
    from perfgate.staging import StagingOptions

__all__ = ["gc_namespaces", "parse_age", "teardown"]


def kubectl_hint(cluster: ClusterConfig, namespace: str) -> str:
    """The kubectl command that deletes ``namespace`` by hand, for warnings."""
    flags = ""
    if not cluster.in_cluster:
        flags += f" --kubeconfig {cluster.source}" if os.pathsep not in cluster.source else ""
        flags += f" --context {cluster.context}" if cluster.context not in ("", "?") else ""
    return f"kubectl{flags} delete namespace {namespace}"


def delete_namespace(api: Api, name: str, uid: str) -> bool:
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


def teardown(
    api: Api,
    ns: RunNamespace,
    cluster: ClusterConfig,
    options: StagingOptions,
    *,
    interrupted: bool,
) -> None:
    """Delete this run's namespace (only if it is ours); never raise, never hang."""
    log = options.log
    hint = kubectl_hint(cluster, ns.name)
    if options.keep_namespace:
        log(
            f"kubernetes: keeping namespace {ns.name} (--keep-namespace); delete it later with: "
            f"{hint}   (or: perfgate staging gc --older-than 0s)"
        )
        return
    try:
        if not _delete_if_ours(api, ns, log):
            return
    except StagingError as exc:
        log(
            f"kubernetes: WARNING: could not delete namespace {ns.name}: {exc}. "
            f"Delete it with: {hint}"
        )
        return
    waits = timing.TIMING
    _await_deletion(
        api, ns.name, waits.interrupted_delete_wait_s if interrupted else waits.delete_wait_s, log
    )


def _delete_if_ours(api: Api, ns: RunNamespace, log: Callable[[str], None]) -> bool:
    """Check the namespace is this run's and delete it; False when there is nothing to wait for.

    Signals are held for the read and the delete: one cut in between would leave it behind.
    """
    with signals_deferred():
        status, current = api.request(
            "GET",
            f"/api/v1/namespaces/{ns.name}",
            action=f"reading namespace {ns.name}",
            allow=(404,),
        )
        if status == 404:
            return False  # never created (or already gone)
        meta = (current or {}).get("metadata") or {}
        if not owned(current or {}, ns.run_id) or (ns.uid and meta.get("uid") != ns.uid):
            log(
                f"kubernetes: WARNING: namespace {ns.name} does not carry this run's label and "
                "id; not deleting a namespace perfgate did not create"
            )
            return False
        uid = str(meta.get("uid") or "")
        return bool(meta.get("deletionTimestamp")) or delete_namespace(api, ns.name, uid)


def _await_deletion(api: Api, name: str, bound: float, log: Callable[[str], None]) -> None:
    """Watch the namespace go for at most ``bound`` seconds; a warning if it does not."""
    log(f"kubernetes: deleting namespace {name} (waiting up to {bound:g} s)")
    try:
        gone = _wait_gone(api, name, bound)
    except (KeyboardInterrupt, Interrupted):
        log(f"kubernetes: not waiting for namespace {name}: Kubernetes finishes deleting it")
        raise
    except StagingError as exc:
        log(f"kubernetes: WARNING: could not confirm namespace {name} was deleted: {exc}")
        return
    if gone:
        log(f"kubernetes: namespace {name} deleted")
    else:
        log(
            f"kubernetes: WARNING: namespace {name} is still Terminating after {bound:g} s "
            "(a finalizer that does not finish?); Kubernetes keeps deleting it. Inspect with: "
            f"kubectl get namespace {name} -o yaml"
        )


def _wait_gone(api: Api, name: str, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    poll = timing.TIMING.poll_min_s
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
        poll = min(poll * 1.5, timing.TIMING.poll_max_s)


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
    api = Api(cluster)
    try:
        items = list_items(
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
            if not name.startswith(NAMESPACE_PREFIX) or not owned(obj, None):
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
            if delete_namespace(api, name, str(meta.get("uid") or "")):
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


def parse_age(text: str) -> float:
    """Seconds in ``30s``, ``90m``, ``6h``, ``2d`` or a bare number of seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise InputError(f"expected a duration like 30m, 6h or 2d, got {text!r}")
    return float(m.group(1)) * units.get(m.group(2) or "s", 1.0)
