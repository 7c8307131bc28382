"""The reference exchange's matching engine: price-time-priority limit order books and balances.

Pure Python, no I/O and no aiohttp, so it is unit-tested directly. Amounts are exact integers:
prices in ticks of ``PRICE_TICK`` (0.01 quote), quantities in lots of ``LOT`` (1e-8 base) and
balances of every asset in units of ``UNIT`` (1e-10), so a fill of ``q`` lots at ``p`` ticks costs
exactly ``p * q`` quote units and delivers ``q * LOT_UNITS`` base units.

Memory stays bounded under hours of load: each market keeps at most ``max_resting_orders``
resting orders (the oldest is expired, its reservation released, when one more arrives), the last
``trades_kept`` trades, and the exchange remembers the last ``orders_kept`` closed orders and about
``max_accounts`` accounts (idle accounts without open orders are forgotten first).
"""

from __future__ import annotations

import bisect
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Side = Literal["buy", "sell"]
Status = Literal["open", "partially_filled", "filled", "cancelled", "expired"]

PRICE_TICK = Decimal("0.01")
LOT = Decimal("0.00000001")
UNIT = Decimal("0.0000000001")  # so that one tick × one lot = (1e-2 × 1e-8) quote = one unit
LOT_UNITS = 100  # one lot of base (1e-8) = 100 units (1e-10)
MAX_PRICE = Decimal("1000000000")
MAX_QUANTITY = Decimal("1000000")
MAX_ACCOUNT_LEN = 64
_EVICT_SCAN = 64  # how many of the oldest accounts to look at for an idle one to forget

# Reference mid prices for seeding books; markets not listed seed around 100.
MID_PRICES: dict[str, float] = {"BTC": 30000.0, "ETH": 2000.0, "SOL": 150.0, "XRP": 0.5}
DEFAULT_MID = 100.0
MARKET_MAKER = "market-maker"

_OPEN: frozenset[str] = frozenset({"open", "partially_filled"})


class BookError(ValueError):
    """A request the exchange refuses; ``http_status`` says how the HTTP layer answers."""

    http_status = 400


class InvalidOrder(BookError):
    """The order's fields are missing or out of range."""


class InsufficientBalance(BookError):
    """The account cannot cover the order's reservation."""


class UnknownMarket(BookError):
    http_status = 404


class UnknownOrder(BookError):
    http_status = 404


class OrderClosed(BookError):
    """The order is already filled, cancelled or expired."""

    http_status = 409


@dataclass(slots=True)
class Order:
    """A limit order; mutable engine state, never shared outside the engine thread."""

    id: str
    seq: int
    account: str
    market: str
    side: Side
    price: int  # ticks
    quantity: int  # lots
    created_s: float
    filled: int = 0  # lots
    status: Status = "open"

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "market": self.market,
            "side": self.side,
            "price": ticks_to_price(self.price),
            "quantity": lots_to_quantity(self.quantity),
            "filled": lots_to_quantity(self.filled),
            "remaining": lots_to_quantity(self.remaining),
            "status": self.status,
            "created_s": self.created_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    id: int
    market: str
    price: int  # ticks (the maker's price)
    quantity: int  # lots
    buy_order: str
    sell_order: str
    taker_side: Side
    ts_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "market": self.market,
            "price": ticks_to_price(self.price),
            "quantity": lots_to_quantity(self.quantity),
            "buy_order": self.buy_order,
            "sell_order": self.sell_order,
            "taker_side": self.taker_side,
            "ts_s": self.ts_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceResult:
    order: Order
    trades: tuple[Trade, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Depth:
    """Aggregated depth: (price, quantity) per level, best first."""

    market: str
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "market": self.market,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "version": self.version,
        }


def ticks_to_price(ticks: int) -> float:
    return ticks / 100


def lots_to_quantity(lots: int) -> float:
    return lots / 100_000_000


def units_to_amount(units: int) -> float:
    return units / 10_000_000_000


def _to_decimal(value: Any, name: str) -> Decimal:
    # bool is an int subclass; "true" as a price is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidOrder(f"{name} must be a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidOrder(f"{name} must be a number, got {value!r}") from exc
    if not number.is_finite():
        raise InvalidOrder(f"{name} must be finite")
    return number


