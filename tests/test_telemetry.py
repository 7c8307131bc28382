"""Telemetry and attribution without load: the window arithmetic, the samplers' parsing, the
recorder's failure handling, and the attribution rules on synthetic steps with a known answer."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from perfgate.errors import ScenarioError
from perfgate.exchange import ExchangeConfig
from perfgate.exchange.app import create_app
from perfgate.models import (
    EndpointStats,
    ResourceReading,
    RunResult,
    Saturation,
    StepResources,
    StepStats,
    from_jsonable,
    to_jsonable,
)
from perfgate.report.html import render_html
from perfgate.scenario import parse_scenario
from perfgate.telemetry import KubeSampler, Recorder, Request, Unavailable, attribute
from perfgate.telemetry.base import mean_in, rate_in
from perfgate.telemetry.exchange import POOL, ExchangeSampler
from perfgate.telemetry.kube import quantity
from perfgate.telemetry.prometheus import parse_text

# ---------------------------------------------------------------------------------------------
# window arithmetic
# ---------------------------------------------------------------------------------------------


def test_a_counter_becomes_its_rate_over_the_window_interpolated_at_the_edges() -> None:
    points = [(0.0, 0.0), (1.0, 10.0), (2.0, 30.0), (3.0, 60.0)]
    assert rate_in(points, 0.5, 2.5) == pytest.approx((45.0 - 5.0) / 2.0)
    assert rate_in(points, 0.0, 3.0) == pytest.approx(20.0)


def test_a_counter_that_went_back_is_a_restart_not_a_negative_rate() -> None:
    assert rate_in([(0.0, 50.0), (1.0, 60.0), (2.0, 3.0), (3.0, 9.0)], 0.0, 3.0) is None


def test_a_window_the_samples_do_not_cover_has_no_rate() -> None:
    assert rate_in([(5.0, 1.0), (6.0, 2.0)], 0.0, 6.0) is None


def test_a_gauge_is_its_mean_within_the_window() -> None:
    assert mean_in([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (9.0, 100.0)], 0.5, 2.5) == 4.0


def test_quantities() -> None:
    assert quantity("250m") == 0.25
    assert quantity("1500000n") == pytest.approx(0.0015)
    assert quantity("64Mi") == 64 * 2**20
    assert quantity("2") == 2.0
    assert quantity("lots") is None


# ---------------------------------------------------------------------------------------------
# the exchange's /metrics and its sampler
# ---------------------------------------------------------------------------------------------


def _scrape(config: ExchangeConfig, requests: list[str]) -> tuple[str, dict[Any, float]]:
    async def run() -> str:
        async with TestClient(TestServer(create_app(config))) as client:
            for path in requests:
                await client.get(path)
            return await (await client.get("/metrics")).text()

    text = asyncio.run(run())
    return text, parse_text(text)


def test_the_exchange_counts_slot_time_per_route_and_the_rebuilds_without_the_cache() -> None:
    config = ExchangeConfig(cache=False, service_ms=1.0, rebuild_ms=3.0, seed_orders=4)
    text, m = _scrape(config, ["/orderbook/BTC-USDT"] * 3 + ["/balances/a"])
    assert "# TYPE exchange_slot_busy_seconds_total counter" in text
    book = ("exchange_service_seconds_total", (("route", "GET /orderbook/{market}"),))
    assert m[book] == pytest.approx(3 * 0.004)
    assert m[("exchange_orderbook_rebuild_seconds_total", ())] == pytest.approx(3 * 0.003)
    assert m[("exchange_orderbook_rebuilds_total", ())] == 3
    assert m[("exchange_slot_busy_seconds_total", ())] == pytest.approx(3 * 0.004 + 0.001)
    assert m[("exchange_slots", ())] == 16
    assert m[("process_resident_memory_bytes", ())] > 1e6


def test_with_the_cache_order_book_reads_are_hits_and_cost_no_extra_slot_time() -> None:
    config = ExchangeConfig(cache=True, service_ms=1.0, seed_orders=4)
    _, m = _scrape(config, ["/orderbook/BTC-USDT"] * 4)
    assert m[("exchange_orderbook_cache_hits_total", ())] == 3  # the first read builds it
    assert m[("exchange_orderbook_rebuild_seconds_total", ())] == 0.0


def test_the_sampler_turns_two_scrapes_into_pool_use_and_shares() -> None:
    def snap(busy: float, book: float, rebuild: float) -> dict[Any, float]:
        return parse_text(
            "exchange_slots 4\n"
            f"exchange_slot_busy_seconds_total {busy}\n"
            "exchange_queue_depth 7\n"
            f'exchange_service_seconds_total{{route="GET /orderbook/{{market}}"}} {book}\n'
            f'exchange_service_seconds_total{{route="POST /orders"}} {busy - book}\n'
            f"exchange_orderbook_rebuild_seconds_total {rebuild}\n"
        )

    sampler = ExchangeSampler("http://127.0.0.1:9")
    sampler.close()
    got = sampler.summarise([(0.0, snap(0, 0, 0)), (10.0, snap(36, 27, 18))], 0.0, 10.0)
    by_name = {r.name: r for r in got.readings}
    assert by_name[POOL].value == pytest.approx(3.6) and by_name[POOL].utilisation == 0.9
    assert by_name["slot time of GET /orderbook/{market}"].value == pytest.approx(0.75)
    assert by_name["order-book rebuild"].value == pytest.approx(0.5)
    assert by_name["exchange queue"].value == 7


# ---------------------------------------------------------------------------------------------
# the recorder never fails the run
# ---------------------------------------------------------------------------------------------


class _Flaky:
    label = "the flaky source"

    def __init__(self) -> None:
        self.calls = 0

    def sample(self) -> dict[str, float]:
        self.calls += 1
        if self.calls > 2:
            raise Unavailable("the flaky source did not answer (ConnectError)")
        return {"x": float(self.calls)}

    def summarise(self, snaps: Any, t0: float, t1: float) -> Any:
        from perfgate.telemetry import Summary

        return Summary(readings=(ResourceReading(name="x", source="t", kind="value", value=1.0),))


class _Broken(_Flaky):
    label = "the broken source"

    def sample(self) -> dict[str, float]:
        raise ZeroDivisionError("a bug in a source")


def test_a_source_that_stops_answering_is_named_as_missing_and_asked_less_often() -> None:
    now = [0.0]
    flaky, broken = _Flaky(), _Broken()
    rec = Recorder([flaky, broken], clock=lambda: now[0])
    for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5):
        now[0] = t
        rec.sample_now()
    assert flaky.calls == 4  # two answers, two failures, then it waits BACKOFF_S
    early = rec.window(0.0, 0.6)
    assert [r.name for r in early.readings] == ["x"]
    assert any("broken source: ZeroDivisionError" in m for m in early.missing)
    late = rec.window(20.0, 30.0)
    assert late.readings == ()
    assert "the flaky source did not answer (ConnectError)" in late.missing


def test_a_window_edge_never_waits_for_a_source_that_is_failing_or_busy() -> None:
    flaky = _Flaky()
    rec = Recorder([flaky], clock=lambda: 0.0)
    for _ in range(3):
        rec.sample_now()
    assert flaky.calls == 3 and rec.sources[0].failures == 1
    rec.sources[0].next_t = 0.0
    rec.sample_now(healthy_only=True)  # failed last time: left to the thread
    assert flaky.calls == 3
    rec.sources[0].failures = 0
    with rec._io_lock:  # the thread is in the middle of a (slow) pass
        rec.sample_now(healthy_only=True)
    assert flaky.calls == 3
    rec.sample_now(healthy_only=True)
    assert flaky.calls == 4


def test_a_staging_without_a_source_says_so() -> None:
    rec = Recorder([], missing=["no telemetry source for an existing target"]).start()
    rec.stop()
    assert rec.window(0, 1).missing == ("no telemetry source for an existing target",)


# ---------------------------------------------------------------------------------------------
# Kubernetes: the metrics API through the provider's client
# ---------------------------------------------------------------------------------------------


def _pods(restarts: int, reason: str = "") -> dict[str, Any]:
    last = {"terminated": {"reason": reason}} if reason else {}
    return {
        "items": [
            {
                "metadata": {"name": "web-1"},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                        },
                        {"name": "proxy", "resources": {}},
                    ]
                },
                "status": {
                    "containerStatuses": [
                        {"name": "app", "restartCount": restarts, "lastState": last},
                        {"name": "proxy", "restartCount": 0},
                    ]
                },
            },
            {"metadata": {"name": "perfgate-load-0"}, "spec": {"containers": [{"name": "w"}]}},
        ]
    }


def _usage(cpu: str) -> dict[str, Any]:
    return {
        "items": [
            {
                "metadata": {"name": "web-1"},
                "containers": [
                    {"name": "app", "usage": {"cpu": cpu, "memory": "64Mi"}},
                    {"name": "proxy", "usage": {"cpu": "5m", "memory": "10Mi"}},
                ],
            },
            {"metadata": {"name": "perfgate-load-0"}, "containers": [{"name": "w", "usage": {}}]},
        ]
    }


def test_pod_cpu_is_judged_against_its_limit_and_an_oom_kill_is_reported() -> None:
    answers = {"pods": _pods(0), "usage": _usage("450m")}

    def get(path: str) -> tuple[int, Any]:
        return 200, answers["usage" if "metrics.k8s.io" in path else "pods"]

    sampler = KubeSampler(get, "ns", exclude_prefix="perfgate-load")
    snaps = []
    for t in range(8):
        if t == 3:  # pods are read at every 4th sample: seen at t = 4
            answers["pods"] = _pods(1, "OOMKilled")
        snaps.append((float(t), sampler.sample()))
    got = sampler.summarise(snaps, 2.0, 7.0)
    cpu = {r.name: r for r in got.readings if r.kind == "cpu"}
    assert set(cpu) == {"container web-1/app CPU", "container web-1/proxy CPU"}
    assert cpu["container web-1/app CPU"].utilisation == pytest.approx(0.9)
    assert cpu["container web-1/proxy CPU"].limit is None
    assert got.cpu_cores == pytest.approx(0.455)
    assert got.events == ("container web-1/app restarted 1× (OOMKilled) — OOM killed",)


def test_a_cluster_without_a_metrics_api_is_unavailable_in_words() -> None:
    sampler = KubeSampler(lambda path: (404, None) if "metrics" in path else (200, {}), "ns")
    with pytest.raises(
        Unavailable, match=r"no metrics API in the cluster .*install metrics-server"
    ):
        sampler.sample()


# ---------------------------------------------------------------------------------------------
# attribution on synthetic steps with a known answer
# ---------------------------------------------------------------------------------------------


def _step(users: int, rps: float, readings: list[ResourceReading], **kw: Any) -> StepStats:
    cores = sum(r.value for r in readings if r.kind == "cpu") or None
    return StepStats(
        users=users,
        duration_s=5.0,
        requests=int(rps * 5),
        failures=0,
        throughput_rps=rps,
        p50_ms=10.0,
        p95_ms=kw.pop("p95", 20.0),
        p99_ms=30.0,
        error_rate=0.0,
        slo_ok=kw.pop("ok", True),
        resources=StepResources(readings=tuple(readings), cpu_cores=cores),
        **kw,
    )


def _cpu(
    name: str, cores: float, limit: float | None, *, request: float | None = None,
    pod: str = "p-7d9f8c6b5-x2kq9",
) -> ResourceReading:  # fmt: skip
    util = cores / limit if limit else None
    return ResourceReading(
        name=name, source="kubernetes", kind="cpu", value=cores, unit="cores", limit=limit,
        utilisation=util, request=request, pod=pod, replicas=1,
    )  # fmt: skip


SAT = Saturation(users=35.0, throughput_rps=300.0, broken=True, reason="p95 > SLO at 40 users")


def _cpu_bound_steps(per_request_ms: float = 1.0, *, db: bool = True) -> list[StepStats]:
    """The api container's CPU grows with req/s up to its 1-core limit; the db stays low."""
    steps = []
    for users, rps, ok in ((10, 100, True), (20, 200, True), (30, 300, True), (40, 300, False)):
        api = min(1.0, rps * per_request_ms / 1000)
        readings = [_cpu("container api/api CPU", api, 1.0)]
        if db:
            readings.append(_cpu("container db/db CPU", 0.1, 2.0))
        steps.append(_step(users, rps, readings, ok=ok))
    return steps


