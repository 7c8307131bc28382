"""The embedded exchange's sources: its ``/metrics`` (slot pool, queue, routes, order-book cache)
and its process's CPU and memory (psutil), both per load level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psutil

from perfgate.models import ResourceReading
from perfgate.telemetry.base import Snapshots, Summary, Unavailable, mean_in, rate_in, series
from perfgate.telemetry.prometheus import parse_text

TIMEOUT_S = 1.0
POOL = "exchange slot pool"
REBUILD = "order-book rebuild"
EVENT_BUS = "exchange event consumers"
BOOK_ROUTE = "GET /orderbook/{market}"


class ExchangeSampler:
    """Scrapes the reference exchange's ``/metrics`` (:mod:`perfgate.exchange.metrics`)."""

    label = "the exchange's /metrics"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self.client = httpx.Client(timeout=TIMEOUT_S, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def sample(self) -> dict[Any, float]:
        try:
            response = self.client.get(self.url)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{self.label} did not answer ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise Unavailable(f"{self.label} answered HTTP {response.status_code}")
        return parse_text(response.text)

    def summarise(self, snaps: Snapshots, t0: float, t1: float) -> Summary:
        slots = mean_in(series(snaps, ("exchange_slots", ())), t0, t1)
        busy = rate_in(series(snaps, ("exchange_slot_busy_seconds_total", ())), t0, t1)
        if not slots or busy is None:
            return Summary(missing=(f"{self.label}: no slot counters in this window",))
        # slot time is counted when a service ends, so a window's edges can add a few percent
        # of a service that began before it: a pool is never more than full
        busy = min(busy, slots)
        readings = [
            ResourceReading(
                name=POOL,
                source="exchange",
                kind="utilisation",
                value=busy,
                unit="slots",
                limit=slots,
                utilisation=busy / slots,
            )
        ]
        queue = mean_in(series(snaps, ("exchange_queue_depth", ())), t0, t1)
        if queue is not None:
            readings.append(
                ResourceReading(
                    name="exchange queue",
                    source="exchange",
                    kind="value",
                    value=queue,
                    unit="requests",
                )
            )
        readings += _event_bus(snaps, t0, t1)
        readings += _shares(snaps, t0, t1, busy)
        hits = rate_in(series(snaps, ("exchange_orderbook_cache_hits_total", ())), t0, t1)
        builds = rate_in(series(snaps, ("exchange_orderbook_rebuilds_total", ())), t0, t1)
        if hits is not None and builds is not None and hits + builds > 0:
            readings.append(
                ResourceReading(
                    name="order-book cache hit ratio",
                    source="exchange",
                    kind="value",
                    value=hits / (hits + builds),
                    unit="ratio",
                )
            )
        return Summary(readings=tuple(readings))


def _event_bus(snaps: Snapshots, t0: float, t1: float) -> list[ResourceReading]:
    """The event path's consumers (perfgate.exchange.events) and their queue, when it has any."""
    consumers = mean_in(series(snaps, ("exchange_event_consumers", ())), t0, t1)
    busy = rate_in(series(snaps, ("exchange_event_busy_seconds_total", ())), t0, t1)
    if not consumers or busy is None:
        return []
    busy = min(busy, consumers)  # counted when an event is consumed, as slot time is
    out = [
        ResourceReading(
            name=EVENT_BUS,
            source="exchange",
            kind="utilisation",
            value=busy,
            unit="consumers",
            limit=consumers,
            utilisation=busy / consumers,
        )
    ]
    pending = mean_in(series(snaps, ("exchange_events_pending", ())), t0, t1)
    if pending is not None:
        out.append(
            ResourceReading(
                name="exchange event queue", source="exchange", kind="value", value=pending,
                unit="events",
            )
        )  # fmt: skip
    return out


def _shares(snaps: Snapshots, t0: float, t1: float, busy: float) -> list[ResourceReading]:
    """Each route's (and the rebuild's) share of the pool's slot time."""
    if busy <= 0:
        return []
    out = []
    routes = {
        dict(labels).get("route", "")
        for _, snap in snaps
        for name, labels in snap
        if name == "exchange_service_seconds_total"
    }
    for route in sorted(routes):
        key = ("exchange_service_seconds_total", (("route", route),))
        used = rate_in(series(snaps, key), t0, t1)
        if used is not None:
            out.append(
                ResourceReading(
                    name=f"slot time of {route}",
                    source="exchange",
                    kind="share",
                    value=used / busy,
                    unit="share",
                    of=POOL,
                    route=route,
                )
            )
    rebuild = rate_in(series(snaps, ("exchange_orderbook_rebuild_seconds_total", ())), t0, t1)
    if rebuild is not None:
        out.append(
            ResourceReading(
                name=REBUILD,
                source="exchange",
                kind="share",
                value=rebuild / busy,
                unit="share",
                of=POOL,
                route=BOOK_ROUTE,
            )
        )
    return out


class ProcessSampler:
    """CPU and memory of one local process (the embedded exchange), through psutil.

    ``pid()`` is asked at every sample: a cross-over restarts the exchange under a new pid.
    ``cpu_limit`` is the most the process can use (an asyncio server: one core).
    """

    def __init__(self, pid: Callable[[], int | None], *, name: str, cpu_limit: float | None):
        self.pid = pid
        self.name = name
        self.label = f"the {name} process"
        self.cpu_limit = cpu_limit
        self._proc: psutil.Process | None = None

    def sample(self) -> dict[str, float]:
        pid = self.pid()
        if pid is None:
            raise Unavailable(f"{self.label} is not running")
        try:
            if self._proc is None or self._proc.pid != pid:
                self._proc = psutil.Process(pid)
            with self._proc.oneshot():
                cpu = self._proc.cpu_times()
                rss = self._proc.memory_info().rss
        except psutil.Error as exc:
            raise Unavailable(f"{self.label} (pid {pid}): {type(exc).__name__}") from exc
        return {"cpu_s": cpu.user + cpu.system, "rss": float(rss), "pid": float(pid)}

    def summarise(self, snaps: Snapshots, t0: float, t1: float) -> Summary:
        pids = {snap.get("pid") for t, snap in snaps if t0 <= t <= t1}
        if len(pids) > 1:
            return Summary(missing=(f"{self.label} restarted during this window",))
        cores = rate_in(series(snaps, "cpu_s"), t0, t1)
        rss = mean_in(series(snaps, "rss"), t0, t1)
        readings = []
        if cores is not None:
            util = cores / self.cpu_limit if self.cpu_limit else None
            readings.append(
                ResourceReading(
                    name=f"{self.name} CPU",
                    source="process",
                    kind="cpu",
                    value=cores,
                    unit="cores",
                    limit=self.cpu_limit,
                    utilisation=util,
                )
            )
        if rss is not None:
            readings.append(
                ResourceReading(
                    name=f"{self.name} memory",
                    source="process",
                    kind="memory",
                    value=rss / 2**20,
                    unit="MB",
                )
            )
        missing = () if cores is not None else (f"{self.label}: CPU not measured",)
        return Summary(readings=tuple(readings), cpu_cores=cores, missing=missing)
