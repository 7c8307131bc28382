"""Which resource readings are one series: the one place readings are matched across load levels,
runs and releases (attribution's curves, the report's baseline overlay, the history's columns).

A reading's name is its series. Kubernetes readings are named by workload and container
("container orders/app CPU"), so two runs, or the two namespaces of a side-by-side run, whose
pods have other names still meet. Readings recorded before that were named by pod ("container
orders-7d9f8c6b5-x2kq9/app CPU"): a pod name of the shape Kubernetes gives a controller's pods
is read as its workload's, so an old baseline still overlays; any other name is matched as it was
recorded (and may find nothing: the overlay is then left out, never guessed).
"""

from __future__ import annotations

import re

from perfgate.models import ResourceReading, StepResources

__all__ = ["busier", "by_series", "series"]

_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"  # the alphabet of Kubernetes' generated name suffixes
_POD_NAMED = re.compile(r"^container (?P<pod>[^/\s]+)/(?P<rest>\S+ (?:CPU|memory))$")
_CONTROLLED = (
    re.compile(rf"^(?P<workload>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$"),  # Deployment: hash, suffix
    re.compile(rf"^(?P<workload>.+)-{_SAFE}{{5}}$"),  # DaemonSet (or a bare ReplicaSet)
    re.compile(r"^(?P<workload>.+)-[0-9]+$"),  # StatefulSet: the ordinal
)


def series(r: ResourceReading) -> str:
    """The stable name of the series ``r`` belongs to."""
    if r.source != "kubernetes" or r.pod:
        return r.name  # named by its workload when it was recorded
    m = _POD_NAMED.match(r.name)
    if m is None:
        return r.name
    for shape in _CONTROLLED:
        found = shape.match(m["pod"])
        if found is not None:
            return f"container {found['workload']}/{m['rest']}"
    return r.name


def busier(a: ResourceReading, b: ResourceReading) -> bool:
    """Whether ``a`` is fuller than ``b``: of its limit where known, else by value."""
    ua = a.utilisation if a.utilisation is not None else -1.0
    ub = b.utilisation if b.utilisation is not None else -1.0
    return (ua, a.value) > (ub, b.value)


def by_series(resources: StepResources | None) -> dict[str, ResourceReading]:
    """One window's readings by series; where several fall in one (the replicas of an old
    record), the busiest stands for it, as :mod:`perfgate.telemetry.kube` records it now."""
    out: dict[str, ResourceReading] = {}
    for r in resources.readings if resources is not None else ():
        key = series(r)
        have = out.get(key)
        if have is None or busier(r, have):
            out[key] = r
    return out
