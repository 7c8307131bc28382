"""The ``kubernetes`` staging provider: a fresh namespace per run from manifests, always deleted.

This package is the only place that imports the ``kubernetes`` client, and only when one of its
functions runs. Like kopf's client, it is cut into small modules, each one concern:

- :mod:`.provision`: :func:`provision_kubernetes`, the order of things (render offline, create the
  namespace, apply, wait, find the endpoint, always tear down); :mod:`.recipe`: staging a
  previous release side by side with the same manifests;
- :mod:`.config`: credentials like kubectl finds them; :mod:`.rest`: every request, and the
  translation of the client's errors; :mod:`.signals`: requests a signal must not cut in half;
- :mod:`.readiness`: when workloads are ready and why not; :mod:`.endpoint` and
  :mod:`.portforward`: how the load reaches the Service;
- :mod:`.teardown`: deleting this run's namespace, and ``perfgate staging gc``;
- :mod:`.loadpods`: :func:`deploy_load_generators`, creating the load generators' objects (built
  by :mod:`perfgate.load.pods`) in the namespace, for ``load.placement: kubernetes``;
- :mod:`.names` and :mod:`.timing`: the names and labels perfgate gives what it creates, and the
  waits (tests patch ``timing.TIMING``).

Every error of the client (``ApiException``, urllib3, pydantic, kubeconfig) is translated into
:mod:`perfgate.errors`: the API server unreachable or refusing (401/403/5xx) is a
:class:`~perfgate.errors.StagingError` (exit 3) naming the server and the action; the server
rejecting a manifest (400/422) or a kind it does not serve is a
:class:`~perfgate.errors.ScenarioError` (exit 2). Credentials never appear in a message.
"""

from __future__ import annotations

from perfgate.staging.kubernetes.config import ClusterConfig, load_cluster_config
from perfgate.staging.kubernetes.loadpods import deploy_load_generators
from perfgate.staging.kubernetes.names import (
    FIELD_MANAGER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RUN_ID_ANNOTATION,
    namespace_name,
)
from perfgate.staging.kubernetes.provision import provision_kubernetes
from perfgate.staging.kubernetes.readiness import WorkloadState, pod_problem, workload_state
from perfgate.staging.kubernetes.teardown import gc_namespaces, parse_age
from perfgate.staging.kubernetes.timing import Timing

__all__ = [
    "FIELD_MANAGER",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "RUN_ID_ANNOTATION",
    "ClusterConfig",
    "Timing",
    "WorkloadState",
    "deploy_load_generators",
    "gc_namespaces",
    "load_cluster_config",
    "namespace_name",
    "parse_age",
    "pod_problem",
    "provision_kubernetes",
    "workload_state",
]
