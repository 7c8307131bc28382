"""The reference exchange: perfgate's embedded default target and test server.

A small real exchange (limit orders matched by price-time priority per market, partial fills,
trades, per-account balances with reservations) behind an aiohttp JSON API, whose capacity is set
by an exact queueing model so that its saturation point is known analytically. ``book.py`` is the
pure matching engine, ``app.py`` the HTTP layer and capacity model, ``noise.py`` the optional
capacity noise, ``__main__.py`` the process entry point (``python -m perfgate.exchange``).

Capacity knobs (:class:`ExchangeConfig`; the defaults model a healthy release):

``slots`` (int, 16)
    At most this many requests are in service at once.
``service_ms`` (float, 15.2)
    Slot time every request except ``GET /health`` costs.
``cache`` (bool, true)
    Order-book read path. With the cache, ``GET /orderbook`` serves an aggregated depth that is
    reused until the book changes (and, while it changes, for at most ``cache_stale_ms``).
    Without it, every read re-aggregates the resting orders and costs ``rebuild_ms`` extra slot
    time: the database round trip the cache saves.
``rebuild_ms`` (float, 88.0)
    Extra slot time of an uncached order-book read.
``cache_stale_ms`` (float, 5.0)
    Longest a cached depth may lag a changing book.
``jitter`` (float, 0.0)
    Relative noise on each request's slot time, uniform in ``cost × (1 ± jitter)`` (mean kept).
``seed_orders`` (int, 200)
    Resting orders per market placed at start-up (half bids, half asks around a mid price) so
    books have depth.
``max_resting_orders`` (int, 5000) / ``trades_kept`` (1000) / ``orders_kept`` (10000) /
``max_accounts`` (100000)
    Memory bounds: resting orders per market (the oldest expires beyond it, releasing its
    reservation), trades kept per market, closed orders remembered for ``GET /orders/{id}``, and
    accounts (idle accounts without open orders are forgotten first).
``initial_balance`` (float, 1e12)
    What a new account holds of every asset, so load never runs dry.
``markets`` (list of BASE-QUOTE names, ["BTC-USDT", "ETH-USDT"])
``max_depth`` (int, 100)
    Largest ``depth`` a client may ask of ``GET /orderbook``.
``event_workers`` (int, 4) / ``event_ms`` (float, 0.5)
    The event path (``GET /events``, a WebSocket feed of order events and public trades,
    ``events.py``): every event passes one of ``event_workers`` consumers that each take
    ``event_ms``, so the event path delivers at most ``event_workers / event_ms`` events per
    second (defaults: 8,000/s, never the limit) independently of the request slots. A release
    with a slow consumer answers requests as fast as ever and delivers their events late.
``random_seed`` (int, 1)
    Seeds start-up orders and jitter, so runs are repeatable.
``noise_seed`` (int or null, null)
    Seeds the noise below. Null (the default): every process draws its own, as two real
    processes would — a restarted process does not repeat its predecessor's drift, and two
    releases' noise is not tied to their release. An integer makes one process's noise
    repeatable (tests).

Noise knobs (off by default; with them off the exchange is the exact model below). They model a
real machine's run-to-run and within-run capacity changes (the simulator's ``shared`` profile,
docs/verdict.md §4) and multiply the slot time of each request at the moment its service starts
(``noise.py``):

``drift_sd`` (float, 0.0) / ``drift_tau_s`` (float, 60.0)
    Per-process capacity drift: log capacity is an Ornstein–Uhlenbeck process with stationary SD
    ``drift_sd`` (0 … 1) and correlation time ``drift_tau_s`` seconds, started from its
    stationary law, so each process also starts at its own capacity (median: the nominal one).
``episode_per_s`` (float, 0.0) / ``episode_mean_s`` (float, 2.0) / ``episode_slowdown``
(float, 1.5)
    Noisy-neighbour episodes: they start as a Poisson process of rate ``episode_per_s`` (at most
    100 per second), last an exponential time of mean ``episode_mean_s`` seconds, and while one
    lasts every slot time is ``episode_slowdown`` (≥ 1) times longer. Overlapping episodes merge,
    so a share ``p = 1 − exp(−episode_per_s × episode_mean_s)`` of the time is slowed and mean
    capacity falls by ``p × (1 − 1/episode_slowdown)`` (1/20 s, 2 s, ×1.5: 9.5 % of the time,
    −3.2 %).

Ground truth. Slots are reserved first-come first-served on a virtual clock: an arriving request
takes the slot that frees earliest, its service starts at ``max(now, free_at)`` and ends
``cost`` later, and it answers when its service ends. A slot is therefore never idle while a
request waits, whatever the event loop's timer jitter, so capacity is exactly
``X_max = slots / mean_cost`` req/s, where ``mean_cost = service_ms + f_book × rebuild_ms``
without the cache (``f_book`` = share of order-book reads in the mix) and ``service_ms`` with it.
For ``N`` closed-model users with think time ``Z`` (0 for perfgate's default users), latency is
``cost`` below the knee ``N_knee = X_max × (mean_cost + Z)`` and ``N / X_max − Z`` on average past
it. With the cache every request costs the same, so p95 ≈ mean and a p95 SLO of ``L`` ms breaks at
``N* ≈ (L + Z) × slots / service_ms`` (with ``Z = 0``: ``N* ≈ L × slots / service_ms``). Without
the cache the p95 request is an order-book read, which waits like the others and then costs
``service_ms + rebuild_ms``: p95 ≈ ``N × mean_cost / slots − Z + (1 − f_book) × rebuild_ms``, and
the random mix makes queues form a little before the knee, so the break comes ~10 % earlier than
this formula says.

Worked example (the defaults; scenarios/exchange.yaml: half order-book reads, no think time, p95
SLO 500 ms): with the cache, X_max = 16 / 15.2 ms ≈ 1,053 req/s and N* ≈ 500 × 16 / 15.2 ≈ 526
users. Without it, mean_cost = 15.2 + 0.5 × 88 = 59.2 ms, X_max ≈ 270 req/s, and the formula gives
N* ≈ (500 − 44) × 16 / 59.2 ≈ 123; a discrete-event simulation of the mix puts the break at ≈ 114.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perfgate.exchange.book import split_market

if TYPE_CHECKING:
    from perfgate.exchange.app import create_app, serve

__all__ = ["ConfigError", "ExchangeConfig", "create_app", "serve"]


class ConfigError(ValueError):
    """An exchange option is unknown or invalid; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeConfig:
    """Capacity knobs and memory bounds of the reference exchange (see the module docstring)."""

    slots: int = 16
    service_ms: float = 15.2
    cache: bool = True
    rebuild_ms: float = 88.0
    cache_stale_ms: float = 5.0
    jitter: float = 0.0
    seed_orders: int = 200
    max_resting_orders: int = 5000
    trades_kept: int = 1000
    orders_kept: int = 10_000
    max_accounts: int = 100_000
    initial_balance: float = 1e12
    markets: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")
    max_depth: int = 100
    event_workers: int = 4
    event_ms: float = 0.5
    random_seed: int = 1
    drift_sd: float = 0.0
    drift_tau_s: float = 60.0
    episode_per_s: float = 0.0
    episode_mean_s: float = 2.0
    episode_slowdown: float = 1.5
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        _at_least("slots", self.slots, 1)
        _at_least("service_ms", self.service_ms, 0)
        _at_least("rebuild_ms", self.rebuild_ms, 0)
        _at_least("cache_stale_ms", self.cache_stale_ms, 0)
        if not 0 <= self.jitter <= 1:
            raise ConfigError("jitter", f"must be between 0 and 1, got {self.jitter}")
        _at_least("seed_orders", self.seed_orders, 0)
        _at_least("max_resting_orders", self.max_resting_orders, 1)
        _at_least("trades_kept", self.trades_kept, 1)
        _at_least("orders_kept", self.orders_kept, 1)
        _at_least("max_accounts", self.max_accounts, 1)
        if not 0 < self.initial_balance <= 1e15:
            raise ConfigError(
                "initial_balance", f"must be > 0 and <= 1e15, got {self.initial_balance}"
            )
        _at_least("max_depth", self.max_depth, 1)
        _at_least("event_workers", self.event_workers, 1)
        _at_least("event_ms", self.event_ms, 0)
        if not 0 <= self.drift_sd <= 1:
            raise ConfigError("drift_sd", f"must be between 0 and 1, got {self.drift_sd}")
        _at_least("drift_tau_s", self.drift_tau_s, 0.001)
        _at_least("episode_per_s", self.episode_per_s, 0)
        _at_least("episode_mean_s", self.episode_mean_s, 0.001)
        _at_least("episode_slowdown", self.episode_slowdown, 1)
        if not self.markets:
            raise ConfigError("markets", "must name at least one market")
        if len(set(self.markets)) != len(self.markets):
            raise ConfigError("markets", "has duplicates")
        for market in self.markets:
            try:
                split_market(market)
            except ValueError as exc:
                raise ConfigError("markets", str(exc)) from exc
        if self.seed_orders > self.max_resting_orders:
            raise ConfigError("seed_orders", "must not exceed max_resting_orders")
        # Upper bounds: a typo like 1e11 slots would otherwise crash the child (MemoryError)
        # or seed forever, and show up as an infrastructure failure instead of bad input.
        for name, high in _MAXIMA.items():
            value = len(self.markets) if name == "markets" else getattr(self, name)
            if value > high:
                raise ConfigError(name, f"must be <= {high:g}, got {value}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExchangeConfig:
        """Build from a scenario's ``staging.embedded`` mapping; unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise ConfigError("(options)", f"must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(str(key), f"unknown option (known: {', '.join(sorted(known))})")
        values = dict(data)
        markets = values.get("markets")
        if isinstance(markets, list):
            values["markets"] = tuple(markets)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options; ``from_dict(to_dict())`` round-trips."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["markets"] = list(self.markets)
        return out

    def capacity_rps(self, book_share: float = 0.0) -> float:
        """Analytical capacity in req/s for a mix with ``book_share`` order-book reads."""
        cost_ms = self.service_ms + (0.0 if self.cache else book_share * self.rebuild_ms)
        return float("inf") if cost_ms == 0 else self.slots * 1000.0 / cost_ms


_MAXIMA: dict[str, float] = {
    "slots": 100_000,
    "service_ms": 60_000,
    "rebuild_ms": 60_000,
    "cache_stale_ms": 3_600_000,
    "seed_orders": 100_000,
    "max_resting_orders": 10_000_000,
    "trades_kept": 10_000_000,
    "orders_kept": 10_000_000,
    "max_accounts": 10_000_000,
    "max_depth": 100_000,
    "event_workers": 100_000,
    "event_ms": 60_000,
    "markets": 100,
    "random_seed": 2**63,
    "drift_tau_s": 86_400,
    "episode_per_s": 100,  # each start costs a few RNG draws on the request path
    "episode_mean_s": 86_400,
    "episode_slowdown": 1_000,
}

_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v == v,
    "bool": lambda v: isinstance(v, bool),
    "tuple[str, ...]": lambda v: isinstance(v, tuple) and all(isinstance(m, str) for m in v),
}
_WORDS = {
    "int": "an integer",
    "int | None": "an integer or null",
    "float": "a number",
    "bool": "true or false",
    "tuple[str, ...]": "a list of market names",
}


def _check_type(name: str, type_name: Any, value: Any) -> None:
    check = _CHECKS[str(type_name)]
    if not check(value):
        raise ConfigError(name, f"must be {_WORDS[str(type_name)]}, got {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if value < low or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"must be >= {low} and finite, got {value}")


def __getattr__(name: str) -> Any:
    # The HTTP layer needs aiohttp; import it only when asked, so validating options is cheap.
    if name in ("create_app", "serve"):
        from perfgate.exchange import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
