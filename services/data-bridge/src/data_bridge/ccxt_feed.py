"""Exchange feeds through CCXT: trades, tickers and closed candles of any exchange ccxt speaks.

REST polling uses `ccxt.async_support`, websockets `ccxt.pro` (used per channel when the exchange's
`watchTrades` / `watchTicker` / `watchOHLCV` exist, unless `use_websocket` is false). Both run with
`enableRateLimit=True`, so ccxt paces requests by the exchange's published rate limit.

Numbers become Decimals at the market's precision in ccxt_cursors, which holds the feed's pure
parts (quantizing, which trades/candles are new or closed, ticker ticks, retry backoff).

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
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aitrading.errors import Invalid
from aitrading.market.timeframes import Timeframe
from data_bridge.ccxt_cursors import (
    Backoff,
    CandleCursor,
    MarketSteps,
    TickerCursor,
    TradeCursor,
    candle_bar,
    trade_tick,
)
from data_bridge.feeds import Feed, FeedContext, FeedDeps, FeedSink

_log = structlog.get_logger("data_bridge.ccxt_feed")

# A candle is polled this long after its bucket ends, giving the exchange time to publish it.
CANDLE_SETTLE_S = 1.0
CANDLE_PAGE = 1000
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
