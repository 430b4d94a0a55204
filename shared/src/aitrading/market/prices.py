"""The latest known price of a symbol, for the services that value or fill against it (trading-engine,
portfolio-manager).

Live ticks and bars are followed on core NATS (`md.tick.>`, `md.bar.>`): every instance keeps the last
trade, bid and ask it saw per symbol. A symbol not seen since start asks data-bridge's quote, then the
close of the last stored bar in database-service (with the caller's token, so a user's own imported
series count). `listen` lets a caller react to each new quote (paper matching of resting orders).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from aitrading.client import ServiceClient
from aitrading.errors import DomainError, NotFound, raise_for_upstream
from aitrading.events import Event, EventBus
from aitrading.market.bars import ms_to_datetime
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import parse_bars, parse_ticks
from aitrading.service_tokens import ServiceTokens

_log = structlog.get_logger("aitrading.market.prices")


@dataclass(frozen=True)
class PriceQuote:
    symbol: str
    last: Decimal
    time: datetime
    bid: Decimal | None = None
    ask: Decimal | None = None
    source: str = "live"          # live (a tick or bar seen on NATS), quote (data-bridge), bar (stored close)


QuoteListener = Callable[[PriceQuote], Awaitable[None]]


class LatestPrices:
    """Last price per symbol from the live stream, with HTTP fallbacks for symbols not yet seen."""

    name = "latest-prices"

    def __init__(self, client: ServiceClient, tokens: ServiceTokens | None = None, *,
                 fallback_ttl_s: float = 2.0) -> None:
        self.client = client
        self.tokens = tokens
        self.fallback_ttl_s = fallback_ttl_s
        self._live: dict[str, PriceQuote] = {}
        self._fetched: dict[tuple[str, str | None], tuple[float, PriceQuote]] = {}
        self._listeners: list[QuoteListener] = []

    def follow(self, bus: EventBus) -> None:
        bus.subscribe("md.tick.>", self.on_ticks)
        bus.subscribe("md.bar.>", self.on_bars)

    def listen(self, listener: QuoteListener) -> None:
        self._listeners.append(listener)

    def live(self, symbol: str) -> PriceQuote | None:
        return self._live.get(symbol)

    def known(self) -> dict[str, Decimal]:
        return {symbol: quote.last for symbol, quote in self._live.items()}

    async def on_ticks(self, event: Event) -> None:
        # Every tick of every feed passes here: only the newest row of a batch is parsed.
        try:
            batch = parse_ticks(_newest_only(event, "ticks"))
        except ValueError as exc:
            _log.warning("malformed ticks ignored", error=str(exc)[:200])
            return
        if not batch.ticks:
            return
        tick = max(batch.ticks, key=lambda t: t.time_ms)
        await self.update(PriceQuote(batch.symbol, tick.price, ms_to_datetime(tick.time_ms),
                                     tick.bid, tick.ask))

    async def on_bars(self, event: Event) -> None:
        try:
            batch = parse_bars(_newest_only(event, "bars"))
        except ValueError as exc:
            _log.warning("malformed bars ignored", error=str(exc)[:200])
            return
        if not batch.bars:
            return
        bar = max(batch.bars, key=lambda b: b.time_ms)
        # A bar is known at its close: its time is the end of its period.
        closed_at = ms_to_datetime(bar.time_ms + batch.timeframe.ms)
        await self.update(PriceQuote(batch.symbol, bar.close, closed_at))

    async def update(self, quote: PriceQuote) -> None:
        current = self._live.get(quote.symbol)
        if current is not None and current.time > quote.time:
            return  # an older bar arriving after a newer tick does not move the price back
        self._live[quote.symbol] = quote
        for listener in self._listeners:
            try:
                await listener(quote)
            except DomainError as exc:
                _log.warning("quote listener refused", symbol=quote.symbol, error=exc.detail)

    async def latest(self, symbol: str, *, token: str | None = None) -> PriceQuote | None:
        """The latest price known anywhere, or None when the symbol has none at all."""
        live = self._live.get(symbol)
        if live is not None:
            return live
        key = (symbol, token)
        cached = self._fetched.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.fallback_ttl_s:
            return cached[1]
        try:
            found = await self._quote(symbol, token)
        except DomainError as exc:  # data-bridge down: the stored close is still a price
            _log.warning("quote unavailable; using the stored close", symbol=symbol, error=exc.detail)
            found = None
        found = found or await self._stored_close(symbol, token)
        if found is not None:
            if len(self._fetched) > 10_000:
                self._fetched.clear()
            self._fetched[key] = (now, found)
        return found

    async def _token(self, token: str | None) -> str | None:
        if token is None and self.tokens is not None:
            return await self.tokens.token()
        return token

    async def _quote(self, symbol: str, token: str | None) -> PriceQuote | None:
        response = await self.client.get("data-bridge", f"/api/v1/quotes/{symbol}",
                                         token=await self._token(token), timeout_s=5.0)
        if response.status_code == 404:
            return None
        body = response.json()
        raise_for_upstream("data-bridge", response.status_code, body)
        return PriceQuote(symbol, Decimal(body["last"]), _parse_time(body["time"]),
                          _decimal(body.get("bid")), _decimal(body.get("ask")), source="quote")

    async def _stored_close(self, symbol: str, token: str | None) -> PriceQuote | None:
        # The daily view is resampled from whatever finer series is stored, so it always has the last close.
        params = {"symbol": symbol, "timeframe": Timeframe("1d").value, "limit": 1}
        response = await self.client.get("database-service", "/api/v1/market/ohlcv", params=params,
                                         token=await self._token(token), timeout_s=10.0)
        if response.status_code in (404, 422):
            return None
        body = response.json()
        try:
            raise_for_upstream("database-service", response.status_code, body)
        except NotFound:
            return None
        bars = body.get("bars") or []
        if not bars:
            return None
        bar = bars[-1]
        return PriceQuote(symbol, Decimal(bar["close"]), _parse_time(bar["time"]), source="bar")


def _newest_only(event: Event, rows_key: str) -> Event:
    """The event with only its newest row (rows start with their time in ms); ValueError if malformed."""
    data = event.data
    rows = data.get(rows_key) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        return event
    try:
        newest = max(rows, key=lambda row: int(row[0]))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"malformed {rows_key} rows: {exc!r}") from exc
    return event.model_copy(update={"data": {**data, rows_key: [newest]}})


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