def parse_price(value: Any) -> int:
    """Price in quote currency → ticks; rejects non-positive, too large and off-tick prices."""
    number = _to_decimal(value, "price")
    if number <= 0 or number > MAX_PRICE:
        raise InvalidOrder(f"price must be > 0 and <= {MAX_PRICE}")
    ticks = number / PRICE_TICK
    if ticks != ticks.to_integral_value():
        raise InvalidOrder(f"price must be a multiple of {PRICE_TICK}")
    return int(ticks)


def parse_quantity(value: Any) -> int:
    """Quantity in base currency → lots; rejects non-positive, too large and sub-lot amounts."""
    number = _to_decimal(value, "quantity")
    if number <= 0 or number > MAX_QUANTITY:
        raise InvalidOrder(f"quantity must be > 0 and <= {MAX_QUANTITY}")
    lots = number / LOT
    if lots != lots.to_integral_value():
        raise InvalidOrder(f"quantity must be a multiple of {LOT}")
    return int(lots)


def split_market(market: str) -> tuple[str, str]:
    """'BTC-USDT' → ('BTC', 'USDT'); ValueError when the name is not BASE-QUOTE."""
    base, sep, quote = market.partition("-")
    if not sep or not base.isalnum() or not quote.isalnum() or base == quote:
        raise ValueError(f"market {market!r} is not of the form BASE-QUOTE (e.g. BTC-USDT)")
    return base, quote


class _Account:
    __slots__ = ("available", "open_orders", "reserved")

    def __init__(self, assets: Iterable[str], initial_units: int) -> None:
        self.available: dict[str, int] = dict.fromkeys(assets, initial_units)
        self.reserved: dict[str, int] = dict.fromkeys(self.available, 0)
        self.open_orders = 0


class _Side:
    """One side of a book: price levels of FIFO queues, prices kept sorted ascending."""

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[int, deque[Order]] = {}
        self.prices: list[int] = []

    def add(self, order: Order) -> None:
        level = self.levels.get(order.price)
        if level is None:
            level = self.levels[order.price] = deque()
            bisect.insort(self.prices, order.price)
        level.append(order)

    def remove(self, order: Order) -> None:
        level = self.levels[order.price]
        level.remove(order)
        if not level:
            self.drop_level(order.price)

    def drop_level(self, price: int) -> None:
        del self.levels[price]
        self.prices.remove(price)


class OrderBook:
    """One market's resting orders and recent trades."""

    def __init__(self, market: str, *, trades_kept: int) -> None:
        self.market = market
        self.base, self.quote = split_market(market)
        self.bids = _Side()
        self.asks = _Side()
        self.resting: dict[str, Order] = {}  # insertion order = age, oldest first
        self.trades: deque[Trade] = deque(maxlen=trades_kept)
        self.version = 0  # bumped on every change, so readers can cache depth

    def side(self, side: Side) -> _Side:
        return self.bids if side == "buy" else self.asks

    def best_bid(self) -> int | None:
        return self.bids.prices[-1] if self.bids.prices else None

    def best_ask(self) -> int | None:
        return self.asks.prices[0] if self.asks.prices else None

    def depth(self, levels: int) -> Depth:
        """Aggregate the resting orders of the best ``levels`` price levels on each side."""
        bid_prices = self.bids.prices[::-1][:levels]
        ask_prices = self.asks.prices[:levels]
        bids = tuple(
            (ticks_to_price(p), lots_to_quantity(sum(o.remaining for o in self.bids.levels[p])))
            for p in bid_prices
        )
        asks = tuple(
            (ticks_to_price(p), lots_to_quantity(sum(o.remaining for o in self.asks.levels[p])))
            for p in ask_prices
        )
        return Depth(market=self.market, bids=bids, asks=asks, version=self.version)


