"""Events (issue 15): the exchange's event feed, users.streams in the load engine, event SLOs.

Real things throughout: the reference exchange's WebSocket, real Locust engines with streaming
users, hostile WebSocket servers (a refused upgrade, malformed frames, a socket the server
closes) and the CLI gating the slow-consumer release against the normal one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from perfgate import analysis
from perfgate.errors import LoadError, ScenarioError
from perfgate.exchange import ExchangeConfig, create_app
from perfgate.histogram import Histogram
from perfgate.load.runner import LocustRunner
from perfgate.models import (
    LoadSpec,
    RequestSpec,
    Slo,
    StepStats,
    StreamExpect,
    StreamSpec,
    UsersSpec,
)
from perfgate.scenario import parse_scenario
from perfgate.staging.embedded import run_exchange
from perfgate.steps import event_stats, generator_health, judge_step

ROOT = Path(__file__).resolve().parent.parent
SLO = Slo(p95_ms=500, error_rate=0.5, event_p95_ms=300, event_loss_rate=0.01)

# -- the exchange's event path --------------------------------------------------------------------


async def _feed(config: ExchangeConfig) -> list[Any]:
    server = TestServer(create_app(config))
    await server.start_server()
    got: list[Any] = []
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(server.make_url("/events")) as ws:
            await ws.send_str("not json")
            got.append(await ws.receive_json(timeout=2))
            await ws.send_json({"op": "subscribe", "account": "a1", "markets": ["BTC-USDT"]})
            got.append(await ws.receive_json(timeout=2))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            body = {"account": "a1", "market": "BTC-USDT", "side": "buy", "price": 1, "quantity": 1}
            placed = await (await s.post(server.make_url("/orders"), json=body)).json()
            await s.delete(server.make_url(f"/orders/{placed['id']}"))
            for _ in range(2):
                got.append((await ws.receive_json(timeout=2), loop.time() - t0))
            got.append(await (await s.get(server.make_url("/health"))).json())
    finally:
        await server.close()
    return got


def test_exchange_publishes_order_events_through_its_event_bus() -> None:
    # one consumer × 100 ms: the second event waits for the first (capacity 10 events/s)
    config = ExchangeConfig(seed_orders=0, service_ms=0, event_workers=1, event_ms=100)
    error, subscribed, (accepted, t1), (cancelled, t2), health = asyncio.run(_feed(config))
    assert error["type"] == "error" and "subscribe" in error["error"]
    assert subscribed == {"type": "subscribed", "account": "a1", "markets": ["BTC-USDT"]}
    assert accepted["event"] == "accepted" and accepted["account"] == "a1"
    assert cancelled["event"] == "cancelled" and cancelled["order_id"] == accepted["order_id"]
    assert isinstance(accepted["sent"], float)
    assert t1 >= 0.1 and t2 >= 0.2  # queued behind the first event on the one consumer
    assert health["stats"]["events_published"] == 2
    assert health["stats"]["events_delivered"] == 2


# -- the scenario's section -----------------------------------------------------------------------

SCENARIO = """
name: ev
staging: {provider: none}
users:
  requests:
    - {name: place, method: POST, path: /orders, json: {a: 1}}
  streams: STREAMS
