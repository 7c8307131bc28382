"""Kubernetes series are named by workload, not pod: two runs (or the two namespaces of a
side-by-side run) whose pods have other names still meet, old pod-named records still read and
overlay, and a container with a request but no limit is described, never blamed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from perfgate.models import (
    BaselineRef,
    ResourceReading,
    RunResult,
    Saturation,
    StepResources,
    StepStats,
    from_jsonable,
    to_jsonable,
)
from perfgate.readings import by_series, series
from perfgate.report.html import render_html
from perfgate.telemetry import KubeSampler, attribute
from perfgate.telemetry.base import Summary
from perfgate.telemetry.kube import workload

SAT = Saturation(users=35.0, throughput_rps=300.0, broken=True, reason="p95 > SLO at 40 users")
LEVELS = ((10, 100.0, True), (20, 200.0, True), (30, 300.0, True), (40, 300.0, False))


def _pods(template_hash: str, resources: dict[str, Any], *names: str) -> dict[str, Any]:
    """A Deployment's pods as the pods API lists them: owned by ReplicaSet orders-<hash>."""
    return {
        "items": [
            {
                "metadata": {
                    "name": f"orders-{template_hash}-{suffix}",
                    "labels": {"app": "orders", "pod-template-hash": template_hash},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "controller": True,
                            "name": f"orders-{template_hash}",
                        },
                    ],
                },
                "spec": {"containers": [{"name": "app", "resources": resources}]},
                "status": {"containerStatuses": [{"name": "app", "restartCount": 0}]},
            }
            for suffix in names
        ]
    }


def _usage(template_hash: str, cpu: dict[str, str], memory: str = "100Mi") -> dict[str, Any]:
    """PodMetrics of those pods (suffix -> CPU), labelled as metrics-server labels them."""
    return {
        "items": [
            {
                "metadata": {
                    "name": f"orders-{template_hash}-{suffix}",
                    "labels": {"app": "orders", "pod-template-hash": template_hash},
                },
                "containers": [{"name": "app", "usage": {"cpu": used, "memory": memory}}],
            }
            for suffix, used in cpu.items()
        ]
    }


def _window(pods: dict[str, Any] | None, usage: dict[str, Any]) -> Summary:
    """Four samples of a namespace (pods None: the pods API refuses), summarised."""

    def get(path: str) -> tuple[int, Any]:
        if "metrics.k8s.io" in path:
            return 200, usage
        return (200, pods) if pods is not None else (403, None)

    sampler = KubeSampler(get, "ns", exclude_prefix="perfgate-load")
    snaps = [(float(t), sampler.sample()) for t in range(4)]
    return sampler.summarise(snaps, 0.0, 3.0)


LIMITED = {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "256Mi"}}


def test_a_workload_is_its_controller_whatever_its_pods_are_called() -> None:
    owned = {"kind": "ReplicaSet", "name": "orders-7d9f8c6b5", "controller": True}
    assert workload({
        "name": "orders-7d9f8c6b5-x2kq9", "labels": {"pod-template-hash": "7d9f8c6b5"},
        "ownerReferences": [owned],
    }) == "orders"  # fmt: skip
    assert (
        workload({"name": "db-1", "ownerReferences": [{"kind": "StatefulSet", "name": "db"}]})
        == "db"
    )
    # PodMetrics carry no owners, only labels
    assert (
        workload({"name": "orders-7d9f8c6b5-x2kq9", "labels": {"pod-template-hash": "7d9f8c6b5"}})
        == "orders"
    )
    assert (
        workload({"name": "db-1", "labels": {"statefulset.kubernetes.io/pod-name": "db-1"}}) == "db"
    )
    assert workload({"name": "debug"}) == "debug"  # a bare pod is its own workload