def test_the_container_that_hit_its_cpu_limit_first_is_named() -> None:
    b = attribute(_cpu_bound_steps(per_request_ms=4.5), SAT)  # 90 % of a core at 200 req/s
    assert b is not None and b.kind == "resource"
    assert b.resource == "container api/api CPU"
    assert b.saturated_at_users == 20 and b.confidence == "high"
    assert "1-core limit at 20 users" in b.sentence and "CPU-bound" in b.sentence


def test_cost_against_the_baseline_at_the_same_levels() -> None:
    base = _cpu_bound_steps(per_request_ms=1.0, db=False)
    cand = _cpu_bound_steps(per_request_ms=1.18, db=False)
    b = attribute(cand, SAT, baseline_steps=base, baseline_release="r1")
    assert b is not None and b.cost is not None
    assert b.cost.change == pytest.approx(0.18)
    assert "needs 18 % more CPU per request than r1" in b.cost.text
    assert b.cost.rps_per_core == pytest.approx(300 / (1.18 * 0.3))


def test_no_resource_near_its_limit_is_a_software_limit_led_by_the_request_that_degraded() -> None:
    steps = []
    for users, p95 in ((10, 20.0), (20, 40.0), (30, 160.0)):
        ep = EndpointStats(
            name="order book", method="GET", requests=100, failures=0, throughput_rps=20,
            p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95, mean_ms=p95, error_rate=0.0,
        )  # fmt: skip
        steps.append(
            _step(users, 100.0, [_cpu("container api/api CPU", 0.3, 1.0)], endpoints=(ep,))
        )
    sat = Saturation(users=25.0, throughput_rps=100.0, broken=True, reason="p95 > SLO")
    b = attribute(steps, sat, degraded=("order book", "GET order book degraded first"))
    assert b is not None and b.kind == "software" and b.resource is None
    assert b.sentence.startswith("No measured resource above 60 % at the knee (30 users)")
    assert "the 'order book' request degraded first and its p95 grew ×8.0" in b.sentence


