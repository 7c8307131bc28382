"""The telemetry stage: what the system under test's resources did at each load level, and why
the release broke (docs/attribution.md).

One sampler per source behind one small protocol (:class:`~perfgate.telemetry.base.Sampler`):
the embedded exchange's ``/metrics`` and its process (``exchange``), the pods of a Kubernetes
staging namespace through the metrics API (``kube``), the scenario's Prometheus queries
(``prometheus``). A :class:`Recorder` samples them on a thread while the load runs; the pipeline
asks it for each measuring window's :class:`~perfgate.models.StepResources`. :func:`attribute`
is pure: recorded steps in, a :class:`~perfgate.models.Bottleneck` out.
"""

from __future__ import annotations

from perfgate.telemetry.attribution import Request, attribute, cpu_ms_per_request
from perfgate.telemetry.base import Sampler, Summary, Unavailable
from perfgate.telemetry.exchange import ExchangeSampler, ProcessSampler
from perfgate.telemetry.kube import KubeSampler
from perfgate.telemetry.prometheus import PrometheusSampler, check_queries
from perfgate.telemetry.recorder import Recorder

__all__ = [
    "ExchangeSampler",
    "KubeSampler",
    "ProcessSampler",
    "PrometheusSampler",
    "Recorder",
    "Request",
    "Sampler",
    "Summary",
    "Unavailable",
    "attribute",
    "check_queries",
    "cpu_ms_per_request",
]
