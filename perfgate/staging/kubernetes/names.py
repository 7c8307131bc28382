"""What perfgate names and labels in a cluster, and how it recognises its own namespaces.

A namespace is deleted only if it carries perfgate's label *and* the run id it was created with:
these names are the whole contract between a run, its teardown and ``perfgate staging gc``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIELD_MANAGER",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "NAMESPACE_PREFIX",
    "RELEASE_LABEL",
    "RUN_ID_ANNOTATION",
    "SCENARIO_LABEL",
    "RunNamespace",
    "label_value",
    "namespace_name",
    "owned",
]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "perfgate"
RUN_ID_ANNOTATION = "perfgate.dev/run-id"
SCENARIO_LABEL = "perfgate.dev/scenario"
RELEASE_LABEL = "perfgate.dev/release"
FIELD_MANAGER = "perfgate"
NAMESPACE_PREFIX = "perfgate-"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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


def label_value(text: str) -> str:
    """``text`` as a valid label value (≤ 63 chars, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def owned(obj: dict[str, Any], run_id: str | None) -> bool:
    """Whether perfgate created ``obj`` (in run ``run_id``; None: in any run)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    stamped = annotations.get(RUN_ID_ANNOTATION)
    if run_id is None:
        return bool(stamped)
    return stamped == run_id


@dataclass(slots=True, kw_only=True)
class RunNamespace:
    """What this run knows about its namespace (mutable: filled in as provisioning goes)."""

    name: str
    run_id: str
    attempted: bool = False  # a create request was sent (the namespace may exist)
    uid: str | None = None  # set once the API server confirmed the create