@dataclass(slots=True)
class Exchange:
    """All markets, accounts and orders of the reference exchange."""

    markets: tuple[str, ...]
    max_resting_orders: int = 5000
    trades_kept: int = 1000
    orders_kept: int = 10_000
    max_accounts: int = 100_000
    initial_balance: float = 1e12
    clock: Callable[[], float] = time.time
    books: dict[str, OrderBook] = field(init=False)
    assets: tuple[str, ...] = field(init=False)
    _accounts: dict[str, _Account] = field(init=False)
    _open: dict[str, Order] = field(init=False)
    _closed: OrderedDict[str, Order] = field(init=False)
    _initial_units: int = field(init=False)
    _next_order: int = field(init=False, default=1)
    _next_trade: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        if not self.markets:
            raise ValueError("an exchange needs at least one market")
        self.books = {m: OrderBook(m, trades_kept=self.trades_kept) for m in self.markets}
        assets: dict[str, None] = {}
        for book in self.books.values():
            assets[book.base] = None
            assets[book.quote] = None
        self.assets = tuple(assets)
        self._accounts = {}
        self._open = {}
        self._closed = OrderedDict()
        self._initial_units = int(Decimal(repr(self.initial_balance)) / UNIT)

    # -- accounts ------------------------------------------------------------------------------

    def _account(self, name: str) -> _Account:
        account = self._accounts.pop(name, None)
        if account is None:
            account = _Account(self.assets, self._initial_units)
            if len(self._accounts) >= self.max_accounts:
                self._forget_idle_account()
        self._accounts[name] = account  # re-insert: most recently used last
        return account

    def _forget_idle_account(self) -> None:
        # A soft cap: accounts with open orders hold reservations and are never forgotten.
        for i, (name, account) in enumerate(self._accounts.items()):
            if i >= _EVICT_SCAN:
                return
            if account.open_orders == 0:
                del self._accounts[name]
                return

    def balances(self, name: str) -> dict[str, dict[str, float]]:
        """Available and reserved amount of every asset; creates the account on first use."""
        _check_account(name)
        account = self._account(name)
        return {
            asset: {
                "available": units_to_amount(account.available[asset]),
                "reserved": units_to_amount(account.reserved[asset]),
            }
            for asset in self.assets
        }

    def total_units(self, asset: str) -> int:
        """Sum of available + reserved over all known accounts (conservation checks)."""
        return sum(a.available[asset] + a.reserved[asset] for a in self._accounts.values())

    @property
    def account_count(self) -> int:
        return len(self._accounts)

    # -- orders --------------------------------------------------------------------------------

    def book(self, market: str) -> OrderBook:
        book = self.books.get(market)
        if book is None:
            raise UnknownMarket(f"unknown market {market!r}")
        return book

    def get_order(self, order_id: str) -> Order:
        order = self._open.get(order_id) or self._closed.get(order_id)
        if order is None:
            raise UnknownOrder(f"unknown order {order_id!r}")
        return order

    @property
    def open_order_count(self) -> int:
        return len(self._open)

    def place(self, account: str, market: str, side: str, price: Any, quantity: Any) -> PlaceResult:
        """Validate, reserve funds, match against the opposite side, rest any remainder."""
        book = self.book(market)
        _check_account(account)
        if side not in ("buy", "sell"):
            raise InvalidOrder("side must be 'buy' or 'sell'")
        order_side: Side = "buy" if side == "buy" else "sell"
        ticks = parse_price(price)
        lots = parse_quantity(quantity)
        acct = self._account(account)
        asset, need = (
            (book.quote, ticks * lots) if order_side == "buy" else (book.base, lots * LOT_UNITS)
        )
        if acct.available[asset] < need:
            raise InsufficientBalance(
                f"insufficient {asset}: need {units_to_amount(need)}, "
                f"available {units_to_amount(acct.available[asset])}"
            )
        acct.available[asset] -= need
        acct.reserved[asset] += need
        seq = self._next_order
        self._next_order += 1
        order = Order(
            id=str(seq),
            seq=seq,
            account=account,
            market=market,
            side=order_side,
            price=ticks,
            quantity=lots,
            created_s=self.clock(),
        )
        trades = self._match(book, order, acct)
        if order.remaining:
            book.side(order.side).add(order)
            book.resting[order.id] = order
            self._open[order.id] = order
            acct.open_orders += 1
            book.version += 1
            if len(book.resting) > self.max_resting_orders:
                oldest = self._open[next(iter(book.resting))]
                self._close(book, oldest, "expired")
        else:
            self._remember(order)
        return PlaceResult(order=order, trades=trades)

    def _match(self, book: OrderBook, taker: Order, taker_acct: _Account) -> tuple[Trade, ...]:
        buying = taker.side == "buy"
        opposite = book.asks if buying else book.bids
        prices = opposite.prices  # ascending: best ask first, best bid last
        trades: list[Trade] = []
        now = self.clock()
        while taker.remaining and prices:
            price = prices[0] if buying else prices[-1]
            if (price > taker.price) if buying else (price < taker.price):
                break
            level = opposite.levels[price]
            maker = level[0]
            fill = min(taker.remaining, maker.remaining)
            self._settle(book, taker, taker_acct, maker, fill, price)
            trade = Trade(
                id=self._next_trade,
                market=book.market,
                price=price,
                quantity=fill,
                buy_order=taker.id if buying else maker.id,
                sell_order=maker.id if buying else taker.id,
                taker_side=taker.side,
                ts_s=now,
            )
            self._next_trade += 1
            trades.append(trade)
            book.trades.append(trade)
            if maker.remaining:
                maker.status = "partially_filled"
            else:
                level.popleft()
                if not level:
                    opposite.drop_level(price)
                maker.status = "filled"
                del book.resting[maker.id]
                del self._open[maker.id]
                self._account_of(maker).open_orders -= 1
                self._remember(maker)
            book.version += 1
        if taker.filled:
            taker.status = "partially_filled" if taker.remaining else "filled"
        return tuple(trades)

    def _account_of(self, order: Order) -> _Account:
        # An account with open orders is never forgotten, so it is always present here.
        return self._accounts[order.account]

    def _settle(
        self,
        book: OrderBook,
        taker: Order,
        taker_acct: _Account,
        maker: Order,
        fill: int,
        price: int,
    ) -> None:
        """Move funds for one fill at the maker's price; refund a buyer's price improvement."""
        maker_acct = self._account_of(maker)
        buy, buyer = (taker, taker_acct) if taker.side == "buy" else (maker, maker_acct)
        seller = maker_acct if taker.side == "buy" else taker_acct
        cost = price * fill
        base = fill * LOT_UNITS
        # The buyer reserved at its own limit price; the trade happens at the maker's price.
        buyer.reserved[book.quote] -= buy.price * fill
        buyer.available[book.quote] += (buy.price - price) * fill
        buyer.available[book.base] += base
        seller.reserved[book.base] -= base
        seller.available[book.quote] += cost
        taker.filled += fill
        maker.filled += fill

    def cancel(self, order_id: str) -> Order:
        """Cancel an open order and release its reservation."""
        order = self._open.get(order_id)
        if order is None:
            closed = self._closed.get(order_id)
            if closed is None:
                raise UnknownOrder(f"unknown order {order_id!r}")
            raise OrderClosed(f"order {order_id} is already {closed.status}")
        self._close(self.books[order.market], order, "cancelled")
        return order

    def _close(self, book: OrderBook, order: Order, status: Status) -> None:
        book.side(order.side).remove(order)
        del book.resting[order.id]
        del self._open[order.id]
        acct = self._account_of(order)
        acct.open_orders -= 1
        if order.side == "buy":
            asset, units = book.quote, order.price * order.remaining
        else:
            asset, units = book.base, order.remaining * LOT_UNITS
        acct.reserved[asset] -= units
        acct.available[asset] += units
        order.status = status
        book.version += 1
        self._remember(order)

    def _remember(self, order: Order) -> None:
        self._closed[order.id] = order
        if len(self._closed) > self.orders_kept:
            self._closed.popitem(last=False)

    # -- reads ---------------------------------------------------------------------------------

    def depth(self, market: str, levels: int) -> Depth:
        return self.book(market).depth(levels)

    def recent_trades(self, market: str, limit: int) -> tuple[Trade, ...]:
        """The newest ``limit`` trades of a market, newest first."""
        trades = self.book(market).trades
        out: list[Trade] = []
        for trade in reversed(trades):
            if len(out) >= limit:
                break
            out.append(trade)
        return tuple(out)

    def seed(self, orders_per_market: int, rng: random.Random) -> None:
        """Rest non-crossing orders around each market's mid price so books have depth."""
        mids: Mapping[str, float] = {
            m: MID_PRICES.get(self.books[m].base, DEFAULT_MID) for m in self.markets
        }
        for market in self.markets:
            mid = mids[market]
            for i in range(orders_per_market):
                side: Side = "buy" if i % 2 == 0 else "sell"
                offset = rng.uniform(0.0005, 0.02)
                raw = mid * (1 - offset) if side == "buy" else mid * (1 + offset)
                price = max(Decimal("0.01"), round(Decimal(repr(raw)), 2))
                if side == "sell" and price * 100 <= int(mid * 100):
                    price = Decimal(int(mid * 100) + 1) / 100
                quantity = round(Decimal(repr(rng.uniform(0.001, 0.5))), 6)
                self.place(MARKET_MAKER, market, side, str(price), str(quantity))


def _check_account(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_ACCOUNT_LEN:
        raise InvalidOrder(f"account must be a non-empty string of at most {MAX_ACCOUNT_LEN} chars")