def test_a_high_but_not_full_resource_is_unclear_not_a_cause() -> None:
    steps = [_step(u, 100.0, [_cpu("container api/api CPU", 0.7, 1.0)]) for u in (10, 20, 30)]
    b = attribute(steps, SAT)
    assert b is not None and b.kind == "unclear" and b.confidence == "low"
    assert "not at its limit" in b.sentence


def test_nothing_measured_is_said_and_never_guessed() -> None:
    steps = [
        replace(s, resources=StepResources(missing=("Prometheus at http://x did not answer",)))
        for s in _cpu_bound_steps()
    ]
    b = attribute(steps, SAT)
    assert b is not None and b.kind == "unmeasured" and b.resource is None
    assert "Prometheus at http://x did not answer" in b.sentence
    assert attribute([replace(s, resources=None) for s in steps], SAT) is None


def test_a_route_is_tied_to_the_scenario_request_that_calls_it() -> None:
    pool = ResourceReading(
        name=POOL, source="exchange", kind="utilisation", value=16, unit="slots", limit=16,
        utilisation=1.0,
    )  # fmt: skip
    share = ResourceReading(
        name="order-book rebuild", source="exchange", kind="share", value=0.74, unit="share",
        of=POOL, route="GET /orderbook/{market}",
    )  # fmt: skip
    steps = [_step(u, 270.0, [pool, share]) for u in (50, 100, 150)]
    requests = [
        Request("place order", "POST", "/orders"),
        Request("order book", "GET", "/orderbook/{{ choice('BTC-USDT', 'ETH-USDT') }}"),
    ]
    b = attribute(steps, SAT, requests=requests)
    assert b is not None and (b.consumer, b.request) == ("order-book rebuild", "order book")
    assert "74 % of its time went to order-book rebuilds (the 'order book' request" in b.sentence