def test_two_runs_whose_pods_have_other_hashes_are_one_series_and_the_baseline_overlays() -> None:
    before = _window(_pods("5c4b9d7f8", LIMITED, "p8mzt"), _usage("5c4b9d7f8", {"p8mzt": "300m"}))
    # the candidate's rollout: another hash, two replicas, one of them busy
    after = _window(
        _pods("7d9f8c6b5", LIMITED, "x2kq9", "b7vfz"),
        _usage("7d9f8c6b5", {"x2kq9": "450m", "b7vfz": "100m"}),
    )
    names = {"container orders/app CPU", "container orders/app memory"}
    assert {r.name for r in before.readings} == {r.name for r in after.readings} == names
    cpu = next(r for r in after.readings if r.kind == "cpu")
    assert (cpu.pod, cpu.replicas, cpu.value) == ("orders-7d9f8c6b5-x2kq9", 2, pytest.approx(0.45))
    assert cpu.utilisation == pytest.approx(0.9) and cpu.request == pytest.approx(0.25)
    assert after.cpu_cores == pytest.approx(0.55)  # the cost counts every replica
    # the pods API refused: the PodMetrics' labels still name the workload
    alone = _window(None, _usage("7d9f8c6b5", {"x2kq9": "450m"}))
    assert {r.name for r in alone.readings} == names

    def steps(found: Summary, scale: float) -> tuple[StepStats, ...]:
        return tuple(_step(u, rps, _scaled(found.readings, scale * u / 40), ok=ok)
                     for u, rps, ok in LEVELS)  # fmt: skip

    result = _result(steps(after, 1.0), steps(before, 1.0))
    b = result.bottleneck
    assert b is not None and (b.kind, b.resource) == ("resource", "container orders/app CPU")
    assert any(
        "at 40 users: pod orders-7d9f8c6b5-x2kq9 (the busiest of 2 replicas)" in e
        for e in b.evidence
    ), b.evidence
    why = _why(render_html(result))
    assert "container orders/app CPU (limit 0.5 cores) — saturated first" in why
    assert "baseline r1" in why  # drawn only when the baseline's series was found


def test_an_old_baseline_named_by_pod_still_reads_and_overlays() -> None:
    cand = tuple(_step(u, rps, [_cpu("container orders/app CPU", u / 80)]) for u, rps, _ in LEVELS)
    old = tuple(
        _step(u, rps, [_cpu("container orders-5c4b9d7f8-p8mzt/app CPU", u / 100, pod="")])
        for u, rps, _ in LEVELS
    )
    stored = to_jsonable(_result(cand, old))
    for step in stored["baseline_steps"]:  # as a baseline written before pods were recorded
        for r in step["resources"]["readings"]:
            for key in ("pod", "replicas", "request"):
                del r[key]
    back = from_jsonable(RunResult, stored)
    assert "baseline r1" in _why(render_html(back))
    # the shapes Kubernetes gives a controller's pods; anything else stays as recorded
    for pod, want in (
        ("orders-5c4b9d7f8-p8mzt", "orders"), ("node-agent-x7k2p", "node-agent"),
        ("db-0", "db"), ("debug", "debug"),
    ):  # fmt: skip
        assert series(_cpu(f"container {pod}/app CPU", 0.1, pod="")) == f"container {want}/app CPU"
    assert series(_cpu("container db-0/app CPU", 0.1)) == "container db-0/app CPU"  # new: as is
    # two replicas of an old record fall in one series: the busiest stands for it
    twins = StepResources(readings=(
        _cpu("container db-0/app CPU", 0.1, pod=""), _cpu("container db-1/app CPU", 0.4, pod="")
    ))  # fmt: skip
    assert by_series(twins)["container db/app CPU"].value == 0.4
    # a name no shape explains is matched as it was: nothing overlays, nothing breaks
    for step in stored["baseline_steps"]:
        step["resources"]["readings"][0]["name"] = "container ???/app CPU"
    assert "baseline r1" not in _why(render_html(from_jsonable(RunResult, stored)))


