"""The pure half of the CCXT feed: turning what ccxt returns into ticks and bars, and pacing retries.

Everything here is a function of its arguments (and, for the cursors, of what they saw before): no
network, no clock, no ccxt import. The feed (ccxt_feed.py) owns the exchange clients and the loops and
hands these the raw answers together with the exchange's "now", so the rules that decide what is new,
what is closed and how a number is rounded can be tested exactly, without an exchange or a wait.

- quantum_of / to_decimal / MarketSteps: exchange numbers as Decimals at the market's precision.
- TradeCursor: which trades of a symbol are new across polls or websocket updates, in time order.
- TickerCursor: ticker snapshots become ticks only when the price, bid or ask moved.
- CandleCursor: closed candles delivered once and in order; the still-forming one is held back.
- candle_bar / trade_tick: one ccxt candle or trade as a Bar or Tick (None when unusable).
- Backoff: capped, jittered exponential retry delays (its randomness is an injectable Random).

Numbers: ccxt hands prices and amounts over as floats parsed from the exchange's decimal text. Python's
`repr` of a float is the shortest text that reads back as the same float, which for any value the
exchange sent with at most 15 significant digits is exactly the text it sent; the Decimal made from it
is then quantized to the market's precision (tick size or decimal places), which also strips the float
noise of derived values such as a mid price. Markets with significant-digit precision keep the repr.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from aitrading.decimals import decimal_or_none
from aitrading.market.bars import Bar, Tick
from aitrading.market.timeframes import Timeframe

# Trades polled with `since` only while the last one seen is this recent: some exchanges answer a
# `since` query with a bounded window after it (Binance: one hour), which would never reach the present
# again after a quiet spell. Older than this, the latest trades are fetched and deduplicated by id.
CATCH_UP_WINDOW_MS = 10 * 60 * 1000
# Trade ids remembered per symbol for deduplication (several polls' worth of the largest page).
SEEN_TRADE_IDS = 10_000
# ccxt's `precisionMode` values (ccxt.base.decimal_to_precision), kept here to avoid importing ccxt.
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: the n-th delay is uniform in [d/2, d], d = initial·2ⁿ ≤ max.

    The jitter keeps many feeds that failed together from retrying in lockstep.
    """

    initial_s: float
    max_s: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def quantum_of(precision: Any, mode: int) -> Decimal | None:
    """The smallest step of a market's price or amount, as a power of ten to quantize to (None: unknown)."""
    if precision is None or isinstance(precision, bool):
        return None
    try:
        value = Decimal(repr(precision)) if isinstance(precision, float) else Decimal(precision)
    except (InvalidOperation, TypeError):
        return None
    if not value.is_finite() or value <= 0:
        return None
    if mode == TICK_SIZE:
        exponent = value.normalize().as_tuple().exponent
        return Decimal(1).scaleb(min(int(exponent), 0))
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(value))
    return None  # significant digits: no fixed step


def to_decimal(value: Any, quantum: Decimal | None = None) -> Decimal | None:
    """An exchange number (float, int or decimal text) as a Decimal, quantized when the step is known."""
    number = decimal_or_none(value)
    if number is None:
        return None
    if quantum is not None:
        # More digits than the decimal context holds: keep the exact value.
        with suppress(InvalidOperation):
            number = number.quantize(quantum, rounding=ROUND_HALF_EVEN)
    return number


@dataclass(frozen=True)
class MarketSteps:
    """Quantization steps of one market's prices and amounts."""

    price: Decimal | None = None
    amount: Decimal | None = None

    @classmethod
    def of(cls, market: dict[str, Any] | None, mode: int) -> MarketSteps:
        precision = (market or {}).get("precision") or {}
        return cls(quantum_of(precision.get("price"), mode), quantum_of(precision.get("amount"), mode))


def _id_order(trade_id: str) -> tuple[int, int, str]:
    return (0, int(trade_id), "") if trade_id.isdigit() else (1, 0, trade_id)


def trade_key(trade: dict[str, Any]) -> str:
    trade_id = trade.get("id")
    if trade_id is not None and str(trade_id) != "":
        return str(trade_id)
    # Exchanges without trade ids: a trade is its time, side, price and amount.
    return f"{trade.get('timestamp')}|{trade.get('side')}|{trade.get('price')}|{trade.get('amount')}"


