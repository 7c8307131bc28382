"""The reference exchange's own telemetry, served at ``GET /metrics`` in Prometheus' text format.

What a team would instrument in a real service, so perfgate (and a Prometheus server) can say
*why* it saturated: the slot pool's use, the queue in front of it, slot time and latency per
route, the order-book cache's hits and rebuilds, and the process's CPU and memory. Counters only
grow; a scraper takes rates over its own windows. Slot time is counted when a service ends, so
``rate(exchange_slot_busy_seconds_total) / exchange_slots`` is the pool's utilisation.
"""

from __future__ import annotations

import os
import resource
import time

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Counters and gauges of one exchange process (updated on the request path: kept cheap)."""

    __slots__ = (
        "busy_s",
        "cache_hits",
        "in_flight",
        "latency_s",
        "rebuild_s",
        "rebuilds",
        "requests",
        "service_s",
        "slots",
    )

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.busy_s = 0.0  # slot time of every finished service
        self.in_flight = 0  # requests waiting for or holding a slot
        self.requests: dict[str, int] = {}  # route -> finished requests
        self.service_s: dict[str, float] = {}  # route -> slot time
        self.latency_s: dict[str, float] = {}  # route -> arrival-to-answer time
        self.rebuilds = 0  # order-book depths aggregated from the resting orders
        self.cache_hits = 0  # order-book reads answered from the cache
        self.rebuild_s = 0.0  # slot time spent rebuilding (no cache: rebuild_ms per read)

    def served(self, route: str, slot_s: float, latency_s: float) -> None:
        self.busy_s += slot_s
        self.requests[route] = self.requests.get(route, 0) + 1
        self.service_s[route] = self.service_s.get(route, 0.0) + slot_s
        self.latency_s[route] = self.latency_s.get(route, 0.0) + latency_s

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        cpu = os.times()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, as a fallback
        rss = _current_rss() or rss
        lines = [
            *_one("exchange_slots", "gauge", "Service slots of the pool.", self.slots),
            *_one(
                "exchange_slot_busy_seconds_total",
                "counter",
                "Slot time of finished services (rate / exchange_slots = utilisation).",
                self.busy_s,
            ),
            *_one(
                "exchange_requests_in_flight",
                "gauge",
                "Requests waiting for or holding a slot.",
                self.in_flight,
            ),
            *_one(
                "exchange_queue_depth",
                "gauge",
                "Requests waiting for a slot.",
                max(0, self.in_flight - self.slots),
            ),
            *_routes("exchange_requests_total", "Finished requests by route.", self.requests),
            *_routes("exchange_service_seconds_total", "Slot time by route.", self.service_s),
            *_routes(
                "exchange_request_seconds_total",
                "Arrival-to-answer time by route (queueing included).",
                self.latency_s,
            ),
            *_one(
                "exchange_orderbook_rebuilds_total",
                "counter",
                "Order-book depths aggregated from the resting orders.",
                self.rebuilds,
            ),
            *_one(
                "exchange_orderbook_cache_hits_total",
                "counter",
                "Order-book reads served from the cache.",
                self.cache_hits,
            ),
            *_one(
                "exchange_orderbook_rebuild_seconds_total",
                "counter",
                "Slot time spent rebuilding order books (reads without the cache).",
                self.rebuild_s,
            ),
            *_one(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the process.",
                cpu.user + cpu.system,
            ),
            *_one("process_resident_memory_bytes", "gauge", "Resident memory of the process.", rss),
            *_one("process_start_time_seconds", "gauge", "Start of the process.", _STARTED),
        ]
        return "\n".join(lines) + "\n"


_STARTED = time.time()


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _one(name: str, kind: str, help_text: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_num(value)}"]


def _routes(name: str, help_text: str, values: dict[str, float] | dict[str, int]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for route in sorted(values):
        label = route.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'{name}{{route="{label}"}} {_num(values[route])}')
    return out


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
