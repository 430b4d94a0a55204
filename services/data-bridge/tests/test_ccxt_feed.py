"""The CCXT feed against a local server speaking Binance's public REST API, and its pure parts."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from data_bridge.ccxt_cursors import (
    TICK_SIZE,
    Backoff,
    CandleCursor,
    MarketSteps,
    TickerCursor,
    TradeCursor,
    quantum_of,
    to_decimal,
)
from data_bridge.ccxt_feed import CcxtFeed, CcxtFeedError, CcxtParams
from data_bridge.feeds import FeedContext, FeedDeps
from data_bridge.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))  # the fake exchange beside this file
from fake_exchange import MINUTE_MS, FakeBinance, create_fake_binance, stream_urls_for, urls_for
from pydantic import ValidationError

from aitrading.client import ServiceClient
from aitrading.errors import Invalid
from aitrading.market.bars import Bar, Tick
from aitrading.market.history import MarketData
from aitrading.market.timeframes import Timeframe
from aitrading.testing import eventually, serve_app


@dataclass
class RecordingSink:
    """Stands where the normalizing sink stands: keeps what the feed handed over."""

    ticks_in: list[Tick] = field(default_factory=list)
    bars_in: list[tuple[Timeframe, str, Bar]] = field(default_factory=list)

    async def ticks(self, feed: FeedContext, ticks: Sequence[Tick]) -> None:
        self.ticks_in.extend(ticks)

    async def bars(self, feed: FeedContext, timeframe: Timeframe, symbol: str, bars: Sequence[Bar]) -> None:
        self.bars_in.extend((timeframe, symbol, b) for b in bars)


@dataclass
class RunningFeed:
    feed: CcxtFeed
    context: FeedContext
    sink: RecordingSink
    task: asyncio.Task[None]


@pytest.fixture(scope="module", autouse=True)
def ccxt_imported() -> None:
    """Import ccxt once up front (it takes seconds), so the waits below time the feed, not the import."""
    import ccxt.async_support
    import ccxt.pro  # noqa: F401


@pytest.fixture
async def binance() -> AsyncIterator[tuple[FakeBinance, str]]:
    state = FakeBinance()
    async with serve_app(create_fake_binance(state)) as url:
        yield state, url


@asynccontextmanager
async def ccxt_feed(symbols: list[str], base_url: str, **params: Any) -> AsyncIterator[RunningFeed]:
    settings = Settings(feed_backoff_initial_s=0.05, feed_backoff_max_s=0.2)
    deps = FeedDeps(market=MarketData(ServiceClient()), mt5_agents=None, settings=settings)
    parsed = CcxtParams.model_validate({"exchange": "binance", "urls": urls_for(base_url),
                                        "poll_interval_s": 0.1, "use_websocket": False, **params})
    CcxtFeed.check(symbols, parsed)
    context = FeedContext(id=uuid4(), kind="ccxt", venue=CcxtFeed.venue_for(parsed), symbols=symbols,
                          synthetic=False)
    sink = RecordingSink()
    feed = CcxtFeed(context, parsed, sink, deps)
    task = asyncio.create_task(feed.run())
    try:
        yield RunningFeed(feed, context, sink, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def pair(prefix: str = "T") -> tuple[str, str]:
    return f"{prefix}{uuid4().hex[:6].upper()}", "USDT"


# --- against the fake exchange ---


async def test_trades_become_ticks_in_order_without_duplicates_across_polls(
        binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    market = state.add_market(base, quote)
    now = state.now_ms()
    state.add_trades(market, [(now - 3000, "101.50", "0.25000"), (now - 2000, "101.75", "0.10000"),
                              (now - 2000, "101.70", "1.00000")])
    symbol = f"{base}/{quote}"
    async with ccxt_feed([symbol], url, channels=["trades"]) as running:
        await eventually(lambda: len(running.sink.ticks_in) == 3)
        # Later trades, one in the same millisecond as the last one seen: the next polls ask from that
        # millisecond on (the exchange answers the already delivered ones again) and deliver only news.
        state.add_trades(market, [(now - 2000, "101.80", "0.50000"), (now - 1000, "102.00", "2.00000")])
        await eventually(lambda: len(running.sink.ticks_in) == 5)
        await eventually(lambda: len(state.calls("/api/v3/aggTrades")) >= 4)
        assert not running.task.done()
    ticks = running.sink.ticks_in
    assert [(t.time_ms, t.price, t.size) for t in ticks] == [
        (now - 3000, Decimal("101.50"), Decimal("0.25000")),
        (now - 2000, Decimal("101.75"), Decimal("0.10000")),
        (now - 2000, Decimal("101.70"), Decimal("1.00000")),
        (now - 2000, Decimal("101.80"), Decimal("0.50000")),
        (now - 1000, Decimal("102.00"), Decimal("2.00000")),
    ]
    assert {t.symbol for t in ticks} == {symbol}
    polls = state.calls("/api/v3/aggTrades")
    assert "startTime" not in polls[0]  # the first poll takes the latest trades
    assert polls[-1]["startTime"] == str(now - 1000)  # later ones ask from the last trade seen


async def test_klines_become_closed_bars_and_the_forming_candle_is_held_back(
        binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    market = state.add_market(base, quote)
    # The exchange's clock runs ten minutes behind ours and stands 20 s into a minute: candles close by
    # the exchange's time (by ours, the forming candle would look long closed), and no minute ends
    # while the test runs.
    local = int(time.time() * 1000)
    state.clock_offset_ms = Timeframe.M1.bucket_ms(local - 10 * MINUTE_MS) + 20_000 - local
    current = Timeframe.M1.bucket_ms(state.now_ms())
    first = current - 4 * MINUTE_MS
    state.set_klines(market, first, [("10.00", "10.50", "9.90", "10.20", "5.00000"),
                                     ("10.20", "10.40", "10.10", "10.30", "3.50000"),
                                     ("10.30", "10.30", "10.00", "10.05", "1.25000"),
                                     ("10.05", "10.60", "10.05", "10.55", "7.00000"),
                                     ("10.55", "10.70", "10.50", "10.65", "0.50000")])  # forming
    async with ccxt_feed([f"{base}/{quote}"], url, channels=["candles"], candle_backfill=3) as running:
        await eventually(lambda: len(running.sink.bars_in) == 3)
        await asyncio.sleep(0.3)  # several poll intervals: nothing more until the forming candle closes
        assert not running.task.done()
    bars = running.sink.bars_in
    assert [(tf, b.time_ms) for tf, _, b in bars] == [(Timeframe.M1, first + i * MINUTE_MS)
                                                      for i in (1, 2, 3)]
    assert bars[0][2] == Bar(first + MINUTE_MS, Decimal("10.20"), Decimal("10.40"), Decimal("10.10"),
                             Decimal("10.30"), Decimal("3.50000"))
    assert len(state.calls("/api/v3/klines")) == 1  # the next poll waits for the next candle to close


async def test_ticker_quotes_become_ticks_only_when_they_move(binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    market = state.add_market(base, quote)
    state.tickers[market] = {"last": "50.10", "bid": "50.09", "ask": "50.11"}
    async with ccxt_feed([f"{base}/{quote}"], url, channels=["ticker"]) as running:
        await eventually(lambda: len(running.sink.ticks_in) == 1)
        await eventually(lambda: len(state.calls("/api/v3/ticker/24hr")) >= 3)
        state.tickers[market] = {"last": "50.20", "bid": "50.19", "ask": "50.21"}
        await eventually(lambda: len(running.sink.ticks_in) == 2)
    assert [(t.price, t.bid, t.ask, t.size) for t in running.sink.ticks_in] == [
        (Decimal("50.10"), Decimal("50.09"), Decimal("50.11"), Decimal(0)),
        (Decimal("50.20"), Decimal("50.19"), Decimal("50.21"), Decimal(0))]


async def test_rate_limit_and_unavailable_answers_back_off_and_recover(
        binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    market = state.add_market(base, quote)
    now = state.now_ms()
    state.add_trades(market, [(now - 500, "7.00", "1.00000")])
    state.fail_next(429)
    state.fail_next(503, 2)
    async with ccxt_feed([f"{base}/{quote}"], url, channels=["trades"]) as running:
        await eventually(lambda: len(running.sink.ticks_in) == 1)
        counters = running.context.counters
        assert counters.reconnects == 3
        assert counters.errors == 3
        assert counters.last_error is not None and "ExchangeNotAvailable" in counters.last_error
        state.add_trades(market, [(now - 100, "7.10", "2.00000")])
        await eventually(lambda: len(running.sink.ticks_in) == 2)  # recovered: polling goes on
        assert counters.reconnects == 3
    assert [t.price for t in running.sink.ticks_in] == [Decimal("7.00"), Decimal("7.10")]


async def test_an_unknown_symbol_fails_the_feed_naming_it(binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    state.add_market(base, quote)
    async with ccxt_feed([f"{base}/{quote}", "NOPE/USDT"], url, channels=["trades"]) as running:
        await eventually(running.task.done)
        with pytest.raises(CcxtFeedError, match="binance has no market NOPE/USDT"):
            running.task.result()
        assert len(state.calls("/api/v3/aggTrades")) == 0  # refused before any polling


async def test_an_api_url_name_the_exchange_lacks_fails_the_feed_clearly(
        binance: tuple[FakeBinance, str]) -> None:
    _, url = binance
    async with ccxt_feed(["BTC/USDT"], url, urls={"nonsense": "http://127.0.0.1:1"}) as running:
        await eventually(running.task.done)
        with pytest.raises(CcxtFeedError, match="urls: binance has no API url named 'nonsense'"):
            running.task.result()


# --- parameters ---


def test_unknown_exchange_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        CcxtParams.model_validate({"exchange": "not-an-exchange"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("exchange",)
    assert "not an exchange ccxt knows" in error["msg"]


def test_exchange_ids_are_those_of_ccxt() -> None:
    import ccxt

    assert CcxtParams.model_validate({"exchange": "Kraken"}).exchange == "kraken"
    for exchange in ccxt.exchanges:
        CcxtParams.model_validate({"exchange": exchange})


def test_symbols_must_be_unified_pairs() -> None:
    params = CcxtParams.model_validate({"exchange": "binance"})
    with pytest.raises(Invalid) as caught:
        CcxtFeed.check(["BTC/USDT", "ETHUSDT"], params)
    assert caught.value.errors == [{"field": "symbols.1",
                                    "reason": "a ccxt symbol is BASE/QUOTE, e.g. BTC/USDT"}]


def test_urls_must_be_absolute() -> None:
    with pytest.raises(ValidationError) as caught:
        CcxtParams.model_validate({"exchange": "binance", "urls": {"public": "api.example.com"}})
    assert caught.value.errors()[0]["loc"] == ("urls",)


# --- the pure parts ---


def test_floats_become_the_decimals_the_exchange_sent_quantized_to_the_market_step() -> None:
    step = quantum_of(0.01, TICK_SIZE)
    assert step == Decimal("0.01")
    assert to_decimal(27123.4, step) == Decimal("27123.40")
    assert to_decimal(0.1 + 0.2, step) == Decimal("0.30")  # float noise of a derived value is removed
    assert to_decimal(0.00001234) == Decimal("0.00001234")
    assert to_decimal(float("nan")) is None
    assert quantum_of(8, 2) == Decimal("1E-8")  # decimal places
    assert quantum_of(0.5, TICK_SIZE) == Decimal("0.1")
    assert quantum_of(10.0, TICK_SIZE) == Decimal("1")
    assert quantum_of(None, TICK_SIZE) is None


def test_trade_cursor_dedupes_by_id_and_orders_by_time() -> None:
    cursor = TradeCursor(capacity=100)
    first = cursor.fresh([{"id": "3", "timestamp": 20}, {"id": "1", "timestamp": 10},
                          {"id": "2", "timestamp": 20}])
    assert [t["id"] for t in first] == ["1", "2", "3"]
    again = cursor.fresh([{"id": "2", "timestamp": 20}, {"id": "3", "timestamp": 20},
                          {"id": "4", "timestamp": 30}])
    assert [t["id"] for t in again] == ["4"]
    assert cursor.since(now_ms=40) == 30
    assert cursor.since(now_ms=30 + 11 * 60_000) is None  # quiet for long: ask for the latest instead


def test_candle_cursor_delivers_each_closed_candle_once() -> None:
    cursor = CandleCursor(Timeframe.M1)
    candles = [[0, 1, 1, 1, 1, 1], [60_000, 2, 2, 2, 2, 2], [120_000, 3, 3, 3, 3, 3]]
    assert [c[0] for c in cursor.closed(candles, now_ms=150_000)] == [0, 60_000]
    # The forming candle grows, then a later candle appears: it is delivered once, in its last form.
    assert cursor.closed([[120_000, 3, 4, 3, 4, 5]], now_ms=170_000) == []
    assert cursor.closed([[180_000, 4, 4, 4, 4, 1]], now_ms=185_000) == [[120_000, 3, 4, 3, 4, 5]]
    assert cursor.closed([[120_000, 3, 4, 3, 4, 5], [180_000, 4, 4, 4, 4, 1]], now_ms=241_000) == [
        [180_000, 4, 4, 4, 4, 1]]
    assert cursor.next_close_ms() == 300_000


def test_ticker_cursor_skips_unchanged_quotes_and_never_goes_back_in_time() -> None:
    cursor, steps = TickerCursor(), MarketSteps(Decimal("0.01"), None)
    first = cursor.tick("X/Y", {"last": 1.5, "bid": 1.49, "ask": 1.51, "timestamp": 1000}, steps, 0)
    assert first == Tick("X/Y", 1000, Decimal("1.50"), Decimal(0), Decimal("1.49"), Decimal("1.51"))
    assert cursor.tick("X/Y", {"last": 1.5, "bid": 1.49, "ask": 1.51, "timestamp": 2000}, steps, 0) is None
    moved = cursor.tick("X/Y", {"last": None, "bid": 1.50, "ask": 1.53, "timestamp": 900}, steps, 0)
    assert moved is not None and moved.price == Decimal("1.52") and moved.time_ms == 1000


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 1.0


# --- through the service ---


async def test_a_ccxt_feed_created_through_the_api_publishes_the_exchanges_trades(
        bridge: Any, listen: Any, binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    market = state.add_market(base, quote)
    now = state.now_ms()
    state.add_trades(market, [(now - 400, "3.10", "1.00000"), (now - 300, "3.20", "0.50000")])
    async with bridge() as running, listen(f"md.tick.{base}-{quote}") as listener:
        refused = await running.client.post("/api/v1/feeds", json={
            "kind": "ccxt", "symbols": [f"{base}/{quote}"], "params": {"exchange": "nasdaq-of-dreams"}})
        assert refused.status_code == 422
        assert [e["field"] for e in refused.json()["errors"]] == ["params.exchange"]
        created = await running.client.post("/api/v1/feeds", json={
            "kind": "ccxt", "symbols": [f"{base.lower()}/{quote.lower()}"],
            "params": {"exchange": "binance", "urls": urls_for(url), "use_websocket": False,
                       "poll_interval_s": 0.1}})
        assert created.status_code == 201, created.text
        assert created.json()["venue"] == "binance"
        events = await listener.wait_for(lambda ev: sum(len(e.data["ticks"]) for e in ev) >= 2, 20)
    rows = [row for event in events for row in event.data["ticks"]]
    assert [(r[0], r[1], r[2]) for r in rows] == [(now - 400, "3.10", "1.00000"),
                                                  (now - 300, "3.20", "0.50000")]
    assert {(e.data["symbol"], e.data["venue"], e.data["synthetic"]) for e in events} == {
        (f"{base}/{quote}", "binance", False)}


async def test_websocket_trades_arrive_as_ticks_and_a_dropped_stream_is_resubscribed(
        binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    base, quote = pair()
    market = state.add_market(base, quote)
    now = state.now_ms()
    async with ccxt_feed([f"{base}/{quote}"], url, channels=["trades"], use_websocket="auto",
                         urls=stream_urls_for(url)) as running:
        await asyncio.wait_for(state.subscribed.wait(), 15)
        await state.push_trade(market, now, "20.00", "1.00000")
        await state.push_trade(market, now + 5, "20.05", "0.30000")
        await eventually(lambda: len(running.sink.ticks_in) == 2)
        await state.drop_streams()
        await asyncio.wait_for(state.subscribed.wait(), 15)  # ccxt.pro connected and subscribed again
        await state.push_trade(market, now + 9, "20.10", "0.70000")
        await eventually(lambda: len(running.sink.ticks_in) == 3)
        assert running.context.counters.reconnects >= 1
    assert [(t.time_ms, t.price, t.size) for t in running.sink.ticks_in] == [
        (now, Decimal("20.00"), Decimal("1.00000")), (now + 5, Decimal("20.05"), Decimal("0.30000")),
        (now + 9, Decimal("20.10"), Decimal("0.70000"))]
    assert state.calls("/api/v3/aggTrades") == []  # no REST polling of trades


async def test_a_symbol_the_exchange_stops_knowing_ends_alone_and_the_feed_fails_when_none_is_left(
        binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    (b1, q1), (b2, q2) = pair(), pair()
    delisted, kept = state.add_market(b1, q1), state.add_market(b2, q2)
    now = state.now_ms()
    state.add_trades(kept, [(now - 100, "1.00", "1.00000")])
    async with ccxt_feed([f"{b1}/{q1}", f"{b2}/{q2}"], url, channels=["trades"]) as running:
        await eventually(lambda: len(running.sink.ticks_in) == 1)
        del state.trades[delisted]  # Binance now answers -1121 "Invalid symbol." for it
        await eventually(lambda: running.context.counters.last_error is not None
                         and f"{b1}/{q1}" in running.context.counters.last_error)
        assert "BadSymbol" in running.context.counters.last_error or "Invalid symbol" in (
            running.context.counters.last_error)
        state.add_trades(kept, [(now - 50, "1.01", "1.00000")])
        await eventually(lambda: len(running.sink.ticks_in) == 2)  # the other symbol goes on
        assert not running.task.done()
        del state.trades[kept]
        await eventually(running.task.done)
        with pytest.raises(CcxtFeedError, match=f"{b2}/{q2}: binance refused the symbol"):
            running.task.result()
