"""Features on bar close: md.bars in over NATS, features.computed out through the outbox, the rolling
window seeded from database-service, user sets marked `stream` included, old bars not recomputed."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from uuid import uuid4

import httpx
import numpy as np
import pytest
import talib
from fastapi import FastAPI
from feature_engineering.events import features_subject
from feature_engineering.settings import DEFAULT_STREAM_INDICATORS, Settings

from aitrading.events import Event, EventBus
from aitrading.market import indicators
from aitrading.market.bars import Bar
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import bars_event

pytestmark = pytest.mark.slow  # starts database-service (chDB) and streams over real NATS

SYMBOL = f"FE{uuid4().hex[:8].upper()}"
DAY_MS = 86_400_000
FIRST_DAY_MS = 19_000 * DAY_MS
HISTORY = 260


def _bar(i: int, *, bump: float = 0.0) -> Bar:
    rng = np.random.default_rng(i)  # the same bar for the same index, whoever builds it
    close = 100 + 10 * np.sin(i / 15) + rng.normal(0, 1) + bump
    spread = abs(rng.normal(0, 1)) + 0.5
    open_ = close + rng.normal(0, 0.5)
    return Bar(FIRST_DAY_MS + i * DAY_MS, Decimal(f"{open_:.4f}"),
               Decimal(f"{max(open_, close) + spread:.4f}"), Decimal(f"{min(open_, close) - spread:.4f}"),
               Decimal(f"{close:.4f}"), Decimal(1000 + i))


def _closes(bars: list[Bar]) -> tuple[np.ndarray, ...]:
    return tuple(np.array([float(getattr(b, k)) for b in bars]) for k in ("high", "low", "close"))


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(stream_subject=f"md.bar.*.{SYMBOL}", stream_window_bars=300)


@pytest.fixture(scope="module")
async def history(app: FastAPI, admin_headers: dict[str, str],
                  database_service: Callable[[], httpx.AsyncClient]) -> list[Bar]:
    """Daily bars 0..HISTORY-1 of SYMBOL, imported by an admin (public, so the stream's token sees them)."""
    bars = [_bar(i) for i in range(HISTORY)]
    rows = [{k: str(v) for k, v in b.as_json().items() if k != "time"} | {"time": b.time.isoformat()}
            for b in bars]
    async with database_service() as dbs:
        response = await dbs.post("/api/v1/market/import", headers=admin_headers,
                                  json={"symbol": SYMBOL, "timeframe": "1d", "bars": rows})
    assert response.status_code == 201, response.text
    return bars


@pytest.fixture(scope="module")
async def feed(nats_url: str) -> AsyncIterator[EventBus]:
    bus = EventBus(nats_url, source="feature-engineering-test-feed")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture(scope="module")
async def computed(nats_url: str, app: FastAPI) -> AsyncIterator[asyncio.Queue[Event]]:
    """Every features.computed event of SYMBOL on NATS, in order."""
    seen: asyncio.Queue[Event] = asyncio.Queue()
    listener = EventBus(nats_url, source="feature-engineering-test-listener")

    async def collect(event: Event) -> None:
        await seen.put(event)

    listener.subscribe(features_subject("1d", SYMBOL), collect)
    await listener.start()
    yield seen
    await listener.stop()


async def _next(seen: asyncio.Queue[Event], count: int = 1) -> list[Event]:
    return [await asyncio.wait_for(seen.get(), timeout=20) for _ in range(count)]


async def test_closed_bars_publish_their_features_computed_over_the_stored_history(
        history: list[Bar], feed: EventBus, computed: asyncio.Queue[Event]) -> None:
    new = [_bar(HISTORY), _bar(HISTORY + 1)]
    await feed.publish(bars_event(SYMBOL, "test", Timeframe.D1, new, source="test"))
    events = await _next(computed, 2)

    assert [e.type for e in events] == ["features.computed"] * 2
    assert events[0].subject == f"features.1d.{SYMBOL}" and events[0].source == "feature-engineering"
    assert [e.data["time"] for e in events] == [b.time.strftime("%Y-%m-%dT%H:%M:%SZ") for b in new]
    assert all(e.data["symbol"] == SYMBOL and e.data["timeframe"] == "1d" for e in events)
    canonical = {indicators.parse(n).canonical for n in DEFAULT_STREAM_INDICATORS}
    assert set(events[0].data["values"]) == canonical

    high, low, close = _closes(history + new)
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    expected = {"sma_20": talib.SMA(close, 20), "rsi_14": talib.RSI(close, 14),
                "macd_12_26_9_macd": macd, "macd_12_26_9_signal": signal, "macd_12_26_9_hist": hist,
                "atr_14": talib.ATR(high, low, close, 14), "adx_14": talib.ADX(high, low, close, 14),
                "bbands_20_2_0_lower": talib.BBANDS(close, 20, 2, 2, 0)[2]}
    for offset, event in zip((-2, -1), events, strict=True):
        for name, values in expected.items():
            assert event.data["values"][name] == pytest.approx(values[offset], rel=1e-9), name


async def test_a_user_set_marked_stream_joins_the_streaming_set(
        history: list[Bar], client: httpx.AsyncClient, user_headers: dict[str, str], feed: EventBus,
        computed: asyncio.Queue[Event]) -> None:
    created = await client.post("/api/v1/features/sets", headers=user_headers,
                                json={"name": "live", "indicators": ["cci_7", "rsi"], "stream": True})
    assert created.status_code == 201, created.text
    await feed.publish(bars_event(SYMBOL, "test", Timeframe.D1, [_bar(HISTORY + 2)], source="test"))
    (event,) = await _next(computed)
    assert event.data["time"] == _bar(HISTORY + 2).time.strftime("%Y-%m-%dT%H:%M:%SZ")
    values = event.data["values"]
    assert "cci_7" in values and "rsi" not in values and "rsi_14" in values
    high, low, close = _closes(history + [_bar(HISTORY + i) for i in range(3)])
    assert values["cci_7"] == pytest.approx(talib.CCI(high, low, close, 7)[-1], rel=1e-9)


async def test_a_corrected_bar_is_recomputed_and_an_old_one_is_not(
        history: list[Bar], feed: EventBus, computed: asyncio.Queue[Event]) -> None:
    # The consumer handles bars in order: had the old bar produced an event, it would come first.
    await feed.publish(bars_event(SYMBOL, "test", Timeframe.D1, [_bar(HISTORY + 3)], source="test"))
    corrected = _bar(HISTORY + 3, bump=5.0)
    await feed.publish(bars_event(SYMBOL, "test", Timeframe.D1, [corrected], source="test"))
    await feed.publish(bars_event(SYMBOL, "test", Timeframe.D1, [_bar(100)], source="test"))
    await feed.publish(bars_event(SYMBOL, "test", Timeframe.D1, [_bar(HISTORY + 4)], source="test"))
    first, again, after = await _next(computed, 3)
    assert first.data["time"] == again.data["time"] == corrected.time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert again.data["values"]["return_1"] > first.data["values"]["return_1"]
    assert after.data["time"] == _bar(HISTORY + 4).time.strftime("%Y-%m-%dT%H:%M:%SZ")


def _minute_bars(start_ms: int, count: int) -> list[Bar]:
    rng = np.random.default_rng(7)
    closes = 50 * np.exp(np.cumsum(rng.normal(0, 0.002, count)))
    return [Bar(start_ms + i * 60_000, Decimal(f"{c:.5f}"), Decimal(f"{c * 1.001:.5f}"),
                Decimal(f"{c * 0.999:.5f}"), Decimal(f"{c:.5f}"), Decimal(10)) for i, c in enumerate(closes)]


async def test_a_series_unknown_to_the_warehouse_is_computed_from_the_feed_and_reseeded_after_a_gap(
        app: FastAPI) -> None:
    stream, symbol = app.state.stream, f"GAP{uuid4().hex[:8].upper()}"
    bars = _minute_bars(1_700_000_000_000 - 1_700_000_000_000 % 60_000, 40)
    async with app.state.db.sessionmaker() as session:
        seeds = stream.windows.seeds
        out = [await stream.compute(session, symbol, Timeframe.M1, [b]) for b in bars[:30]]
        assert stream.windows.seeds == seeds + 1  # seeded once (a 404: nothing stored), then appended
        assert [len(e) for e in out] == [1] * 30
        assert out[18][0].data["values"]["sma_20"] is None
        closes = np.array([float(b.close) for b in bars[:30]])
        assert out[19][0].data["values"]["sma_20"] == pytest.approx(closes[:20].mean(), rel=1e-12)
        (after_gap,) = await stream.compute(session, symbol, Timeframe.M1, bars[35:36])  # 5 minutes missing
        assert stream.windows.seeds == seeds + 2
        # Still nothing stored: the bars the feed gave are kept, and the gap bar follows them.
        assert len(stream.windows.frame(symbol, Timeframe.M1)) == 31
        expected = np.r_[closes[-19:], float(bars[35].close)].mean()
        assert after_gap.data["values"]["sma_20"] == pytest.approx(expected, rel=1e-12)


async def test_per_bar_latency_of_the_streaming_set(app: FastAPI, capsys: pytest.CaptureFixture[str]) -> None:
    """Figures, not a timed assertion: the handler's work per closed bar on a 300-bar window."""
    stream, symbol = app.state.stream, f"LAT{uuid4().hex[:8].upper()}"
    bars = _minute_bars(1_600_000_000_000 - 1_600_000_000_000 % 60_000, 1300)
    handler_s, compute_s = [], []
    async with app.state.db.sessionmaker() as session:
        for i, bar in enumerate(bars):
            started = time.perf_counter()
            events = await stream.compute(session, symbol, Timeframe.M1, [bar])
            elapsed = time.perf_counter() - started
            assert len(events) == 1
            if i >= 300:
                handler_s.append(elapsed)
                frame = stream.windows.frame(symbol, Timeframe.M1)
                specs = await stream.specs(session)
                started = time.perf_counter()
                indicators.compute(frame, specs)
                compute_s.append(time.perf_counter() - started)
    assert events[0].data["values"]["rsi_14"] is not None

    def pct(samples: list[float], q: float) -> float:
        return statistics.quantiles(samples, n=100)[q - 1] * 1000

    with capsys.disabled():
        print(f"\nper-bar streaming ({len(handler_s)} bars, {len(specs)} features, window "
              f"{len(frame)} bars): handler p50 {pct(handler_s, 50):.2f} ms p99 {pct(handler_s, 99):.2f} ms; "
              f"compute alone p50 {pct(compute_s, 50):.2f} ms p99 {pct(compute_s, 99):.2f} ms")
