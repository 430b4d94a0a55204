"""LatestPrices: live ticks and bars from real NATS, then data-bridge's quote, then database-service's close.

Live prices travel over the real NATS server (EventBus publishing `aitrading.market.wire` events) with a
unique symbol per test. The two HTTP fallbacks are our own services; library tests must not import
services, so a small FastAPI app served on a real socket answers the two routes LatestPrices calls
(`GET /api/v1/quotes/{symbol}` of data-bridge, `GET /api/v1/market/ohlcv` of database-service) with the
same JSON and problem+json those services send. The service token comes from the real token protocol
(`token_issuer`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
import nats
import pytest
from fastapi import FastAPI, Request
from pydantic import SecretStr

from aitrading.client import ServiceClient
from aitrading.errors import Invalid, NotFound, Unavailable, install_error_handlers
from aitrading.events import Event, EventBus
from aitrading.market.bars import Bar, Tick, datetime_to_ms
from aitrading.market.prices import LatestPrices, PriceQuote
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import TICKS, bar_subject, bars_event, tick_row, tick_subject, ticks_event
from aitrading.service_tokens import ServiceTokens
from aitrading.streams import MARKET
from aitrading.testing import TokenIssuer, eventually, serve_app

D = Decimal
T0 = datetime(2024, 9, 2, 10, 0, tzinfo=UTC)
SOURCE = "latest-prices-tests"


def zulu(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class MarketServices:
    """data-bridge's quote route and database-service's bars route, answering as those services do."""

    quotes: dict[str, dict[str, Any]] = field(default_factory=dict)
    bars: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str], str | None]] = field(default_factory=list)
    bars_down: bool = False
    quotes_down: bool = False

    def seen(self, route: str, symbol: str, request: Request) -> None:
        self.calls.append((route, symbol, dict(request.query_params), request.headers.get("authorization")))

    def app(self) -> FastAPI:
        app = FastAPI()
        install_error_handlers(app)

        @app.get("/api/v1/quotes/{symbol:path}")
        async def quote(symbol: str, request: Request) -> dict[str, Any]:
            self.seen("quote", symbol, request)
            if self.quotes_down:
                raise Unavailable("data-bridge is not answering")
            found = self.quotes.get(symbol)
            if found is None:
                raise NotFound(f"no quote for {symbol}: no feed carries it")
            return found

        @app.get("/api/v1/market/ohlcv")
        async def ohlcv(request: Request, symbol: str, timeframe: str, limit: int = 1000) -> dict[str, Any]:
            self.seen("ohlcv", symbol, request)
            if self.bars_down:
                raise Unavailable("the warehouse is not answering")
            if timeframe not in ("1m", "5m", "15m", "1h", "4h", "1d"):
                raise Invalid("bad timeframe", errors=[{"field": "timeframe", "reason": "unknown"}])
            stored = self.bars.get(symbol)
            if stored is None:
                raise NotFound(f"no stored series for {symbol}")
            return {"symbol": symbol, "timeframe": timeframe, "resampled_from": "1m", "bars": stored[-limit:]}

        return app


@pytest.fixture(scope="module")
async def services() -> AsyncIterator[tuple[MarketServices, str]]:
    fake = MarketServices()
    async with serve_app(fake.app()) as url:
        yield fake, url


@pytest.fixture(scope="module")
async def client(services: tuple[MarketServices, str],
                 token_issuer: TokenIssuer) -> AsyncIterator[ServiceClient]:
    _, url = services
    overrides = {"data-bridge": url, "database-service": url, "user-service": token_issuer.url}
    http = ServiceClient(overrides=overrides, retries=0)
    await http.start()
    try:
        yield http
    finally:
        await http.stop()


@pytest.fixture(scope="module")
def tokens(client: ServiceClient, token_issuer: TokenIssuer) -> ServiceTokens:
    return ServiceTokens(client, "trading-engine", SecretStr(token_issuer.service_secret))


@dataclass
class Live:
    """One LatestPrices following the real NATS server, and the bus to publish on (same connection,
    so a subscription is in place before anything published after it)."""

    prices: LatestPrices
    bus: EventBus
    subjects: set[str] = field(default_factory=set)

    async def publish(self, event: Event) -> None:
        self.subjects.add(event.subject)
        await self.bus.publish(event)

    async def ticks(self, symbol: str, *ticks: Tick) -> None:
        await self.publish(ticks_event(symbol, "test", [tick_row(t) for t in ticks], source=SOURCE))

    async def bars(self, symbol: str, *bars: Bar, timeframe: Timeframe = Timeframe.M1) -> None:
        await self.publish(bars_event(symbol, "test", timeframe, list(bars), source=SOURCE))

    async def settled(self) -> None:
        """Wait until everything published so far was handled: a probe after it on each subscription
        (ticks and bars are delivered in order within each)."""
        by_tick, by_bar = symbol(), symbol()
        await self.ticks(by_tick, tick(by_tick, T0, "1"))
        await self.bars(by_bar, bar(T0, "1"))
        await eventually(lambda: None not in (self.prices.live(by_tick), self.prices.live(by_bar)))


@pytest.fixture(scope="module")
async def live(nats_url: str, client: ServiceClient, tokens: ServiceTokens) -> AsyncIterator[Live]:
    prices = LatestPrices(client, tokens)
    bus = EventBus(nats_url, source=SOURCE)
    prices.follow(bus)
    await bus.start()
    follower = Live(prices, bus)
    try:
        yield follower
    finally:
        await bus.stop()
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for subject in follower.subjects:
                await js.purge_stream(MARKET.name, subject=subject)
        finally:
            await nc.close()


def symbol() -> str:
    return f"T{uuid.uuid4().hex[:12].upper()}/USD"


def tick(sym: str, moment: datetime, price: str, bid: str | None = None, ask: str | None = None) -> Tick:
    return Tick(sym, datetime_to_ms(moment), D(price), D(1), None if bid is None else D(bid),
                None if ask is None else D(ask))


def bar(start: datetime, close: str) -> Bar:
    price = D(close)
    return Bar(datetime_to_ms(start), price, price + 1, price - 1, price, D(10))


async def live_price(prices: LatestPrices, sym: str, price: str) -> PriceQuote:
    def seen() -> PriceQuote | None:
        quote = prices.live(sym)
        return quote if quote is not None and quote.last == D(price) else None

    found: PriceQuote = await eventually(seen)
    return found


# --- live --------------------------------------------------------------------------------------------

async def test_a_tick_batch_sets_the_newest_trade_with_its_bid_and_ask(live: Live) -> None:
    sym = symbol()
    later, earlier = T0 + timedelta(seconds=2), T0 + timedelta(seconds=1)
    await live.ticks(sym, tick(sym, later, "101.5", "101.4", "101.6"), tick(sym, earlier, "100"))
    quote = await live_price(live.prices, sym, "101.5")
    assert quote == PriceQuote(sym, D("101.5"), later, D("101.4"), D("101.6"), source="live")
    assert live.prices.known()[sym] == D("101.5")
    assert (await live.prices.latest(sym)) == quote


async def test_a_bar_batch_sets_the_last_close_at_the_time_the_bar_closed(live: Live) -> None:
    sym = symbol()
    await live.bars(sym, bar(T0, "50"), bar(T0 + timedelta(hours=1), "52.25"), timeframe=Timeframe.H1)
    quote = await live_price(live.prices, sym, "52.25")
    assert (quote.time, quote.bid, quote.ask, quote.source) == (T0 + timedelta(hours=2), None, None, "live")


async def test_older_data_never_moves_the_price_back(live: Live) -> None:
    sym = symbol()
    await live.ticks(sym, tick(sym, T0 + timedelta(seconds=30), "101"))
    await live_price(live.prices, sym, "101")
    await live.bars(sym, bar(T0 - timedelta(minutes=1), "99"))             # closed at T0: older
    await live.ticks(sym, tick(sym, T0 + timedelta(seconds=10), "98"))     # an older tick arriving late
    await live.settled()
    assert live.prices.live(sym) == PriceQuote(sym, D(101), T0 + timedelta(seconds=30), source="live")
    await live.bars(sym, bar(T0, "102"))                                   # closed at T0 + 1 min: newer
    quote = await live_price(live.prices, sym, "102")
    assert quote.time == T0 + timedelta(minutes=1)


async def test_listeners_hear_every_new_price_and_a_refusing_listener_stops_no_one(live: Live) -> None:
    sym = symbol()
    heard: list[PriceQuote] = []
    refused: list[PriceQuote] = []

    async def refuse(quote: PriceQuote) -> None:
        if quote.symbol == sym:
            refused.append(quote)
            raise Invalid("this listener refuses every quote")

    async def record(quote: PriceQuote) -> None:
        if quote.symbol == sym:
            heard.append(quote)

    live.prices.listen(refuse)
    live.prices.listen(record)
    await live.ticks(sym, tick(sym, T0, "10"))
    await live_price(live.prices, sym, "10")
    await live.ticks(sym, tick(sym, T0 - timedelta(seconds=1), "9"))      # stale: nobody hears it
    await live.ticks(sym, tick(sym, T0 + timedelta(seconds=1), "11", "10.9", "11.1"))
    await live_price(live.prices, sym, "11")
    assert [(q.last, q.time) for q in heard] == [(D(10), T0), (D(11), T0 + timedelta(seconds=1))]
    assert refused == heard


async def test_malformed_market_events_are_ignored(live: Live) -> None:
    sym = symbol()
    await live.publish(Event(type=TICKS, subject=tick_subject(sym), source=SOURCE,
                             data={"symbol": sym, "ticks": [["soon", "abc", "1", None, None]]}))
    await live.publish(Event(type="md.bars", subject=bar_subject(Timeframe.M1, sym), source=SOURCE,
                             data={"symbol": sym, "timeframe": "7m", "bars": []}))
    await live.ticks(sym)                                                  # an empty batch: nothing to take
    await live.settled()
    assert live.prices.live(sym) is None
    await live.ticks(sym, tick(sym, T0, "3.5"))
    await live_price(live.prices, sym, "3.5")


async def test_a_live_price_is_used_without_asking_any_service(live: Live,
                                                               services: tuple[MarketServices, str]) -> None:
    fake, _ = services
    sym = symbol()
    fake.quotes[sym] = {"symbol": sym, "last": "1", "bid": None, "ask": None, "time": zulu(T0), "venue": "x",
                        "feed": None, "synthetic": False}
    await live.ticks(sym, tick(sym, T0, "7"))
    await live_price(live.prices, sym, "7")
    assert (await live.prices.latest(sym, token="user-token")).last == D(7)  # type: ignore[union-attr]
    assert not [c for c in fake.calls if c[1] == sym]


# --- fallbacks ---------------------------------------------------------------------------------------

async def test_a_symbol_not_seen_live_takes_data_bridges_quote_with_the_service_token(
        services: tuple[MarketServices, str], client: ServiceClient, tokens: ServiceTokens) -> None:
    fake, _ = services
    sym = symbol()
    fake.quotes[sym] = {"symbol": sym, "last": "64000.5", "bid": "64000", "ask": "64001", "time": zulu(T0),
                        "venue": "binance", "feed": str(uuid.uuid4()), "synthetic": False}
    prices = LatestPrices(client, tokens)
    quote = await prices.latest(sym)
    assert quote == PriceQuote(sym, D("64000.5"), T0, D(64000), D(64001), source="quote")
    calls = [c for c in fake.calls if c[1] == sym]
    assert [c[0] for c in calls] == ["quote"]
    authorization = calls[0][3]
    assert authorization is not None and authorization.startswith("Bearer ")
    claims = jwt.decode(authorization.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["sub"] == "service:trading-engine"
    assert prices.live(sym) is None and sym not in prices.known()


async def test_without_a_quote_the_last_stored_daily_close_is_used_with_the_callers_token(
        services: tuple[MarketServices, str], client: ServiceClient, tokens: ServiceTokens) -> None:
    fake, _ = services
    sym = symbol()
    fake.bars[sym] = [{"time": zulu(T0 - timedelta(days=d)), "open": "9", "high": "11", "low": "8",
                       "close": f"{10 + d}.5", "volume": "100"} for d in (2, 1, 0)]
    prices = LatestPrices(client, tokens)
    quote = await prices.latest(sym, token="the-users-token")
    assert quote == PriceQuote(sym, D("10.5"), T0, source="bar")
    calls = [c for c in fake.calls if c[1] == sym]
    assert [c[0] for c in calls] == ["quote", "ohlcv"]
    assert calls[1][2] == {"symbol": sym, "timeframe": "1d", "limit": "1"}
    assert {c[3] for c in calls} == {"Bearer the-users-token"}


async def test_a_symbol_known_nowhere_has_no_price(services: tuple[MarketServices, str],
                                                   client: ServiceClient, tokens: ServiceTokens) -> None:
    fake, _ = services
    sym = symbol()
    prices = LatestPrices(client, tokens)
    assert await prices.latest(sym, token="t") is None
    fake.bars[sym] = []
    assert await LatestPrices(client, tokens).latest(sym, token="t") is None


async def test_fallback_answers_are_reused_for_a_short_while_per_token(
        services: tuple[MarketServices, str], client: ServiceClient, tokens: ServiceTokens) -> None:
    fake, _ = services
    sym = symbol()
    fake.quotes[sym] = {"symbol": sym, "last": "5", "bid": None, "ask": None, "time": zulu(T0), "venue": "x",
                        "feed": None, "synthetic": True}
    prices = LatestPrices(client, tokens, fallback_ttl_s=0.3)

    def asked() -> int:
        return len([c for c in fake.calls if c[1] == sym])

    assert (await prices.latest(sym, token="a")).last == D(5)  # type: ignore[union-attr]
    fake.quotes[sym] = {**fake.quotes[sym], "last": "6"}
    assert (await prices.latest(sym, token="a")).last == D(5)  # type: ignore[union-attr]
    assert asked() == 1
    assert (await prices.latest(sym, token="b")).last == D(6)  # type: ignore[union-attr]
    assert asked() == 2
    await asyncio.sleep(0.35)
    assert (await prices.latest(sym, token="a")).last == D(6)  # type: ignore[union-attr]
    assert asked() == 3


async def test_a_failing_warehouse_is_reported_not_taken_for_a_missing_price(
        services: tuple[MarketServices, str], client: ServiceClient, tokens: ServiceTokens) -> None:
    fake, _ = services
    sym = symbol()
    fake.bars_down = True
    try:
        with pytest.raises(Unavailable, match="database-service"):
            await LatestPrices(client, tokens).latest(sym, token="t")
    finally:
        fake.bars_down = False


async def test_a_failing_data_bridge_still_leaves_the_stored_close(
        services: tuple[MarketServices, str], client: ServiceClient, tokens: ServiceTokens) -> None:
    fake, _ = services
    sym = symbol()
    fake.bars[sym] = [{"time": zulu(T0), "open": "9", "high": "11", "low": "8", "close": "10.25",
                       "volume": "100"}]
    fake.quotes_down = True
    try:
        quote = await LatestPrices(client, tokens).latest(sym, token="t")
    finally:
        fake.quotes_down = False
    assert quote is not None and quote.last == D("10.25") and quote.source == "bar"
