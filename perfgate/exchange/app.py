"""The reference exchange's HTTP layer: aiohttp routes over the engine, and the capacity model.

Every route except ``GET /health`` and ``GET /metrics`` (the exchange's telemetry,
:mod:`perfgate.exchange.metrics`) first holds a virtual service slot (:class:`CapacityModel`),
then does its real work on the engine; see the package docstring for the knobs and the formula.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import json
import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from perfgate.exchange import ExchangeConfig
from perfgate.exchange.book import BookError, Exchange
from perfgate.exchange.events import EventBus, events_handler, order_event, trade_event
from perfgate.exchange.metrics import CONTENT_TYPE, Metrics
from perfgate.exchange.noise import CapacityNoise

DEFAULT_DEPTH = 20
DEFAULT_TRADES = 50
_SHUTDOWN_TIMEOUT_S = 2.0  # in-flight requests get this long to finish on SIGTERM
_PARENT_POLL_S = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CapacityModel:
    """``slots`` servers, first come first served, reserved on a virtual clock.

    An arriving request takes the slot that frees earliest; its service starts at
    ``max(now, free_at)`` and ends ``cost`` later, when it is answered. Slots never idle while a
    request waits, so capacity is exactly ``slots / cost`` however late the loop's timers fire.
    Optional ``noise`` scales each cost by the machine's state when its service starts.
    """

    __slots__ = ("_free", "_jitter", "_noise", "_rng", "last_cost_s")

    def __init__(
        self,
        slots: int,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
        noise: CapacityNoise | None = None,
    ) -> None:
        self._free = [0.0] * slots  # min-heap of the loop time at which each slot frees
        self._jitter = jitter
        self._rng = rng or random.Random(1)
        self._noise = noise
        self.last_cost_s = 0.0  # slot time of the latest reservation (jitter and noise applied)

    def reserve(self, now: float, cost_s: float) -> float:
        """Reserve the earliest-free slot for ``cost_s`` seconds; return when service ends."""
        if self._jitter:
            cost_s *= 1.0 + self._jitter * self._rng.uniform(-1.0, 1.0)
        start = max(now, self._free[0])
        if self._noise is not None:
            # The machine as it is when service starts (start never decreases: see the heap).
            cost_s *= self._noise.factor(start)
        end = start + cost_s
        heapq.heapreplace(self._free, end)
        self.last_cost_s = cost_s
        return end

    async def hold(self, cost_s: float) -> float:
        """Wait until this request's reserved service ends; return its slot time (0: no wait)."""
        if cost_s <= 0:
            return 0.0
        loop = asyncio.get_running_loop()
        end = self.reserve(loop.time(), cost_s)
        cost_s = self.last_cost_s
        waiter = loop.create_future()
        # call_at with the absolute end time: a late timer delays this answer, never the slot.
        timer = loop.call_at(end, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
        return cost_s


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _State:
    """What the handlers share: config, engine, capacity model, depth cache."""

    def __init__(self, config: ExchangeConfig) -> None:
        self.config = config
        rng = random.Random(config.random_seed)
        self.exchange = Exchange(
            markets=config.markets,
            max_resting_orders=config.max_resting_orders,
            trades_kept=config.trades_kept,
            orders_kept=config.orders_kept,
            max_accounts=config.max_accounts,
            initial_balance=config.initial_balance,
        )
        self.exchange.seed(config.seed_orders, rng)
        self.capacity = CapacityModel(
            config.slots,
            jitter=config.jitter,
            rng=rng,
            noise=CapacityNoise.from_config(config),
        )
        self.service_s = config.service_ms / 1000.0
        self.rebuild_s = config.rebuild_ms / 1000.0
        self.stale_s = config.cache_stale_ms / 1000.0
        # (market, depth) -> (book version, loop time built, encoded body)
        self.depth_cache: dict[tuple[str, int], tuple[int, float, bytes]] = {}
        self.requests = 0
        self.metrics = Metrics(config.slots)
        # The event path's own consumers (events.py): its capacity is independent of the slots.
        self.bus = EventBus(CapacityModel(config.event_workers), config.event_ms / 1000.0)

    def publish_place(self, order: dict[str, Any], trades: list[dict[str, Any]]) -> None:
        """The events of a placed order: its own state, each maker's fill, the public trades."""
        bus = self.bus
        event = "accepted" if order["status"] == "open" else order["status"]
        bus.publish(order_event(order, event), account=order["account"])
        for trade in trades:
            maker_id = trade["sell_order"] if trade["taker_side"] == "buy" else trade["buy_order"]
            with contextlib.suppress(BookError):
                maker = self.exchange.get_order(maker_id).to_json()
                bus.publish(order_event(maker, maker["status"]), account=maker["account"])
            bus.publish(trade_event(trade), market=trade["market"])

    async def slot(self, request: web.Request, cost_s: float) -> float:
        """Hold a service slot for ``cost_s`` on behalf of ``request``'s route; counted."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        self.metrics.in_flight += 1
        try:
            slot_s = await self.capacity.hold(cost_s)
        finally:
            self.metrics.in_flight -= 1
        info = request.match_info.route
        route = f"{request.method} {info.resource.canonical if info.resource else '?'}"
        self.metrics.served(route, slot_s, loop.time() - arrived)
        return slot_s


_STATE: web.AppKey[_State] = web.AppKey("perfgate_exchange_state", _State)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


def _int_query(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not 1 <= value <= high:
        raise _BadRequest(f"{name} must be between 1 and {high}, got {value}")
    return value


class _BadRequest(Exception):
    pass


async def _health(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return _json(
        {
            "status": "ok",
            "config": state.config.to_dict(),
            "stats": {
                "requests": state.requests,
                "open_orders": state.exchange.open_order_count,
                "accounts": state.exchange.account_count,
                **state.bus.stats(),
            },
        }
    )


async def _place_order(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    raw = await request.read()
    await state.slot(request, state.service_s)
    try:
        body = json.loads(raw)
    except ValueError:
        return _error("request body must be a JSON object", 400)
    if not isinstance(body, dict):
        return _error("request body must be a JSON object", 400)
    missing = [k for k in ("account", "market", "side", "price", "quantity") if k not in body]
    if missing:
        return _error(f"missing field {missing[0]!r}", 400)
    result = state.exchange.place(
        body["account"], body["market"], body["side"], body["price"], body["quantity"]
    )
    order = result.order.to_json()
    order["trades"] = [t.to_json() for t in result.trades]
    state.publish_place(order, order["trades"])
    return _json(order, 201)


async def _get_order(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    await state.slot(request, state.service_s)
    return _json(state.exchange.get_order(request.match_info["order_id"]).to_json())


async def _cancel_order(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    await state.slot(request, state.service_s)
    order = state.exchange.cancel(request.match_info["order_id"]).to_json()
    state.bus.publish(order_event(order, "cancelled"), account=order["account"])
    return _json(order)


async def _orderbook(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    config = state.config
    cost_s = state.service_s if config.cache else state.service_s + state.rebuild_s
    slot_s = await state.slot(request, cost_s)
    market = request.match_info["market"]
    depth = _int_query(request, "depth", min(DEFAULT_DEPTH, config.max_depth), config.max_depth)
    book = state.exchange.book(market)
    if not config.cache:
        state.metrics.rebuilds += 1
        state.metrics.rebuild_s += slot_s * state.rebuild_s / cost_s
        return _json(book.depth(depth).to_json())
    now = asyncio.get_running_loop().time()
    key = (market, depth)
    cached = state.depth_cache.get(key)
    if cached is None or (cached[0] != book.version and now - cached[1] >= state.stale_s):
        body = json.dumps(book.depth(depth).to_json(), separators=(",", ":")).encode()
        cached = state.depth_cache[key] = (book.version, now, body)
        state.metrics.rebuilds += 1
    else:
        state.metrics.cache_hits += 1
    return web.Response(body=cached[2], content_type="application/json")


async def _trades(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    await state.slot(request, state.service_s)
    market = request.match_info["market"]
    limit = _int_query(request, "limit", DEFAULT_TRADES, state.config.trades_kept)
    trades = state.exchange.recent_trades(market, limit)
    return _json({"market": market, "trades": [t.to_json() for t in trades]})


async def _balances(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    await state.slot(request, state.service_s)
    account = request.match_info["account"]
    return _json({"account": account, "balances": state.exchange.balances(account)})


async def _events(request: web.Request) -> web.StreamResponse:
    """The WebSocket event feed (:mod:`perfgate.exchange.events`; holds no request slot)."""
    state = request.app[_STATE]
    return await events_handler(request, state.bus, state.config.markets)


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the exchange's telemetry (holds no slot, not counted)."""
    state = request.app[_STATE]
    body = state.metrics.render() + state.bus.metrics(state.config.event_workers)
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests and turn engine refusals into JSON errors with their HTTP status."""
    if request.path != "/metrics":
        request.app[_STATE].requests += 1
    try:
        return await handler(request)
    except BookError as exc:
        return _error(str(exc), exc.http_status)
    except _BadRequest as exc:
        return _error(str(exc), 400)


def create_app(config: ExchangeConfig | None = None) -> web.Application:
    """The aiohttp application of one exchange (state is per application)."""
    app = web.Application(middlewares=[_errors])
    app[_STATE] = _State(config or ExchangeConfig())
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/orders", _place_order)
    app.router.add_get("/orders/{order_id}", _get_order)
    app.router.add_delete("/orders/{order_id}", _cancel_order)
    app.router.add_get("/orderbook/{market}", _orderbook)
    app.router.add_get("/trades/{market}", _trades)
    app.router.add_get("/balances/{account}", _balances)
    app.router.add_get("/events", _events)
    return app


def _format_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    host: str,
    port: int,
    config: ExchangeConfig,
    on_listening: Callable[[str], None] | None,
    parent_pid: int | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(config)
    # Start-up objects (seeded books) live for the whole run: keep them out of GC scans.
    gc.collect()
    gc.freeze()
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        # A deep backlog: hundreds of virtual users connect at once at each step.
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
        await site.start()
        bound_port = runner.addresses[0][1]
        if on_listening is not None:
            on_listening(_format_url(host, bound_port))
        watcher = None
        if parent_pid is not None:
            watcher = asyncio.create_task(_watch_parent(parent_pid, stop))
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        await runner.cleanup()


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # Re-parenting means the process that started us died without stopping us.
    while os.getppid() == parent_pid:
        await asyncio.sleep(_PARENT_POLL_S)
    stop.set()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional: faster loop when it happens to be installed
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(
    host: str,
    port: int,
    config: ExchangeConfig,
    *,
    on_listening: Callable[[str], None] | None = None,
    parent_pid: int | None = None,
) -> None:
    """Run the exchange until SIGTERM/SIGINT (or until ``parent_pid`` is no longer our parent).

    ``on_listening`` receives the base URL once the socket is bound (port 0 picks a free port).
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(host, port, config, on_listening, parent_pid))