# ---------------------------------------------------------------------------------------------
# scenario, result.json and report
# ---------------------------------------------------------------------------------------------

PROM = """
name: s
users: {requests: [{name: a, path: /}]}
slo: {p95_ms: 100}
metrics:
  prometheus:
    url: http://127.0.0.1:9090/
    queries:
      cpu:
        query: 'sum(rate(container_cpu_usage_seconds_total{namespace="{{ namespace }}"}[1m]))'
        limit: 2
        unit: cores
      queue: exchange_queue_depth
"""


def test_a_password_in_the_prometheus_url_is_never_shown() -> None:
    from perfgate.models import PrometheusSpec
    from perfgate.telemetry import PrometheusSampler

    spec = PrometheusSpec(url="http://ci:s3cret-pw@127.0.0.1:9", queries=())
    sampler = PrometheusSampler(spec)
    sampler.close()
    assert sampler.label == "Prometheus at http://ci:***@127.0.0.1:9"


def test_the_prometheus_section_is_read_and_checked_offline() -> None:
    scen = parse_scenario(PROM, source="s.yaml", base_dir=Path("."))
    prom = scen.metrics.prometheus
    assert prom is not None and prom.url == "http://127.0.0.1:9090"
    assert [(q.name, q.limit, q.unit) for q in prom.queries] == [
        ("cpu", 2.0, "cores"),
        ("queue", None, ""),
    ]
    bad = PROM.replace("exchange_queue_depth", "'sum(rate(x[1m])'")
    with pytest.raises(
        ScenarioError, match=r"s\.yaml: metrics\.prometheus\.queries\.queue\.query: unclosed '\('"
    ):
        parse_scenario(bad, source="s.yaml", base_dir=Path("."))
    with pytest.raises(ScenarioError, match=r"metrics\.prometheus\.quer: unknown key"):
        parse_scenario(PROM.replace("queries:", "quer:"), source="s.yaml", base_dir=Path("."))