slo: SLO
"""


def _parse(streams: str, slo: str = "{p95_ms: 100, event_p95_ms: 200}") -> Any:
    text = SCENARIO.replace("STREAMS", streams).replace("SLO", slo)
    return parse_scenario(text, source="ev.yaml", base_dir=ROOT)


def test_scenario_streams_section_and_its_errors() -> None:
    good = (
        "{url: /events, subscribe: {op: subscribe},"
        " expect: [{request: place, id: id, event_id: order_id}]}"
    )
    scen = _parse(good)
    assert scen.users.streams == StreamSpec(
        url="/events",
        subscribe={"op": "subscribe"},
        expect=(StreamExpect(request="place", id="id", event_id="order_id"),),
    )
    assert scen.slo.event_p95_ms == 200
    waiting = _parse(good.replace("{url: /events,", "{url: /events, wait: true,"))
    assert waiting.users.streams is not None and waiting.users.streams.wait is True
    one = "[{request: place, id: id, event_id: x}]"
    bad = {
        "{url: /events, expect: [{request: nope, id: id, event_id: x}]}": "expect[0].request",
        f"{{url: http://x/events, expect: {one}}}": "url",
        "{url: /events, expect: []}": "expect",
        f"{{url: /e, expect: {one}, timeout_s: 0}}": "timeout_s",
        f"{{url: /e, colour: red, expect: {one}}}": "colour",
        f"{{url: /e, expect: {one}, wait: 'yes'}}": "wait",
    }
    for streams, key in bad.items():
        with pytest.raises(ScenarioError, match=re.escape(f"users.streams.{key}")):
            _parse(streams)
    text = SCENARIO.replace("  streams: STREAMS\n", "").replace(
        "SLO", "{p95_ms: 1, event_p95_ms: 2}"
    )
    with pytest.raises(ScenarioError, match=r"slo\.event_p95_ms.*users\.streams"):
        parse_scenario(text, source="ev.yaml", base_dir=ROOT)


# -- judging events -------------------------------------------------------------------------------


def _step(users: int, p95_ms: float, event_ms: float, lost: int = 0) -> StepStats:
    hist, ev = Histogram(), Histogram()
    hist.record_many([p95_ms] * 200)
    ev.record_many([event_ms] * 200)
    return judge_step(
        hist,
        users=users,
        duration_s=2.0,
        requests=200,
        failures=0,
        latency_sum_ms=200 * p95_ms,
        per_second=[100, 100],
        slo=SLO,
        users_spec=UsersSpec(),
        cpu_percent=10.0,
        index=0,
        phase="ramp",
        started_s=0.0,
        events=event_stats(ev, lost=lost),
    )


def test_event_slo_breaks_a_step_whose_requests_are_fine() -> None:
    ok, late, lossy = _step(10, 50, 100), _step(20, 50, 900), _step(20, 50, 100, lost=20)
    assert ok.slo_ok and ok.events is not None and ok.events.received == 200
    assert not late.slo_ok and late.slo_reason.startswith("event p95 9")
    assert not lossy.slo_ok and "event loss 9.1% > 1%" in lossy.slo_reason
    sat = analysis.saturation([ok, late], SLO)
    assert sat.broken_by == "event" and 10 < (sat.users or 0) < 20
    assert "event p95" in sat.reason
    request_bound = analysis.saturation([_step(10, 50, 100), _step(20, 900, 950)], SLO)
    assert request_bound.broken_by == "request"


def test_a_generator_that_reads_events_late_is_flagged() -> None:
    common: dict[str, Any] = {
        "cpu_percent": 20.0,
        "loop_lag_ms": 1.0,
        "throughput_rps": 100.0,
        "mean_latency_ms": 100.0,
        "users": 10,
        "wait_s": 0.0,
        "judge_little": False,
    }
    assert not generator_health(**common, event_read_lag_ms=5.0).limited
    late = generator_health(**common, event_read_lag_ms=450.0)
    assert late.limited and "read events 450 ms" in late.reason


def test_users_waiting_for_their_events_count_as_busy_in_littles_law() -> None:
    """streams.wait: 10 users, 4 in requests (40 req/s × 100 ms), 6 waiting for events."""
    common: dict[str, Any] = {
        "cpu_percent": 20.0,
        "loop_lag_ms": 1.0,
        "throughput_rps": 40.0,
        "mean_latency_ms": 100.0,
        "users": 10,
        "wait_s": 0.0,
        "judge_little": True,
    }
    assert generator_health(**common).limited  # as if 6 of 10 users idled on the generator
    health = generator_health(**common, waiting_users=6.0)
    assert not health.limited and health.little_ratio == 1.0
    step = _step(10, 100.0, 900.0)
    assert step.generator is not None and step.generator.little_ratio is not None
    expects = (StreamExpect(request="place", id="id", event_id="x"),)
    waiting = UsersSpec(streams=StreamSpec(url="/e", expect=expects, wait=True))
    waited = judge_step(
        Histogram.from_dict(step.histogram),
        users=10, duration_s=2.0, requests=80, failures=0, latency_sum_ms=80 * 100.0,
        per_second=[40, 40], slo=SLO, users_spec=waiting,
        cpu_percent=10.0, index=0, phase="ramp", started_s=0.0,
        events=dataclasses.replace(step.events, backlog_mean=6.0),
    )  # fmt: skip
    assert waited.generator is not None and waited.generator.little_ratio == 1.0


# -- streaming users against real and hostile servers ---------------------------------------------


class Hostile:
    """/orders hands out ids; /events sends a malformed frame, a late-read event, then closes."""

    def __init__(self) -> None:
        self.next_id = 0
        self.connections = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()

    async def _orders(self, request: web.Request) -> web.Response:
        self.next_id += 1
        return web.json_response({"id": self.next_id}, status=201)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        if self.connections > 3 and self.connections % 2 == 0:  # later: now and then refused
            return web.json_response({"busy": True}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive(timeout=2)  # the subscription
        await ws.send_str("{not json")
        # the next order's event, stamped as sent 0.5 s ago: as if this generator read it late
        late = {"order_id": self.next_id + 1, "sent": time.time() - 0.5}
        await ws.send_str(json.dumps(late))
        await asyncio.sleep(0.3)
        await ws.close()
        return ws

    async def _plain(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})  # a route that answers without an upgrade

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/orders", self._orders)
        app.router.add_get("/events", self._events)
        app.router.add_get("/plain", self._plain)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def __enter__(self) -> Hostile:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def _users(url: str) -> UsersSpec:
    return UsersSpec(
        requests=(RequestSpec(name="place", method="POST", path="/orders", json={"a": 1}),),
        wait_s=0.05,
        streams=StreamSpec(
            url=url,
            subscribe={"op": "subscribe"},
            expect=(StreamExpect(request="place", id="id", event_id="order_id"),),
            timeout_s=0.5,
            connect_timeout_s=1.0,
        ),
    )


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    with Hostile() as server:
        yield server


@pytest.mark.timeout(60)
def test_malformed_frames_and_a_closing_server_are_failures_not_hangs(hostile: Hostile) -> None:
    with LocustRunner(hostile.url, _users("/events"), SLO, LoadSpec(request_timeout_s=2)) as r:
        step = r.measure(2, settle_s=0.3, min_s=2.0, max_s=2.0, min_samples=0, phase="ramp")
    kinds = {e.kind: e.count for e in step.error_kinds if e.method == "WS"}
    assert kinds.get("malformed event (not a JSON object)", 0) >= 1
    assert kinds.get("the server closed the stream", 0) >= 1
    assert kinds.get("the server refused the WebSocket upgrade (HTTP 503)", 0) >= 1
    assert step.events is not None and step.events.lost > 0 and step.events.stream_errors >= 2
    assert not step.slo_ok and "event loss" in step.slo_reason
    assert step.error_rate == 0  # the requests themselves were fine
    assert step.generator is not None and step.generator.limited  # read late: the generator's
    assert "read events" in step.generator.reason


@pytest.mark.timeout(60)
def test_a_stream_url_that_refuses_the_upgrade_is_refused_before_the_load(
    hostile: Hostile,
) -> None:
    for path, why in (
        ("/plain", r"refused the WebSocket upgrade \(HTTP 200\)"),
        ("ws://127.0.0.1:9/events", r"did not accept a WebSocket within 1 s \(Connection.*\)"),
    ):
        with pytest.raises(LoadError, match=f"users.streams.url .*{why}: no load was started"):
            LocustRunner(hostile.url, _users(path), SLO).start()


LOCUSTFILE = """
from locust import FastHttpUser, constant, task

