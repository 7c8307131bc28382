"""The reference exchange: matching engine, options, HTTP API, entry point, capacity model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from perfgate.exchange import ConfigError, ExchangeConfig
from perfgate.exchange.app import CapacityModel
from perfgate.exchange.book import (
    Exchange,
    InsufficientBalance,
    InvalidOrder,
    OrderClosed,
    UnknownMarket,
    UnknownOrder,
)
from perfgate.exchange.noise import CapacityNoise
from perfgate.staging.embedded import run_exchange

ROOT = Path(__file__).resolve().parent.parent
BTC = "BTC-USDT"
INITIAL = 1_000_000.0


def _exchange(**kw: object) -> Exchange:
    args: dict[str, object] = {"markets": (BTC, "ETH-USDT"), "initial_balance": INITIAL}
    args.update(kw)
    return Exchange(**args)  # type: ignore[arg-type]


def _avail(ex: Exchange, account: str, asset: str) -> float:
    return ex.balances(account)[asset]["available"]


def _reserved(ex: Exchange, account: str, asset: str) -> float:
    return ex.balances(account)[asset]["reserved"]


# -- matching engine -----------------------------------------------------------------------------


def test_price_then_time_priority() -> None:
    ex = _exchange()
    first = ex.place("a", BTC, "sell", 101, 1).order
    second = ex.place("b", BTC, "sell", 101, 1).order
    better = ex.place("c", BTC, "sell", 100, 1).order
    result = ex.place("taker", BTC, "buy", 101, 2.5)
    assert [(t.sell_order, t.price, t.quantity) for t in result.trades] == [
        (better.id, 10_000, 100_000_000),
        (first.id, 10_100, 100_000_000),
        (second.id, 10_100, 50_000_000),
    ]
    assert result.order.status == "filled"
    assert ex.get_order(first.id).status == "filled"
    assert ex.get_order(second.id).status == "partially_filled"
    assert ex.get_order(second.id).to_json()["remaining"] == 0.5


def test_sell_taker_hits_highest_bid_first() -> None:
    ex = _exchange()
    low = ex.place("a", BTC, "buy", 99, 1).order
    high = ex.place("b", BTC, "buy", 100, 1).order
    trades = ex.place("s", BTC, "sell", 98, 1.5).trades
    assert [t.buy_order for t in trades] == [high.id, low.id]
    assert [t.price for t in trades] == [10_000, 9_900]  # at the makers' prices
    assert all(t.taker_side == "sell" for t in trades)


def test_non_crossing_orders_rest_and_remainder_rests() -> None:
    ex = _exchange()
    ex.place("a", BTC, "sell", 101, 1)
    bid = ex.place("b", BTC, "buy", 100, 1).order
    assert bid.status == "open" and not ex.book(BTC).trades
    partial = ex.place("c", BTC, "buy", 102, 3).order
    assert partial.status == "partially_filled"
    depth = ex.depth(BTC, 10)
    assert depth.bids == ((102.0, 2.0), (100.0, 1.0))
    assert depth.asks == ()


def test_depth_aggregates_levels_best_first_and_limits() -> None:
    ex = _exchange()
    for price, qty in ((100, 1), (100, 2), (99, 0.5), (98, 1), (97, 1)):
        ex.place("mm", BTC, "buy", price, qty)
    for price in (105, 103, 104):
        ex.place("mm", BTC, "sell", price, 0.25)
    depth = ex.depth(BTC, 2)
    assert depth.bids == ((100.0, 3.0), (99.0, 0.5))
    assert depth.asks == ((103.0, 0.25), (104.0, 0.25))
    assert depth.to_json()["bids"] == [[100.0, 3.0], [99.0, 0.5]]


def test_buyer_reserves_at_limit_and_is_refunded_price_improvement() -> None:
    ex = _exchange()
    ex.place("seller", BTC, "sell", 100, 1)
    assert _reserved(ex, "seller", "BTC") == 1.0
    assert _avail(ex, "seller", "BTC") == INITIAL - 1
    ex.place("buyer", BTC, "buy", 110, 2)  # 1 fills at 100, 1 rests at 110
    assert _avail(ex, "buyer", "USDT") == INITIAL - 100 - 110
    assert _reserved(ex, "buyer", "USDT") == 110
    assert _avail(ex, "buyer", "BTC") == INITIAL + 1
    assert _avail(ex, "seller", "USDT") == INITIAL + 100
    assert _reserved(ex, "seller", "BTC") == 0


def test_cancel_releases_reservation_once() -> None:
    ex = _exchange()
    order = ex.place("u", BTC, "buy", 100, 2).order
    assert _reserved(ex, "u", "USDT") == 200
    cancelled = ex.cancel(order.id)
    assert cancelled.status == "cancelled"
    assert _reserved(ex, "u", "USDT") == 0
    assert _avail(ex, "u", "USDT") == INITIAL
    assert ex.depth(BTC, 5).bids == ()
    with pytest.raises(OrderClosed, match="already cancelled"):
        ex.cancel(order.id)
    filled = ex.place("v", BTC, "sell", 100, 1).order
    ex.place("w", BTC, "buy", 100, 1)
    with pytest.raises(OrderClosed, match="already filled"):
        ex.cancel(filled.id)
    with pytest.raises(UnknownOrder):
        ex.cancel("nope")


def test_insufficient_balance_is_refused_without_side_effects() -> None:
    ex = _exchange(initial_balance=100.0)
    with pytest.raises(InsufficientBalance, match="USDT"):
        ex.place("u", BTC, "buy", 60, 2)
    with pytest.raises(InsufficientBalance, match="BTC"):
        ex.place("u", BTC, "sell", 1, 101)
    assert _avail(ex, "u", "USDT") == 100 and _reserved(ex, "u", "USDT") == 0
    assert ex.open_order_count == 0


@pytest.mark.parametrize(
    ("price", "quantity", "side", "message"),
    [
        (100.001, 1, "buy", "multiple of 0.01"),
        (0, 1, "buy", "price must be > 0"),
        (-5, 1, "buy", "price must be > 0"),
        (True, 1, "buy", "price must be a number"),
        ("abc", 1, "buy", "price must be a number"),
        ("NaN", 1, "buy", "finite"),
        (None, 1, "buy", "price must be a number"),
        (100, 0.000000001, "buy", "multiple of 1E-8"),
        (100, 0, "buy", "quantity must be > 0"),
        (100, 1e7, "buy", "quantity must be > 0"),
        (100, 1, "hold", "side must be"),
    ],
)
def test_invalid_orders(price: object, quantity: object, side: str, message: str) -> None:
    ex = _exchange()
    with pytest.raises(InvalidOrder, match=message):
        ex.place("u", BTC, side, price, quantity)


def test_numeric_strings_are_accepted_and_bad_account_or_market_refused() -> None:
    ex = _exchange()
    order = ex.place("u", BTC, "buy", "30000.5", "0.010").order
    assert (order.price, order.quantity) == (3_000_050, 1_000_000)
    with pytest.raises(InvalidOrder, match="account"):
        ex.place("", BTC, "buy", 1, 1)
    with pytest.raises(InvalidOrder, match="account"):
        ex.place("x" * 65, BTC, "buy", 1, 1)
    with pytest.raises(UnknownMarket):
        ex.place("u", "DOGE-USDT", "buy", 1, 1)


def test_random_trading_conserves_every_asset() -> None:
    ex = _exchange(max_resting_orders=50)
    rng = random.Random(7)
    accounts = [f"u{i}" for i in range(6)]
    for _ in range(3000):
        account = rng.choice(accounts)
        if rng.random() < 0.15 and ex.open_order_count:
            order_id = rng.choice(list(ex.book(BTC).resting) or ["0"])
            with contextlib.suppress(UnknownOrder, OrderClosed):
                ex.cancel(order_id)
            continue
        side = rng.choice(("buy", "sell"))
        ex.place(account, BTC, side, round(rng.uniform(95, 105), 2), round(rng.uniform(0.01, 2), 4))
    for asset in ("BTC", "USDT", "ETH"):
        assert ex.total_units(asset) == len(accounts) * int(INITIAL * 1e10)
    # Reservations equal what the resting orders still need.
    need_usdt = sum(o.price * o.remaining for o in ex.book(BTC).resting.values() if o.side == "buy")
    held_usdt = sum(a.reserved["USDT"] for a in ex._accounts.values())
    assert held_usdt == need_usdt
    book = ex.book(BTC)
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert best_bid is None or best_ask is None or best_bid < best_ask  # never left crossed


def test_resting_orders_are_capped_oldest_expires_and_releases() -> None:
    ex = _exchange(max_resting_orders=3)
    orders = [ex.place("u", BTC, "buy", 100 - i, 1).order for i in range(5)]
    assert len(ex.book(BTC).resting) == 3
    assert [o.status for o in orders] == ["expired", "expired", "open", "open", "open"]
    assert _reserved(ex, "u", "USDT") == 98 + 97 + 96
    assert [p for p, _ in ex.depth(BTC, 10).bids] == [98.0, 97.0, 96.0]


def test_trades_closed_orders_and_accounts_are_bounded() -> None:
    ex = _exchange(trades_kept=5, orders_kept=4, max_accounts=10)
    for _ in range(10):
        ex.place("mm", BTC, "sell", 100, 1)
        ex.place("t", BTC, "buy", 100, 1)
    assert len(ex.book(BTC).trades) == 5
    newest = ex.recent_trades(BTC, 3)
    assert [t.id for t in newest] == [10, 9, 8]
    assert len(ex._closed) == 4
    with pytest.raises(UnknownOrder):
        ex.get_order("1")  # forgotten
    holder = ex.place("holder", BTC, "buy", 1, 1).order  # keeps an open order
    for i in range(50):
        ex.balances(f"visitor{i}")
    assert ex.account_count <= 10
    assert ex.get_order(holder.id).status == "open"
    assert _reserved(ex, "holder", "USDT") == 1  # never forgotten while it has open orders


def test_seed_builds_a_non_crossing_book() -> None:
    ex = _exchange()
    ex.seed(100, random.Random(3))
    for market in (BTC, "ETH-USDT"):
        book = ex.book(market)
        assert len(book.resting) == 100
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None and bid < ask
        assert not book.trades


# -- options -------------------------------------------------------------------------------------


def test_config_defaults_round_trip_and_capacity() -> None:
    config = ExchangeConfig()
    assert config.cache is True
    assert ExchangeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    tuned = ExchangeConfig.from_dict({"slots": 4, "service_ms": 10, "markets": ["BTC-USDT"]})
    assert tuned.markets == ("BTC-USDT",)
    assert tuned.capacity_rps() == pytest.approx(400.0)
    nocache = ExchangeConfig(slots=4, service_ms=10, cache=False, rebuild_ms=40)
    assert nocache.capacity_rps(book_share=0.5) == pytest.approx(4000 / 30)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"slot": 4}, "slot", "unknown option"),
        ({"slots": 0}, "slots", ">= 1"),
        ({"slots": 2.5}, "slots", "integer"),
        ({"slots": True}, "slots", "integer"),
        ({"service_ms": -1}, "service_ms", ">= 0"),
        ({"service_ms": "10"}, "service_ms", "number"),
        ({"cache": "yes"}, "cache", "true or false"),
        ({"jitter": 1.5}, "jitter", "between 0 and 1"),
        ({"markets": ["BTCUSDT"]}, "markets", "BASE-QUOTE"),
        ({"markets": []}, "markets", "at least one"),
        ({"markets": ["BTC-USDT", "BTC-USDT"]}, "markets", "duplicates"),
        ({"seed_orders": 10, "max_resting_orders": 5}, "seed_orders", "max_resting_orders"),
        ({"rebuild_ms": float("inf")}, "rebuild_ms", "finite"),
        ({"drift_sd": 1.5}, "drift_sd", "between 0 and 1"),
        ({"drift_tau_s": 0}, "drift_tau_s", ">= 0.001"),
        ({"episode_per_s": -0.1}, "episode_per_s", ">= 0"),
        ({"episode_per_s": 1000}, "episode_per_s", "<= 100"),
        ({"episode_mean_s": 0}, "episode_mean_s", ">= 0.001"),
        ({"episode_slowdown": 0.5}, "episode_slowdown", ">= 1"),
        ({"episode_slowdown": "2"}, "episode_slowdown", "number"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ExchangeConfig.from_dict(options)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


# -- capacity model (pure) -----------------------------------------------------------------------


def test_capacity_model_is_a_virtual_fifo() -> None:
    model = CapacityModel(2)
    ends = [model.reserve(0.0, 0.010) for _ in range(5)]
    assert ends == pytest.approx([0.010, 0.010, 0.020, 0.020, 0.030])
    assert model.reserve(0.100, 0.010) == pytest.approx(0.110)  # idle slots: starts at arrival
    assert model.reserve(0.100, 0.010) == pytest.approx(0.110)
    assert model.reserve(0.100, 0.010) == pytest.approx(0.120)  # both busy until 0.110


def test_capacity_model_jitter_keeps_the_mean() -> None:
    model = CapacityModel(1, jitter=0.5, rng=random.Random(5))
    end = 0.0
    costs = []
    for _ in range(4000):
        new_end = model.reserve(0.0, 0.010)
        costs.append(new_end - end)
        end = new_end
    assert min(costs) >= 0.005 - 1e-12 and max(costs) <= 0.015 + 1e-12
    assert sum(costs) / len(costs) == pytest.approx(0.010, rel=0.02)


# -- capacity noise (pure) ----------------------------------------------------------------------


def test_noise_is_off_by_default_and_the_model_unchanged() -> None:
    assert CapacityNoise.from_config(ExchangeConfig()) is None
    # Shape knobs alone, or a slowdown of 1, add no noise.
    quiet = {"drift_tau_s": 5.0, "episode_mean_s": 9.0, "episode_slowdown": 3.0}
    assert CapacityNoise.from_config(ExchangeConfig.from_dict(quiet)) is None
    unit = {"episode_per_s": 1.0, "episode_slowdown": 1.0}
    assert CapacityNoise.from_config(ExchangeConfig.from_dict(unit)) is None
    defaults = ExchangeConfig().to_dict()
    assert (defaults["drift_sd"], defaults["episode_per_s"]) == (0.0, 0.0)


def _log_factors(noise: CapacityNoise, times: list[float]) -> list[float]:
    return [math.log(noise.factor(t)) for t in times]


def test_drift_has_its_sd_and_correlation_time_and_is_per_process() -> None:
    knobs = {"drift_sd": 0.03, "drift_tau_s": 10.0}
    noise = CapacityNoise.from_config(ExchangeConfig.from_dict({**knobs, "noise_seed": 3}))
    assert noise is not None
    times = [float(t) for t in range(40_000)]
    xs = _log_factors(noise, times)
    assert statistics.pstdev(xs) == pytest.approx(0.03, rel=0.1)
    lag = 10  # one correlation time: exp(-1) ≈ 0.37
    assert statistics.correlation(xs[:-lag], xs[lag:]) == pytest.approx(math.exp(-1), abs=0.08)
    # Another seed is another process: an independent path; the same seed repeats it.
    other = CapacityNoise.from_config(ExchangeConfig.from_dict({**knobs, "noise_seed": 4}))
    same = CapacityNoise.from_config(ExchangeConfig.from_dict({**knobs, "noise_seed": 3}))
    assert other is not None and same is not None
    assert abs(statistics.correlation(xs, _log_factors(other, times))) < 0.1
    assert _log_factors(same, times) == xs


def test_episodes_cover_their_share_of_time_with_their_slowdown() -> None:
    knobs = {"episode_per_s": 0.05, "episode_mean_s": 2.0, "episode_slowdown": 1.5}
    noise = CapacityNoise.from_config(ExchangeConfig.from_dict(knobs))
    assert noise is not None
    times = [t * 0.25 for t in range(800_000)]  # 200,000 s: about 10,000 episodes
    factors = [noise.factor(t) for t in times]
    assert set(factors) == {1.0, 1.5}  # no drift: nominal, or slowed by exactly the knob
    share = factors.count(1.5) / len(factors)
    assert share == pytest.approx(1 - math.exp(-0.05 * 2.0), rel=0.08)  # ≈ 9.5 %
    assert noise.in_episode(times[-1]) == (factors[-1] == 1.5)


def test_capacity_model_scales_slot_time_by_the_noise_at_service_start() -> None:
    forced = {"episode_per_s": 100.0, "episode_mean_s": 3600.0, "episode_slowdown": 2.0}
    noise = CapacityNoise.from_config(ExchangeConfig.from_dict(forced))
    model = CapacityModel(1, noise=noise)
    model.reserve(0.0, 0.010)  # the first episode starts within ~10 ms and lasts an hour
    assert noise is not None and noise.in_episode(1.0)
    assert model.reserve(1.0, 0.010) == pytest.approx(1.020)
    assert model.reserve(1.0, 0.010) == pytest.approx(1.040)  # queued: starts at 1.020


# -- HTTP API (the real process) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    config = ExchangeConfig(
        service_ms=0,
        seed_orders=0,
        initial_balance=1000.0,
        markets=("BTC-USDT", "ETH-USDT", "SOL-USDT"),
        cache_stale_ms=0,
        trades_kept=20,
    )
    with run_exchange(config) as running:
        yield running.url


def test_health_reports_config(api: str) -> None:
    answer = httpx.get(f"{api}/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["config"]["markets"] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    assert body["config"]["service_ms"] == 0


def test_place_match_get_and_trades_over_http(api: str) -> None:
    with httpx.Client(base_url=api) as client:
        maker = client.post(
            "/orders",
            json={"account": "m1", "market": BTC, "side": "sell", "price": 100.5, "quantity": 2},
        )
        assert maker.status_code == 201
        assert maker.json()["status"] == "open" and maker.json()["trades"] == []
        taker = client.post(
            "/orders",
            json={"account": "t1", "market": BTC, "side": "buy", "price": "101", "quantity": 0.5},
        )
        assert taker.status_code == 201
        body = taker.json()
        assert body["status"] == "filled" and body["filled"] == 0.5
        assert body["trades"][0]["price"] == 100.5
        assert body["trades"][0]["sell_order"] == maker.json()["id"]
        got = client.get(f"/orders/{maker.json()['id']}").json()
        assert got["status"] == "partially_filled" and got["remaining"] == 1.5
        trades = client.get(f"/trades/{BTC}", params={"limit": 1}).json()["trades"]
        assert [t["id"] for t in trades] == [body["trades"][0]["id"]]
        balances = client.get("/balances/t1").json()["balances"]
        assert balances["USDT"]["available"] == pytest.approx(1000 - 50.25)
        assert balances["BTC"]["available"] == 1000.5


def test_cancel_over_http(api: str) -> None:
    with httpx.Client(base_url=api) as client:
        order = client.post(
            "/orders",
            json={"account": "c1", "market": "ETH-USDT", "side": "buy", "price": 10, "quantity": 3},
        ).json()
        assert client.get("/balances/c1").json()["balances"]["USDT"]["reserved"] == 30
        first = client.delete(f"/orders/{order['id']}")
        assert first.status_code == 200 and first.json()["status"] == "cancelled"
        assert client.get("/balances/c1").json()["balances"]["USDT"]["reserved"] == 0
        again = client.delete(f"/orders/{order['id']}")
        assert again.status_code == 409 and "already cancelled" in again.json()["error"]
        assert client.delete("/orders/999999").status_code == 404
        assert client.get("/orders/999999").status_code == 404


def test_orderbook_depth_over_http_follows_changes(api: str) -> None:
    with httpx.Client(base_url=api) as client:
        empty = client.get("/orderbook/SOL-USDT").json()
        assert empty["bids"] == [] and empty["asks"] == []
        for price in (10, 10, 9.5):
            client.post(
                "/orders",
                json={
                    "account": "b",
                    "market": "SOL-USDT",
                    "side": "buy",
                    "price": price,
                    "quantity": 1,
                },
            )
        depth = client.get("/orderbook/SOL-USDT", params={"depth": 1}).json()
        assert depth["bids"] == [[10.0, 2.0]]
        full = client.get("/orderbook/SOL-USDT").json()
        assert full["bids"] == [[10.0, 2.0], [9.5, 1.0]]


def _order(**changes: object) -> dict[str, object]:
    order: dict[str, object] = {
        "account": "x",
        "market": BTC,
        "side": "buy",
        "price": 1,
        "quantity": 1,
    }
    order.update(changes)
    return {k: v for k, v in order.items() if v is not None}


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "message"),
    [
        ("POST", "/orders", b"not json", 400, "JSON object"),
        ("POST", "/orders", b"[1, 2]", 400, "JSON object"),
        ("POST", "/orders", _order(quantity=None), 400, "missing field 'quantity'"),
        ("POST", "/orders", _order(side="up"), 400, "side"),
        ("POST", "/orders", _order(price=-1), 400, "price"),
        ("POST", "/orders", _order(market="NOPE-USDT"), 404, "unknown market"),
        ("POST", "/orders", _order(price=1000, quantity=2), 400, "insufficient USDT"),
        ("GET", "/orderbook/NOPE-USDT", None, 404, "unknown market"),
        ("GET", "/orderbook/BTC-USDT?depth=0", None, 400, "depth"),
        ("GET", "/orderbook/BTC-USDT?depth=abc", None, 400, "depth"),
        ("GET", "/trades/NOPE-USDT", None, 404, "unknown market"),
        ("GET", "/trades/BTC-USDT?limit=100000", None, 400, "limit"),
    ],
)
def test_http_errors(
    api: str, method: str, path: str, payload: object, status: int, message: str
) -> None:
    if isinstance(payload, bytes):
        answer = httpx.request(method, f"{api}{path}", content=payload)
    else:
        answer = httpx.request(method, f"{api}{path}", json=payload)
    assert answer.status_code == status
    assert message in answer.json()["error"]


# -- process entry point -------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_main_rejects_bad_options_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "perfgate.exchange", "--port", "0", "--config-json", '{"slots": 0}'],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: option slots: must be >= 1 and finite, got 0"
    ]
    bad_json = subprocess.run(
        [sys.executable, "-m", "perfgate.exchange", "--port", "0", "--config-json", "{"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert bad_json.returncode == 2 and bad_json.stderr.startswith("error: --config-json")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_main_announces_then_exits_cleanly_on_signal(signum: int) -> None:
    cmd = [sys.executable, "-m", "perfgate.exchange", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--config-json", '{"seed_orders": 0}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["event"] == "listening"
        assert line["url"].startswith("http://127.0.0.1:")
        assert httpx.get(f"{line['url']}/health").status_code == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_exchange_exits_when_its_parent_dies() -> None:
    # The parent starts the exchange with --exit-with-parent, reports its pid, and dies abruptly.
    script = (
        "import subprocess, sys, os\n"
        "p = subprocess.Popen([sys.executable, '-m', 'perfgate.exchange', '--port', '0',"
        " '--config-json', '{\"seed_orders\": 0}', '--exit-with-parent'],"
        " stdout=subprocess.PIPE, start_new_session=True)\n"
        "p.stdout.readline()\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=_env()
    )
    child = int(done.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- the queueing model, end to end ----------------------------------------------------------------


async def _closed_loop(
    url: str, users: int, warmup_s: float, window_s: float
) -> tuple[float, float]:
    """``users`` clients with no think time; (throughput req/s, mean latency ms) in the window."""
    done: list[tuple[float, float]] = []
    stop_at = time.perf_counter() + warmup_s + window_s + 0.2
    connector = aiohttp.TCPConnector(limit=users)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def user() -> None:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                async with session.get(f"{url}/balances/load") as answer:
                    await answer.read()
                    assert answer.status == 200
                received = time.perf_counter()
                done.append((received, received - sent))

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(users)))
    t0 = started + warmup_s
    t1 = t0 + window_s
    window = [lat for at, lat in done if t0 <= at < t1]
    return len(window) / window_s, 1000 * sum(window) / len(window)


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    with run_exchange(ExchangeConfig(slots=4, service_ms=10, seed_orders=0)) as running:
        yield running.url


def test_queueing_model_past_the_knee_is_exact(model_url: str) -> None:
    # 6× the slots: a queue of 20 requests (50 ms of work) rides out short stalls of the client,
    # so a slot is never idle and throughput = slots / service_ms exactly.
    users = 24
    throughput, mean_ms = asyncio.run(_closed_loop(model_url, users, 0.5, 2.5))
    print(f"N={users}: {throughput:.1f} req/s (theory 400), mean {mean_ms:.1f} ms (theory 60)")
    assert throughput == pytest.approx(400, rel=0.05)
    assert mean_ms == pytest.approx(users * 10 / 4, rel=0.10)


def test_queueing_model_below_the_knee_serves_at_service_time(model_url: str) -> None:
    users = 2
    throughput, mean_ms = asyncio.run(_closed_loop(model_url, users, 0.3, 1.5))
    print(f"N={users}: {throughput:.1f} req/s, mean {mean_ms:.1f} ms (theory ≥ 10)")
    assert 10 <= mean_ms <= 16  # service time plus timer overshoot and loopback
    assert throughput == pytest.approx(users * 1000 / mean_ms, rel=0.10)


def test_orderbook_reads_are_slower_without_cache() -> None:
    knobs = {"slots": 4, "service_ms": 2.0, "rebuild_ms": 30.0, "seed_orders": 50}

    def read_ms(cache: bool) -> tuple[float, list[object]]:
        config = ExchangeConfig.from_dict({**knobs, "cache": cache})
        with run_exchange(config) as running, httpx.Client(base_url=running.url) as client:
            client.get("/orderbook/BTC-USDT")  # connection set up outside the timing
            took = []
            bodies = []
            for _ in range(10):
                sent = time.perf_counter()
                answer = client.get("/orderbook/BTC-USDT")
                took.append(time.perf_counter() - sent)
                bodies.append(answer.json())
            return 1000 * sum(took) / len(took), bodies

    cached_ms, cached = read_ms(True)
    rebuilt_ms, rebuilt = read_ms(False)
    print(f"order book read: cached {cached_ms:.1f} ms, rebuilt {rebuilt_ms:.1f} ms")
    assert cached == rebuilt  # same seeded book, same depth either way
    assert len(cached[0]["bids"]) == 20  # type: ignore[index]
    # the 30 ms rebuild shows in every uncached read (no absolute bound on the cached read:
    # on a busy machine loopback alone can take several milliseconds)
    assert rebuilt_ms >= cached_ms + 25


# -- capacity noise, end to end --------------------------------------------------------------------

_SMALL = {"slots": 4, "service_ms": 10.0, "seed_orders": 0}  # 400 req/s


def _throughput(options: dict[str, object]) -> float:
    with run_exchange(ExchangeConfig.from_dict({**_SMALL, **options})) as running:
        throughput, _ = asyncio.run(_closed_loop(running.url, 24, 0.5, 2.0))
    return throughput


def test_a_forced_episode_halves_throughput_and_noise_off_changes_nothing() -> None:
    # An episode a few ms after start-up that lasts an hour: the whole measurement is slowed.
    forced = {"episode_per_s": 100.0, "episode_mean_s": 3600.0, "episode_slowdown": 2.0}
    slowed = _throughput(forced)
    # The shape knobs without a drift SD or an episode rate: the exact model.
    off = _throughput({"drift_tau_s": 5.0, "episode_mean_s": 9.0, "episode_slowdown": 3.0})
    print(f"forced episode ×2: {slowed:.1f} req/s (theory 200); noise off: {off:.1f} (400)")
    assert slowed == pytest.approx(200, rel=0.05)
    assert off == pytest.approx(400, rel=0.05)


def test_drift_gives_each_process_its_own_capacity() -> None:
    # A slow drift (1 h) with a large SD: each process serves at its own start-up capacity,
    # which its noise seed fixes (seed 2: slot time × 1.30, seed 8: × 0.76).
    knobs = {"drift_sd": 0.3, "drift_tau_s": 3600.0}
    for seed in (2, 8):
        config = ExchangeConfig.from_dict({**_SMALL, **knobs, "noise_seed": seed})
        noise = CapacityNoise.from_config(config)
        assert noise is not None
        expected = 400 / noise.factor(0.0)
        measured = _throughput({**knobs, "noise_seed": seed})
        print(f"seed {seed}: {measured:.1f} req/s (expected {expected:.1f})")
        assert measured == pytest.approx(expected, rel=0.05)


def test_without_a_noise_seed_every_process_draws_its_own_noise() -> None:
    # a restarted process must not replay its predecessor's drift (the gate's cross-over
    # restarts both builds' exchanges), and two releases' noise is not tied to their release
    config = ExchangeConfig.from_dict({"drift_sd": 0.3, "drift_tau_s": 3600.0})
    a, b = CapacityNoise.from_config(config), CapacityNoise.from_config(config)
    assert a is not None and b is not None
    assert a.factor(0.0) != b.factor(0.0)