class TradeCursor:
    """Which trades of a symbol are new: deduplicated by id across polls, delivered in time order."""

    def __init__(self, capacity: int = SEEN_TRADE_IDS) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.last_ms: int | None = None

    def since(self, now_ms: int) -> int | None:
        """The `since` of the next REST poll: the last trade's time while recent, else None (latest)."""
        if self.last_ms is None or now_ms - self.last_ms > CATCH_UP_WINDOW_MS:
            return None
        return self.last_ms

    def fresh(self, trades: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        usable = [t for t in trades if isinstance(t.get("timestamp"), int | float)]
        usable.sort(key=lambda t: (int(t["timestamp"]), _id_order(trade_key(t))))
        out = []
        for trade in usable:
            key = trade_key(trade)
            if key in self.seen:
                continue
            # Older than what was delivered (only once its id was forgotten): it would arrive out of order.
            if self.last_ms is not None and int(trade["timestamp"]) < self.last_ms:
                continue
            self.seen[key] = None
            out.append(trade)
        while len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        if out:
            self.last_ms = int(out[-1]["timestamp"])
        return out


class TickerCursor:
    """Turns ticker snapshots into ticks, only when the last price, bid or ask moved."""

    def __init__(self) -> None:
        self.last: tuple[Decimal, Decimal | None, Decimal | None] | None = None
        self.last_ms = 0

    def tick(self, symbol: str, ticker: dict[str, Any], steps: MarketSteps, now_ms: int) -> Tick | None:
        bid = to_decimal(ticker.get("bid"), steps.price)
        ask = to_decimal(ticker.get("ask"), steps.price)
        bid = bid if bid is not None and bid > 0 else None
        ask = ask if ask is not None and ask > 0 else None
        price = to_decimal(ticker.get("last"), steps.price)
        if price is None or price <= 0:
            price = to_decimal(ticker.get("close"), steps.price)
        if (price is None or price <= 0) and bid is not None and ask is not None:
            price = to_decimal((bid + ask) / 2, steps.price)
        if price is None or price <= 0:
            return None
        state = (price, bid, ask)
        if state == self.last:
            return None
        self.last = state
        stamp = ticker.get("timestamp")
        time_ms = int(stamp) if isinstance(stamp, int | float) else now_ms
        self.last_ms = max(time_ms, self.last_ms)  # a tick never goes back in time
        return Tick(symbol, self.last_ms, price, Decimal(0), bid, ask)


class CandleCursor:
    """Closed candles of a symbol, each delivered once, in order; the still-forming candle is held back.

    A candle is closed when its bucket has ended by the exchange's clock or a later candle exists.
    """

    def __init__(self, timeframe: Timeframe) -> None:
        self.timeframe = timeframe
        self.last_ms: int | None = None  # open time of the last candle delivered (or skipped at start)
        self.pending: list[Any] | None = None  # the newest candle, not yet closed when seen

    def closed(self, candles: Sequence[Sequence[Any]], now_ms: int) -> list[Sequence[Any]]:
        by_time: dict[int, Sequence[Any]] = {}
        if self.pending is not None:
            by_time[int(self.pending[0])] = self.pending
        for candle in candles:
            if candle and isinstance(candle[0], int | float):
                by_time[int(candle[0])] = candle  # the newest version of a candle wins
        times = sorted(t for t in by_time if self.last_ms is None or t > self.last_ms)
        out = []
        self.pending = None
        for i, start in enumerate(times):
            later_exists = i < len(times) - 1
            if later_exists or start + self.timeframe.ms <= now_ms:
                out.append(by_time[start])
            else:
                self.pending = list(by_time[start])
        if out:
            self.last_ms = int(out[-1][0])
        return out

    def skip_to(self, candles: Sequence[Sequence[Any]], now_ms: int, keep: int) -> list[Sequence[Any]]:
        """First poll: the newest `keep` closed candles are delivered, older ones are skipped."""
        closed = self.closed(candles, now_ms)
        return closed[-keep:] if keep else []

    def next_close_ms(self) -> int | None:
        if self.last_ms is None:
            return None
        return self.last_ms + 2 * self.timeframe.ms


def candle_bar(candle: Sequence[Any], steps: MarketSteps) -> Bar | None:
    if len(candle) < 6:
        return None
    values = [to_decimal(candle[i], steps.price) for i in range(1, 5)]
    volume = to_decimal(candle[5], steps.amount)
    if volume is None:
        volume = Decimal(0)  # some exchanges leave the volume of an empty bucket out
    if any(v is None for v in values):
        return None
    o, h, low, c = (v for v in values if v is not None)
    return Bar(int(candle[0]), o, h, low, c, volume)


def trade_tick(symbol: str, trade: dict[str, Any], steps: MarketSteps) -> Tick | None:
    price = to_decimal(trade.get("price"), steps.price)
    if price is None or price <= 0:
        return None
    size = to_decimal(trade.get("amount"), steps.amount)
    size = size if size is not None and size >= 0 else Decimal(0)
    return Tick(symbol, int(trade["timestamp"]), price, size)
