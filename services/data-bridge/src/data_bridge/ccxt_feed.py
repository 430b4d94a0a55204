"""Exchange feeds through CCXT: trades, tickers and closed candles of any exchange ccxt speaks.

REST polling uses `ccxt.async_support`, websockets `ccxt.pro` (used per channel when the exchange's
`watchTrades` / `watchTicker` / `watchOHLCV` exist, unless `use_websocket` is false). Both run with
`enableRateLimit=True`, so ccxt paces requests by the exchange's published rate limit.

Numbers: ccxt hands prices and amounts over as floats parsed from the exchange's decimal text. Python's
`repr` of a float is the shortest text that reads back as the same float, which for any value the
exchange sent with at most 15 significant digits is exactly the text it sent; the Decimal made from it
is then quantized to the market's precision (tick size or decimal places), which also strips the float
noise of derived values such as a mid price. Markets with significant-digit precision keep the repr.

Failures: network trouble (ccxt.NetworkError: timeouts, DDoS protection, rate limits, exchange down)
is retried with capped, jittered exponential backoff and counted in `counters.reconnects`; an
unknown or delisted symbol (BadSymbol) ends that symbol's streams with a clear error, and the feed
fails once no symbol is left; credentials or unsupported features fail the feed at once.

ccxt is imported when a feed starts, in a thread: importing it loads every exchange module and takes
seconds, which the service's start and the event loop should not pay for a feed nobody runs.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import math
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aitrading.errors import Invalid
from aitrading.market.bars import Bar, Tick
from aitrading.market.timeframes import Timeframe
from data_bridge.feeds import Feed, FeedContext, FeedDeps, FeedSink

_log = structlog.get_logger("data_bridge.ccxt_feed")

# Trades polled with `since` only while the last one seen is this recent: some exchanges answer a
# `since` query with a bounded window after it (Binance: one hour), which would never reach the present
# again after a quiet spell. Older than this, the latest trades are fetched and deduplicated by id.
CATCH_UP_WINDOW_MS = 10 * 60 * 1000
# Trade ids remembered per symbol for deduplication (several polls' worth of the largest page).
SEEN_TRADE_IDS = 10_000
# A candle is polled this long after its bucket ends, giving the exchange time to publish it.
CANDLE_SETTLE_S = 1.0
CANDLE_PAGE = 1000
# ccxt's `precisionMode` values (ccxt.base.decimal_to_precision), kept here to avoid importing ccxt.
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4
_URL_SCHEMES = ("http://", "https://", "ws://", "wss://")


class Channel(StrEnum):
    TRADES = "trades"
    TICKER = "ticker"
    CANDLES = "candles"


# The ccxt.pro capability each channel needs to run over a websocket.
_WATCH = {Channel.TRADES: "watchTrades", Channel.TICKER: "watchTicker", Channel.CANDLES: "watchOHLCV"}


@cache
def ccxt_exchange_ids() -> frozenset[str]:
    """The exchange ids of the installed ccxt (the modules of `ccxt.async_support`), without importing it."""
    spec = importlib.util.find_spec("ccxt")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "async_support"
    return frozenset(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


class CcxtParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(description="a ccxt exchange id, e.g. binance, kraken, coinbase")
    channels: list[Channel] = Field([Channel.TRADES], min_length=1,
                                    description="trades and/or ticker become ticks; candles become bars")
    timeframe: Timeframe = Field(Timeframe.M1, description="timeframe of the candles channel")
    use_websocket: bool | Literal["auto"] = Field(
        "auto", description="auto: websocket where ccxt.pro can watch the channel, else REST polling")
    poll_interval_s: float = Field(2.0, ge=0.05, le=3600, description="REST polling interval")
    sandbox: bool = Field(False, description="the exchange's test environment (ccxt set_sandbox_mode)")
    urls: dict[str, str | dict[str, str]] = Field(
        {}, description="entries of ccxt's urls['api'] to replace, e.g. {'public': 'https://gw/api/v3'} "
                        "for a self-hosted gateway")
    options: dict[str, Any] = Field({}, description="ccxt exchange options, e.g. {'defaultType': 'spot'}")
    trade_limit: int = Field(500, ge=1, le=1000, description="trades asked for per REST poll")
    candle_backfill: int = Field(0, ge=0, le=CANDLE_PAGE - 1,
                                 description="closed candles from before the start delivered first")

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        exchange = value.strip().lower()
        if exchange not in ccxt_exchange_ids():
            examples = ", ".join(e for e in ("binance", "kraken", "coinbase", "okx", "bybit")
                                 if e in ccxt_exchange_ids())
            raise ValueError(f"{value!r} is not an exchange ccxt knows (e.g. {examples})")
        return exchange

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[Channel]) -> list[Channel]:
        return list(dict.fromkeys(value))

    @field_validator("urls")
    @classmethod
    def _absolute_urls(cls, value: dict[str, str | dict[str, str]], info: ValidationInfo) -> dict[
            str, str | dict[str, str]]:
        for key, url in value.items():
            for one in ([url] if isinstance(url, str) else url.values()):
                if not one.startswith(_URL_SCHEMES):
                    raise ValueError(f"the url of {key!r} must start with http(s):// or ws(s)://")
        return value


class CcxtFeedError(RuntimeError):
    """A failure no retry can mend (bad credentials, unknown symbols, a feature the exchange lacks)."""


class SymbolFailed(Exception):
    def __init__(self, symbol: str, reason: str) -> None:
        super().__init__(f"{symbol}: {reason}")
        self.symbol = symbol


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
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = Decimal(repr(value))
    else:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None
        if not number.is_finite():
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


def _import_ccxt() -> tuple[ModuleType, ModuleType]:
    return importlib.import_module("ccxt.async_support"), importlib.import_module("ccxt.pro")


class CcxtFeed(Feed):
    kind: ClassVar[str] = "ccxt"
    Params: ClassVar[type[BaseModel]] = CcxtParams

    @classmethod
    def venue_for(cls, params: BaseModel) -> str:
        assert isinstance(params, CcxtParams)
        return params.exchange

    @classmethod
    def check(cls, symbols: Sequence[str], params: BaseModel) -> None:
        errors = [{"field": f"symbols.{i}", "reason": "a ccxt symbol is BASE/QUOTE, e.g. BTC/USDT"}
                  for i, symbol in enumerate(symbols) if "/" not in symbol]
        if errors:
            raise Invalid("ccxt feeds take unified symbols such as BTC/USDT", errors=errors)

    def __init__(self, context: FeedContext, params: BaseModel, sink: FeedSink, deps: FeedDeps) -> None:
        super().__init__(context, params, sink, deps)
        self._errors: Any = None  # the module ccxt.base.errors, once ccxt is imported
        self._offset_ms = 0
        self._steps: dict[str, MarketSteps] = {}

    @property
    def p(self) -> CcxtParams:
        assert isinstance(self.params, CcxtParams)
        return self.params

    async def run(self) -> None:
        ccxt_async, ccxt_pro = await asyncio.to_thread(_import_ccxt)
        self._errors = importlib.import_module("ccxt.base.errors")
        rest = self._build(ccxt_async)
        stream: Any = None
        try:
            # The websocket client (where ccxt.pro has one) says which channels it can watch; it is
            # closed again at once when no channel uses it.
            stream = self._build(ccxt_pro) if hasattr(ccxt_pro, self.p.exchange) else None
            self._apply_urls([c for c in (rest, stream) if c is not None])
            ws_channels = self._websocket_channels(stream)
            if not ws_channels and stream is not None:
                await _close(stream)
                stream = None
            await self._retrying("markets", rest.load_markets)
            unknown = [s for s in self.context.symbols if s not in rest.markets]
            if unknown:
                raise CcxtFeedError(f"{self.p.exchange} has no market {', '.join(unknown)}")
            if stream is not None:
                stream.set_markets_from_exchange(rest)
            self._offset_ms = await self._clock_offset(rest)
            self._steps = {s: MarketSteps.of(rest.markets.get(s), int(rest.precisionMode))
                           for s in self.context.symbols}
            await self._run_streams(rest, stream, ws_channels)
        finally:
            await _close(rest)
            if stream is not None:
                await _close(stream)

    def _build(self, module: ModuleType) -> Any:
        config = {"enableRateLimit": True, "options": dict(self.p.options)}
        exchange = getattr(module, self.p.exchange)(config)
        if self.p.sandbox:
            try:
                exchange.set_sandbox_mode(True)
            except self._errors.NotSupported as exc:
                raise CcxtFeedError(f"sandbox: {self.p.exchange} has no sandbox environment") from exc
        return exchange

    def _apply_urls(self, clients: list[Any]) -> None:
        """Replace the named entries of `urls['api']` in every client that has them (REST or websocket)."""
        apis = [api for api in (c.urls.get("api") for c in clients) if isinstance(api, dict)]
        for key, url in self.p.urls.items():
            holders = [api for api in apis if key in api]
            if not holders:
                known = ", ".join(sorted({name for api in apis for name in api}))
                raise CcxtFeedError(f"urls: {self.p.exchange} has no API url named {key!r} (it has {known})")
            for api in holders:
                if isinstance(url, dict) and isinstance(api[key], dict):
                    api[key] = {**api[key], **url}  # e.g. ws: {spot: ...} keeps the other markets' urls
                else:
                    api[key] = url

    def _websocket_channels(self, stream: Any) -> set[Channel]:
        if self.p.use_websocket is False:
            return set()
        has: dict[str, Any] = stream.has if stream is not None else {}
        supported = {c for c in self.p.channels if has.get(_WATCH[c])}
        if self.p.use_websocket is True and supported != set(self.p.channels):
            missing = ", ".join(sorted(c.value for c in set(self.p.channels) - supported))
            raise CcxtFeedError(f"use_websocket: ccxt.pro cannot watch {missing} on {self.p.exchange}")
        return supported

    def _now_ms(self) -> int:
        return int(time.time() * 1000) + self._offset_ms

    async def _clock_offset(self, exchange: Any) -> int:
        """The exchange's clock minus ours, so candles close by the exchange's time (0 when unknown)."""
        if not exchange.has.get("fetchTime"):
            return 0
        before = time.time() * 1000
        try:
            server_ms = await exchange.fetch_time()
        except self._errors.BaseError as exc:
            _log.info("exchange time unavailable; using the local clock", exchange=self.p.exchange,
                      error=repr(exc))
            return 0
        after = time.time() * 1000
        return int(server_ms - (before + after) / 2) if isinstance(server_ms, int | float) else 0

    async def _run_streams(self, rest: Any, stream: Any, ws_channels: set[Channel]) -> None:
        tasks: dict[asyncio.Task[None], str] = {}
        for symbol in self.context.symbols:
            for channel in self.p.channels:
                client = stream if channel in ws_channels else rest
                run = self._stream_loop(symbol, channel, client, websocket=channel in ws_channels)
                tasks[asyncio.create_task(run, name=f"ccxt:{symbol}:{channel}")] = symbol
        failed: dict[str, str] = {}
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():
                        continue  # a sibling of a failed symbol, stopped above
                    exc = task.exception()
                    if isinstance(exc, SymbolFailed):
                        failed[exc.symbol] = str(exc)
                        self.context.counters.error(str(exc))
                        _log.warning("ccxt symbol stopped", exchange=self.p.exchange, error=str(exc))
                        # The symbol's other channels stop too: it is gone for all of them.
                        for other in list(pending):
                            if tasks[other] == exc.symbol:
                                other.cancel()
                    elif exc is not None:
                        raise exc
            if failed:
                raise CcxtFeedError("; ".join(failed.values()))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream_loop(self, symbol: str, channel: Channel, exchange: Any, *, websocket: bool) -> None:
        steps = self._steps[symbol]
        poll: Callable[[], Awaitable[float]]
        if channel is Channel.TRADES:
            trades = TradeCursor()
            poll = (lambda: self._watch_trades(exchange, symbol, trades, steps)) if websocket else (
                lambda: self._poll_trades(exchange, symbol, trades, steps))
        elif channel is Channel.TICKER:
            ticker = TickerCursor()
            poll = (lambda: self._watch_ticker(exchange, symbol, ticker, steps)) if websocket else (
                lambda: self._poll_ticker(exchange, symbol, ticker, steps))
        else:
            candles = CandleCursor(self.p.timeframe)
            poll = (lambda: self._watch_candles(exchange, symbol, candles, steps)) if websocket else (
                lambda: self._poll_candles(exchange, symbol, candles, steps))
        backoff = self._backoff()
        errors = self._errors
        while True:
            try:
                wait_s = await poll()
                backoff.reset()
            except errors.BadSymbol as exc:
                raise SymbolFailed(symbol, f"{self.p.exchange} refused the symbol: {exc}") from exc
            except (errors.AuthenticationError, errors.PermissionDenied, errors.AccountSuspended,
                    errors.NotSupported) as exc:
                raise CcxtFeedError(f"{self.p.exchange} {channel.value} {symbol}: "
                                    f"{exc.__class__.__name__}: {exc}") from exc
            except errors.NetworkError as exc:
                wait_s = self._retry_after(backoff, f"{symbol} {channel.value}", exc)
                self.context.counters.reconnects += 1
            except errors.BaseError as exc:
                # Other exchange errors may be passing (a bad answer, maintenance); retried all the same.
                wait_s = self._retry_after(backoff, f"{symbol} {channel.value}", exc)
            if wait_s > 0:
                await asyncio.sleep(wait_s)

    def _backoff(self) -> Backoff:
        settings = self.deps.settings
        return Backoff(settings.feed_backoff_initial_s, settings.feed_backoff_max_s)

    def _retry_after(self, backoff: Backoff, what: str, exc: Exception) -> float:
        delay = backoff.next_delay()
        self.context.counters.error(f"{what}: {exc.__class__.__name__}: {exc}")
        _log.warning("ccxt request failed; retrying", exchange=self.p.exchange, what=what,
                     error=f"{exc.__class__.__name__}: {str(exc)[:300]}", retry_in_s=round(delay, 3))
        return delay

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        backoff = self._backoff()
        errors = self._errors
        while True:
            try:
                return await call()
            except (errors.AuthenticationError, errors.PermissionDenied, errors.NotSupported) as exc:
                raise CcxtFeedError(f"{self.p.exchange} {what}: {exc.__class__.__name__}: {exc}") from exc
            except errors.NetworkError as exc:
                self.context.counters.reconnects += 1
                await asyncio.sleep(self._retry_after(backoff, what, exc))
            except errors.BaseError as exc:
                await asyncio.sleep(self._retry_after(backoff, what, exc))

    # --- REST polling: each returns how long to wait before the next poll ---

    async def _poll_trades(self, exchange: Any, symbol: str, cursor: TradeCursor,
                    steps: MarketSteps) -> float:
        since = cursor.since(self._now_ms())
        trades = await exchange.fetch_trades(symbol, since=since, limit=self.p.trade_limit)
        await self._deliver_trades(symbol, cursor.fresh(trades), steps)
        return self.p.poll_interval_s

    async def _poll_ticker(self, exchange: Any, symbol: str, cursor: TickerCursor,
                    steps: MarketSteps) -> float:
        ticker = await exchange.fetch_ticker(symbol)
        tick = cursor.tick(symbol, ticker, steps, self._now_ms())
        if tick is not None:
            await self.sink.ticks(self.context, [tick])
        return self.p.poll_interval_s

    async def _poll_candles(self, exchange: Any, symbol: str, cursor: CandleCursor,
                    steps: MarketSteps) -> float:
        timeframe = self.p.timeframe
        if cursor.last_ms is None and cursor.pending is None:
            # One more than asked for: the newest candle returned is usually still forming.
            candles = await exchange.fetch_ohlcv(symbol, timeframe.value, limit=self.p.candle_backfill + 2)
            closed = cursor.skip_to(candles, self._now_ms(), self.p.candle_backfill)
        else:
            since = cursor.last_ms + timeframe.ms if cursor.last_ms is not None else None
            candles = await exchange.fetch_ohlcv(symbol, timeframe.value, since=since, limit=CANDLE_PAGE)
            closed = cursor.closed(candles, self._now_ms())
        await self._deliver_candles(symbol, closed, steps)
        if len(candles) >= CANDLE_PAGE:
            return 0.0  # catching up after an outage: the next page at once (ccxt still paces requests)
        next_close = cursor.next_close_ms()
        if next_close is None:
            pending = cursor.pending
            next_close = int(pending[0]) + timeframe.ms if pending is not None else None
        until_close_s = (next_close - self._now_ms()) / 1000 + CANDLE_SETTLE_S if next_close else 0.0
        return max(self.p.poll_interval_s, until_close_s)

    # --- websockets (ccxt.pro): each call returns after the next update ---

    async def _watch_trades(self, exchange: Any, symbol: str, cursor: TradeCursor,
                    steps: MarketSteps) -> float:
        await self._deliver_trades(symbol, cursor.fresh(await exchange.watch_trades(symbol)), steps)
        return 0.0

    async def _watch_ticker(self, exchange: Any, symbol: str, cursor: TickerCursor,
                    steps: MarketSteps) -> float:
        tick = cursor.tick(symbol, await exchange.watch_ticker(symbol), steps, self._now_ms())
        if tick is not None:
            await self.sink.ticks(self.context, [tick])
        return 0.0

    async def _watch_candles(self, exchange: Any, symbol: str, cursor: CandleCursor,
                    steps: MarketSteps) -> float:
        if cursor.last_ms is None and cursor.pending is None:
            # The stream only tells what changes from now on; the backfill (and where to start) comes
            # from REST, which every ccxt.pro client also speaks.
            return min(await self._poll_candles(exchange, symbol, cursor, steps), 0.0)
        candles = await exchange.watch_ohlcv(symbol, self.p.timeframe.value)
        await self._deliver_candles(symbol, cursor.closed(candles, self._now_ms()), steps)
        return 0.0

    async def _deliver_trades(self, symbol: str, trades: list[dict[str, Any]], steps: MarketSteps) -> None:
        ticks = [t for t in (trade_tick(symbol, trade, steps) for trade in trades) if t is not None]
        if ticks:
            await self.sink.ticks(self.context, ticks)

    async def _deliver_candles(self, symbol: str, candles: list[Sequence[Any]], steps: MarketSteps) -> None:
        bars = [b for b in (candle_bar(c, steps) for c in candles) if b is not None]
        if bars:
            await self.sink.bars(self.context, self.p.timeframe, symbol, bars)


async def _close(exchange: Any) -> None:
    try:
        await exchange.close()
    except Exception as exc:  # closing is best effort: the feed is stopping either way
        _log.warning("ccxt exchange did not close cleanly", error=repr(exc))