from perfgate.load.engine_stream import EventStream


class Trader(FastHttpUser):
    wait_time = constant(0.05)

    def on_start(self):
        self.account = f"t-{id(self)}"
        self.events = EventStream(
            self.host.replace("http", "ws", 1) + "/events",
            subscribe={"op": "subscribe", "account": self.account},
            event_id="order_id",
        )
        self.events.start()

    def on_stop(self):
        self.events.close()

    @task
    def place(self):
        order = {"account": self.account, "market": "BTC-USDT", "side": "buy",
                 "price": 1, "quantity": 1}
        sent = self.events.now()
        answer = self.client.post("/orders", json=order).json()
        self.events.expect(answer["id"], sent)
"""


@pytest.mark.timeout(60)
def test_a_locustfile_awaits_events_through_the_documented_helper(tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    users = UsersSpec(locustfile=str(locustfile))
    config = ExchangeConfig(service_ms=1, seed_orders=0, event_ms=20, event_workers=1)
    with run_exchange(config) as running, LocustRunner(running.url, users, SLO) as r:
        step = r.measure(2, settle_s=0.5, min_s=1.5, max_s=1.5, min_samples=0, phase="ramp")
    assert step.events is not None and step.events.received > 10 and step.events.lost == 0
    assert step.events.p50_ms is not None and step.events.p50_ms >= 20  # the consumer's 20 ms


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait", [False, True])
def test_a_user_that_waits_for_its_events_is_paced_by_the_event_path(
    tmp_path: Path, wait: bool
) -> None:
    """``wait``: the next request only once the event came (users.streams.wait)."""
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(
        LOCUSTFILE.replace('expect(answer["id"], sent)', f'expect(answer["id"], sent, wait={wait})')
    )
    users = UsersSpec(locustfile=str(locustfile))
    config = ExchangeConfig(service_ms=1, seed_orders=0, event_ms=100, event_workers=1)
    with run_exchange(config) as running, LocustRunner(running.url, users, SLO) as r:
        step = r.measure(2, settle_s=0.5, min_s=1.5, max_s=1.5, min_samples=0, phase="ramp")
    assert step.events is not None and step.events.p50_ms is not None
    # each cycle: 50 ms of think time, and with wait ≥ 100 ms for the consumer (2 users share it)
    per_user_s = step.requests / (2 * step.duration_s)
    if wait:
        assert per_user_s <= 1 / 0.150 + 1, per_user_s
        assert step.events.received >= step.requests - 2  # at most each user's last one pending
    else:
        assert per_user_s >= 12, per_user_s  # ≈ 1 / 0.05: the event path does not pace them


# -- the gate: the slow-consumer release is blocked by the event SLO, the normal one passes -----


def _gate(
    scenario: str, release: str, tmp_path: Path, ramp: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    data = yaml.safe_load((ROOT / "scenarios" / scenario).read_text())
    data["ramp"].update(ramp, min_samples=0)  # short steps: the test's time budget
    data["gate"]["min_users"] = 90  # one short level below the knee must pass it
    path = tmp_path / scenario
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["run", "--scenario", str(path), "--release", release, "--json"]
    args += ["--baseline-dir", str(tmp_path / "bl"), "--report-dir", str(tmp_path / "rep")]
    return subprocess.run(
        [sys.executable, "-m", "perfgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(150)
def test_gate_blocks_the_slow_event_consumer_by_the_event_slo(tmp_path: Path) -> None:
    ramp = {"start_users": 20, "step_users": 40, "max_users": 60}
    slow = _gate(
        "exchange-events-slowbus.yaml",
        "slowbus",
        tmp_path,
        {**ramp, "step_seconds": 2, "settle_seconds": 1},
    )
    assert slow.returncode == 1, slow.stderr
    result = json.loads(slow.stdout)
    assert result["saturation"]["broken_by"] == "event"
    assert "event SLO broke first" in " ".join(result["reasons"])
    fail = next(s for s in result["steps"] if not s["slo_ok"])
    assert fail["p95_ms"] < 250 and fail["events"]["p95_ms"] > 400  # requests fine, events late
    assert result["bottleneck"]["resource"] == "exchange event consumers"  # why: the bus
    (run_dir,) = (tmp_path / "rep" / "exchange-events").glob("slowbus-*")
    assert 'id="events"' in (run_dir / "index.html").read_text()
    assert 'id="evl-' in (run_dir / "index.html").read_text()  # the event latency chart
    assert "The event SLO broke first." in (run_dir / "summary.md").read_text()
    assert "events_p95_ms" in (run_dir / "steps.csv").read_text().splitlines()[0]
    # the normal release holds both SLOs above the floor
    one_level = {"start_users": 100, "max_users": 100, "step_seconds": 1.5, "settle_seconds": 1}
    normal = _gate("exchange-events.yaml", "normal", tmp_path, one_level)
    assert normal.returncode == 0, normal.stderr
    result = json.loads(normal.stdout)
    step = result["steps"][0]
    assert step["slo_ok"] and step["events"]["lost"] == 0 and step["events"]["p95_ms"] < 400
    assert "ms ≤ SLO 400 ms" in result["saturation"]["reason"]  # both SLOs held, in words
    assert "events p95" in normal.stderr and "lost 0" in normal.stderr  # the live step line