def test_resources_and_the_bottleneck_round_trip_and_the_report_draws_the_baseline_overlay() -> (
    None
):
    steps = _cpu_bound_steps(per_request_ms=3.2)
    base = _cpu_bound_steps(per_request_ms=1.0)
    from perfgate.models import BaselineRef

    result = RunResult(
        scenario="s", release="r2", verdict="block", reasons=(), saturation=SAT,
        baseline=BaselineRef(release="r1", saturation=SAT), steps=tuple(steps),
        baseline_steps=tuple(base), generator={}, started_at="", finished_at="",
        perfgate_version="0", bottleneck=attribute(steps, SAT, baseline_steps=base,
                                                   baseline_release="r1"),
    )  # fmt: skip
    back = from_jsonable(RunResult, to_jsonable(result))
    assert back == result
    old = to_jsonable(result)
    for s in old["steps"]:
        del s["resources"]
    del old["bottleneck"]
    assert from_jsonable(RunResult, old).bottleneck is None  # an older result.json still reads
    html = render_html(result)
    why = html[html.index('id="why"') : html.index('class="toc"')]
    assert "container api/api CPU (limit 1 core) — saturated first" in why
    assert "baseline r1" in why
    assert "this release needs" in why and "more CPU per request than r1" in why


def test_the_console_says_why_in_one_line_and_what_was_not_measured_in_a_few() -> None:
    from perfgate.models import Bottleneck
    from perfgate.report.why import console_lines

    missing = tuple(f"source {i} did not answer" for i in range(5))
    base = RunResult(
        scenario="s", release="r", verdict="pass", reasons=(), saturation=SAT, baseline=None,
        steps=(), generator={}, started_at="", finished_at="", perfgate_version="0",
    )  # fmt: skip
    found = Bottleneck(kind="resource", sentence="The pool was full — ×8", confidence="high",
                       missing=missing)  # fmt: skip
    lines = console_lines(replace(base, bottleneck=found))
    assert lines[0] == "  why: The pool was full - x8 (confidence high)"
    assert [x for x in lines if "not measured" in x][
        -1
    ] == "  not measured: 2 more (see the report)"
    assert len(lines) == 5
    nothing = Bottleneck(kind="unmeasured", sentence="Not measured: x.", confidence="low",
                         missing=missing)  # fmt: skip
    assert console_lines(replace(base, bottleneck=nothing)) == [
        "  why: Not measured: x. (confidence low)"
    ]
    assert console_lines(base) == []