def test_a_container_with_a_request_and_no_limit_is_described_not_blamed() -> None:
    found = _window(
        _pods("7d9f8c6b5", {"requests": {"cpu": "250m", "memory": "64Mi"}}, "x2kq9"),
        _usage("7d9f8c6b5", {"x2kq9": "725m"}),
    )
    cpu = next(r for r in found.readings if r.kind == "cpu")
    mem = next(r for r in found.readings if r.kind == "memory")
    assert (cpu.limit, cpu.utilisation, cpu.request) == (None, None, pytest.approx(0.25))
    assert mem.request == pytest.approx(64.0) and mem.unit == "MB"
    db = _cpu("container db/db CPU", 0.2, limit=2.0)
    steps = [_step(u, rps, [*_scaled(found.readings, u / 40), db], ok=ok) for u, rps, ok in LEVELS]
    b = attribute(steps, SAT)
    assert b is not None and b.kind == "software" and b.resource is None
    assert b.confidence == "low"
    assert (
        "container orders/app CPU: no CPU limit; used 2.9× its request of 250m at the knee "
        "(40 users; pod orders-7d9f8c6b5-x2kq9) — the node's free CPU is the ceiling"
    ) in b.evidence
    assert (
        "container orders/app memory: no memory limit; used 1.6× its request of 64 MB at the knee"
        in " ".join(b.evidence)
    )
    assert b.sentence.endswith(
        "; or the node: container orders/app CPU has no limit and used 2.9× its request, so "
        "the node's free CPU (not measured) may be the ceiling."
    ), b.sentence
    # a saturated container is still the bottleneck; the request-only one is evidence beside it
    full = _cpu("container db/db CPU", 1.9, limit=2.0)
    steps = [_step(u, rps, [*_scaled(found.readings, u / 40), full]) for u, rps, _ in LEVELS]
    b = attribute(steps, SAT)
    assert b is not None and (b.kind, b.resource) == ("resource", "container db/db CPU")
    assert any("container orders/app CPU: no CPU limit; used 2.9×" in e for e in b.evidence)
    # within its request: nothing to say
    within = [r for r in _scaled(found.readings, 0.2) if r.kind == "cpu"]  # 145m of 250m
    steps = [_step(u, rps, [*within, db]) for u, rps, _ in LEVELS]
    b = attribute(steps, SAT)
    assert b is not None and not any("request" in e for e in b.evidence)
    assert b.confidence != "low" and "or the node" not in b.sentence
    why = _why(render_html(_result(tuple(steps), ())))
    assert "container orders/app CPU (no limit, request 0.25 cores)" in why


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _cpu(
    name: str, cores: float, limit: float | None = 1.0, pod: str = "p-7d9f8c6b5-x2kq9"
) -> ResourceReading:
    return ResourceReading(
        name=name, source="kubernetes", kind="cpu", value=cores, unit="cores", limit=limit,
        utilisation=cores / limit if limit else None, pod=pod, replicas=1 if pod else None,
    )  # fmt: skip


def _scaled(readings: tuple[ResourceReading, ...], k: float) -> list[ResourceReading]:
    """The same readings at another load: CPU scaled by ``k``, memory as it was."""
    out = []
    for r in readings:
        if r.kind == "cpu":
            util = r.utilisation * k if r.utilisation is not None else None
            r = replace(r, value=r.value * k, utilisation=util)
        out.append(r)
    return out


def _step(users: int, rps: float, readings: list[ResourceReading], ok: bool = True) -> StepStats:
    return StepStats(
        users=users, duration_s=5.0, requests=int(rps * 5), failures=0, throughput_rps=rps,
        p50_ms=10.0, p95_ms=20.0, p99_ms=30.0, error_rate=0.0, slo_ok=ok,
        resources=StepResources(readings=tuple(readings),
                                cpu_cores=sum(r.value for r in readings if r.kind == "cpu")),
    )  # fmt: skip


def _result(steps: tuple[StepStats, ...], base: tuple[StepStats, ...]) -> RunResult:
    return RunResult(
        scenario="s", release="r2", verdict="pass", reasons=(), saturation=SAT,
        baseline=BaselineRef(release="r1", saturation=SAT), steps=steps, baseline_steps=base,
        generator={}, started_at="", finished_at="", perfgate_version="0",
        bottleneck=attribute(steps, SAT, baseline_steps=base, baseline_release="r1"),
    )  # fmt: skip


def _why(html: str) -> str:
    return html[html.index('id="why"') : html.index('class="toc"')]
