"""The reference exchange's event path: an event bus with its own capacity, and ``GET /events``.

Placing or cancelling an order answers at once; what happened to the order (accepted, partially
filled, filled, cancelled) and the market's public trades reach the user later, as events pushed
over a WebSocket, like a real exchange's UI feed. Every event first passes the bus's consumers:
``event_workers`` of them, each taking ``event_ms`` per event, reserved on a virtual clock exactly
like the request slots (:class:`perfgate.exchange.app.CapacityModel`), so the event path's
capacity is ``event_workers / event_ms`` events per second whatever the request path does. A
release can therefore answer requests fast and deliver their events late.

WebSocket protocol (JSON text frames)::

    → {"op": "subscribe", "account": "trader-7", "markets": ["BTC-USDT"]}
    ← {"type": "subscribed", "account": "trader-7", "markets": ["BTC-USDT"]}
    ← {"type": "order", "event": "accepted" | "partially_filled" | "filled" | "cancelled",
       "order_id": "…", "account": "trader-7", "market": "BTC-USDT", "status": "…",
       "filled": 0.01, "sent": 1765090000.123}
    ← {"type": "trade", "market": "BTC-USDT", "trade_id": 12, "price": …, "quantity": …,
       "sent": …}
    ← {"type": "error", "error": "…"}          (a frame that is not a subscribe message)

``sent`` is the server's wall clock (seconds) when the frame was written: a client that reads it
much later than that is itself slow (perfgate flags its generator, docs/events.md). Events of
accounts and markets nobody subscribed to still cost their consumer time, as on a real bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from perfgate.exchange.metrics import _one as metric_lines

QUEUE_LIMIT = 10_000  # events waiting for one slow connection; older ones are dropped beyond it
MAX_FRAME_BYTES = 64 * 1024


class Reserver(Protocol):
    def reserve(self, now: float, cost_s: float) -> float: ...


class Subscriber:
    """One WebSocket connection's outbox (written by its own writer task)."""

    __slots__ = ("account", "markets", "outbox", "wake")

    def __init__(self) -> None:
        self.account: str | None = None
        self.markets: tuple[str, ...] = ()
        self.outbox: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()


class EventBus:
    """Events through ``workers × event_s`` of consumer capacity, then to their subscribers."""

    def __init__(self, capacity: Reserver, event_s: float) -> None:
        self.capacity = capacity
        self.event_s = event_s
        self.accounts: dict[str, set[Subscriber]] = {}
        self.markets: dict[str, set[Subscriber]] = {}
        self.pending = 0  # published, not yet through a consumer
        self.busy_s = 0.0  # consumer time of every consumed event
        self.published = 0
        self.delivered = 0
        self.dropped = 0

    def publish(self, payload: dict[str, Any], *, account: str = "", market: str = "") -> None:
        """Queue one event for the consumers; it reaches subscribers when its service ends."""
        self.published += 1
        loop = asyncio.get_running_loop()
        if self.event_s <= 0:
            self._deliver(payload, account, market)
            return
        end = self.capacity.reserve(loop.time(), self.event_s)
        self.pending += 1
        loop.call_at(end, self._consumed, payload, account, market)

    def _consumed(self, payload: dict[str, Any], account: str, market: str) -> None:
        self.pending -= 1
        self.busy_s += self.event_s
        self._deliver(payload, account, market)

    def _deliver(self, payload: dict[str, Any], account: str, market: str) -> None:
        targets = self.accounts.get(account) if account else self.markets.get(market)
        for sub in targets or ():
            if len(sub.outbox) >= QUEUE_LIMIT:
                sub.outbox.popleft()
                self.dropped += 1
            sub.outbox.append(payload)
            sub.wake.set()

    def subscribe(self, sub: Subscriber, account: str | None, markets: tuple[str, ...]) -> None:
        self.unsubscribe(sub)
        sub.account, sub.markets = account, markets
        if account:
            self.accounts.setdefault(account, set()).add(sub)
        for market in markets:
            self.markets.setdefault(market, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.account:
            subs = self.accounts.get(sub.account)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.accounts[sub.account]
        for market in sub.markets:
            subs = self.markets.get(market)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.markets[market]
        sub.account, sub.markets = None, ()

    def metrics(self, workers: int) -> str:
        """The bus's lines of ``GET /metrics`` (Prometheus text format, like metrics.py's)."""
        rows = (
            ("exchange_event_consumers", "gauge", "Event consumers of the bus.", workers),
            (
                "exchange_event_busy_seconds_total",
                "counter",
                "Consumer time of consumed events (rate / consumers = utilisation).",
                self.busy_s,
            ),
            ("exchange_events_pending", "gauge", "Events waiting for a consumer.", self.pending),
            ("exchange_events_published_total", "counter", "Events published.", self.published),
        )
        return "".join(line + "\n" for row in rows for line in metric_lines(*row))

    def stats(self) -> dict[str, int]:
        return {
            "events_published": self.published,
            "events_pending": self.pending,
            "events_delivered": self.delivered,
            "events_dropped": self.dropped,
            "event_subscribers": sum(len(s) for s in self.accounts.values()),
        }


def order_event(order: dict[str, Any], event: str) -> dict[str, Any]:
    """An order event from an order's JSON (``Order.to_json``)."""
    return {
        "type": "order",
        "event": event,
        "order_id": order["id"],
        "account": order["account"],
        "market": order["market"],
        "status": order["status"],
        "filled": order["filled"],
    }


def trade_event(trade: dict[str, Any]) -> dict[str, Any]:
    """A public trade event from a trade's JSON (``Trade.to_json``)."""
    return {
        "type": "trade",
        "market": trade["market"],
        "trade_id": trade["id"],
        "price": trade["price"],
        "quantity": trade["quantity"],
    }


async def _writer(ws: web.WebSocketResponse, bus: EventBus, sub: Subscriber) -> None:
    while True:
        await sub.wake.wait()
        sub.wake.clear()
        while sub.outbox:
            payload = sub.outbox.popleft()
            frame = json.dumps({**payload, "sent": time.time()}, separators=(",", ":"))
            await ws.send_str(frame)
            bus.delivered += 1


def _subscription(data: Any, markets: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """(account, markets) of a subscribe message; ValueError naming what is wrong."""
    if not isinstance(data, dict) or data.get("op") != "subscribe":
        raise ValueError('expected {"op": "subscribe", "account": …, "markets": […]}')
    account = data.get("account")
    if account is not None and (not isinstance(account, str) or not account):
        raise ValueError("account must be a non-empty string")
    wanted = data.get("markets") or []
    if not isinstance(wanted, list) or not all(isinstance(m, str) for m in wanted):
        raise ValueError("markets must be a list of market names")
    unknown = [m for m in wanted if m not in markets]
    if unknown:
        raise ValueError(f"unknown market {unknown[0]!r}")
    return account, tuple(dict.fromkeys(wanted))


async def events_handler(
    request: web.Request, bus: EventBus, markets: tuple[str, ...]
) -> web.StreamResponse:
    """``GET /events``: the WebSocket feed (subscribe, then receive events until either closes)."""
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    sub = Subscriber()
    writer = asyncio.create_task(_writer(ws, bus, sub))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                data = None  # answered as a frame that is not a subscribe message
            try:
                account, wanted = _subscription(data, markets)
            except ValueError as exc:
                await ws.send_str(json.dumps({"type": "error", "error": str(exc)}))
                continue
            bus.subscribe(sub, account, wanted)
            reply = {"type": "subscribed", "account": account, "markets": list(wanted)}
            await ws.send_str(json.dumps(reply))
    finally:
        bus.unsubscribe(sub)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await writer
    return ws
