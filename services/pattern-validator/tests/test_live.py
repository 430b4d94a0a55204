"""Live detection end to end: closed bars on NATS in, `patterns.detected` events out through the outbox.

The window of a stored series is seeded from the real database-service with the service's own token,
which the real user-service issues for the shared service secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import httpx
import nats
import numpy as np
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pattern_validator import scan
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.detections import Kind, iso
from pattern_validator.live import LiveWindows
from pattern_validator.main import create_app
from user_service.main import create_app as create_user_service
from user_service.settings import Settings as UserSettings

from aitrading.events import Event
from aitrading.market.bars import Bar, OhlcvFrame
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import BarBatch, bar_subject, bars_event
from aitrading.testing import eventually, running_app, serve_app

from .conftest import path
from .services import database_service, delete_durables, pattern_settings, unique_symbol

SECRET = f"service-secret-{uuid4().hex}"
ADMIN_PASSWORD = "Admin password 123"


@dataclass
class Fleet:
    app: FastAPI
    nc: NatsClient
    admin: dict[str, str]
    market: httpx.AsyncClient


@pytest.fixture(scope="module")
async def fleet(warehouse: Path, database_url: str, nats_url: str) -> AsyncIterator[Fleet]:
    admin_email = f"admin-{uuid4().hex[:10]}@example.com"
    identity = UserSettings(database_url=database_url, nats_url=nats_url, admin_email=admin_email,
                            admin_password=ADMIN_PASSWORD, service_client_secret=SECRET, argon2_time_cost=1,
                            argon2_memory_kib=1024, argon2_parallelism=1, heartbeat_interval_s=60,
                            shutdown_grace_s=1)
    async with serve_app(create_user_service(identity)) as users_url:
        jwks = users_url + "/.well-known/jwks.json"
        async with database_service(warehouse, database_url=database_url, nats_url=nats_url, jwks_url=jwks,
                                    load_bundled_history=False) as market_url:
            urls = {"user-service": users_url, "database-service": market_url}
            settings = pattern_settings(database_url=database_url, nats_url=nats_url, jwks_url=jwks,
                                        service_client_secret=SECRET, service_urls=urls)
            durable = f"{settings.durable_prefix}-bars"
            app = create_app(settings)
            nc = await nats.connect(nats_url)
            try:
                async with running_app(app), httpx.AsyncClient(base_url=market_url) as market:
                    login = await market.post(users_url + "/api/v1/auth/login",
                                              json={"email": admin_email, "password": ADMIN_PASSWORD})
                    assert login.status_code == 200, login.text
                    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
                    await _consumer_ready(nc, durable)
                    yield Fleet(app, nc, admin, market)
            finally:
                await nc.close()
                await delete_durables(nats_url, durable)


async def _consumer_ready(nc: NatsClient, durable: str) -> None:
    """A new durable delivers only what is published after it exists: wait for it before publishing."""
    js = nc.jetstream()

    async def exists() -> bool:
        try:
            await js.consumer_info("MARKET", durable)
        except NotFoundError:
            return False
        return True

    await eventually(exists)


@dataclass
class Collector:
    """Every `patterns.detected` event on one subject, as it arrives."""

    events: list[Event]


async def _listen(nc: NatsClient, subject: str) -> Collector:
    collector = Collector([])

    async def received(msg: Msg) -> None:
        collector.events.append(Event.from_bytes(msg.data))

    await nc.subscribe(subject, cb=received)
    await nc.flush()
    return collector


def _bars(frame: OhlcvFrame) -> list[Bar]:
    def d(value: float) -> Decimal:
        return Decimal(f"{value:.6f}")

    return [Bar(int(frame.time_ms[i]), d(frame.open[i]), d(frame.high[i]), d(frame.low[i]), d(frame.close[i]),
                d(frame.volume[i])) for i in range(len(frame))]


async def _publish(nc: NatsClient, symbol: str, bars: list[Bar]) -> None:
    event = bars_event(symbol, "test-feed", Timeframe.D1, bars, source="test-feed")
    ack = await nc.jetstream().publish(event.subject, event.to_bytes(),
                                       headers={"Nats-Msg-Id": str(event.id)})
    assert ack.stream == "MARKET"


def _engulfing_after_a_fall() -> OhlcvFrame:
    """Twelve falling bars, a small black candle, then a white candle engulfing it."""
    closes = [140.0 - i for i in range(12)]
    opens = [c + 0.5 for c in closes]
    last = closes[-1]
    opens += [last + 0.3, last - 0.8]
    closes += [last - 0.3, last + 1.2]
    frame = path([(0, 0.0), (len(closes) - 1, 0.0)])
    high = [max(o, c) + 0.1 for o, c in zip(opens, closes, strict=True)]
    low = [min(o, c) - 0.1 for o, c in zip(opens, closes, strict=True)]
    return OhlcvFrame(frame.time_ms, np.array(opens), np.array(high), np.array(low), np.array(closes),
                      np.full(len(closes), 1000.0))


async def test_a_bar_completing_an_engulfing_after_stored_bars_is_published(fleet: Fleet) -> None:
    symbol = unique_symbol()
    frame = _engulfing_after_a_fall()
    bars = _bars(frame)
    # The history is stored (by an admin: public, so the service's own token reads it) ...
    stored = [{**{k: str(v) for k, v in b.as_json().items() if k != "time"}, "time": b.time.isoformat()}
              for b in bars[:-1]]
    imported = await fleet.market.post("/api/v1/market/import", headers=fleet.admin,
                                       json={"symbol": symbol, "timeframe": "1d", "bars": stored})
    assert imported.status_code == 201, imported.text
    collector = await _listen(fleet.nc, f"patterns.1d.{symbol}")
    # ... and only the last bar arrives live.
    await _publish(fleet.nc, symbol, bars[-1:])
    events = await eventually(lambda: _ready(collector.events))
    assert len(events) == 1
    event = events[0]
    assert event.type == "patterns.detected" and event.source == "pattern-validator"
    assert event.subject == f"patterns.1d.{symbol}"
    assert event.data["symbol"] == symbol and event.data["timeframe"] == "1d"
    assert event.data["time"] == iso(bars[-1].time_ms)
    engulfing = [d for d in event.data["detections"] if d["pattern"] == "engulfing"]
    assert len(engulfing) == 1 and engulfing[0]["direction"] == "bullish"
    # The fall before it, known only from the stored bars, makes it a confident reversal.
    assert engulfing[0]["confidence"] >= 0.75
    assert all(d["time"] == event.data["time"] for d in event.data["detections"])


async def _ready(events: list[Event]) -> list[Event] | None:
    return list(events) or None


async def test_a_series_unknown_to_the_warehouse_builds_its_window_from_events(fleet: Fleet) -> None:
    symbol = unique_symbol()
    frame = path([(0, 100), (30, 130), (45, 115), (60, 130), (80, 105)])  # a double top
    bars = _bars(frame)
    expected = scan.scan(OhlcvFrame.from_bars(bars), kinds={Kind.CANDLESTICK, Kind.CHART})
    times = sorted({d.time_ms for d in expected})
    collector = await _listen(fleet.nc, f"patterns.1d.{symbol}")
    for start in range(0, len(bars), 20):  # a few batches, as a feed catching up sends them
        await _publish(fleet.nc, symbol, bars[start:start + 20])

    async def all_in() -> bool:
        return len(collector.events) >= len(times)

    await eventually(all_in)
    await asyncio.sleep(0.3)  # nothing more is coming
    got = sorted((e.data["time"], d["pattern"], d["direction"], d["confidence"])
                 for e in collector.events for d in e.data["detections"])
    want = sorted((iso(d.time_ms), d.pattern, d.direction.value,
                   round(d.confidence, 4)) for d in expected)
    assert got == want
    assert any(p == "double_top" for _, p, _, _ in got)
    window = fleet.app.state.windows.window(symbol, Timeframe.D1)
    assert window is not None and len(window) == len(bars)


def _bar(day: int, close: float) -> Bar:
    value = Decimal(str(close))
    return Bar(day * 86_400_000, value, value + 1, value - 1, value, Decimal(10))


async def test_windows_keep_the_last_bars_and_forget_the_least_recent_series() -> None:
    windows = LiveWindows(None, window_bars=50, max_series=2, chart=ChartSettings())
    for day in range(120):
        await windows.on_bars(BarBatch("A", "v", Timeframe.D1, False, [_bar(day, 100 + day % 7)]))
    window = windows.window("A", Timeframe.D1)
    assert window is not None and len(window) == 50 and int(window.time_ms[-1]) == 119 * 86_400_000
    await windows.on_bars(BarBatch("B", "v", Timeframe.D1, False, [_bar(0, 5)]))
    await windows.on_bars(BarBatch("C", "v", Timeframe.D1, False, [_bar(0, 5)]))
    assert windows.window("A", Timeframe.D1) is None
    assert windows.window("B", Timeframe.D1) is not None and windows.window("C", Timeframe.D1) is not None


async def test_without_a_warehouse_a_replayed_bar_replaces_the_window_from_its_time_on() -> None:
    windows = LiveWindows(None, window_bars=50, max_series=10, chart=ChartSettings())
    await windows.on_bars(BarBatch("A", "v", Timeframe.D1, False, [_bar(d, 100.0) for d in range(10)]))
    results = await windows.on_bars(BarBatch("A", "v", Timeframe.D1, False, [_bar(3, 101.0)]))
    assert [r.time_ms for r in results] == [3 * 86_400_000]
    window = windows.window("A", Timeframe.D1)
    assert window is not None and window.time_ms.tolist() == [d * 86_400_000 for d in range(4)]
    assert window.close.tolist() == [100.0, 100.0, 100.0, 101.0]
    # A gap keeps what there is when nothing is stored to fill it.
    await windows.on_bars(BarBatch("A", "v", Timeframe.D1, False, [_bar(9, 102.0)]))
    window = windows.window("A", Timeframe.D1)
    assert window is not None and window.time_ms.tolist() == [d * 86_400_000 for d in (0, 1, 2, 3, 9)]


async def test_bars_missing_between_events_are_filled_from_the_warehouse(fleet: Fleet) -> None:
    symbol = unique_symbol()
    frame = _engulfing_after_a_fall()
    bars = _bars(frame)
    stored = [{**{k: str(v) for k, v in b.as_json().items() if k != "time"}, "time": b.time.isoformat()}
              for b in bars[:-1]]
    collector = await _listen(fleet.nc, f"patterns.1d.{symbol}")
    # The first five bars arrive live before anything is stored ...
    await _publish(fleet.nc, symbol, bars[:5])

    async def window_of_five() -> bool:
        window = fleet.app.state.windows.window(symbol, Timeframe.D1)
        return window is not None and len(window) == 5

    await eventually(window_of_five)
    imported = await fleet.market.post("/api/v1/market/import", headers=fleet.admin,
                                       json={"symbol": symbol, "timeframe": "1d", "bars": stored})
    assert imported.status_code == 201, imported.text
    # ... then the last one, eight bars later: the ones between come from the warehouse.
    await _publish(fleet.nc, symbol, bars[-1:])
    last = iso(bars[-1].time_ms)

    async def engulfing() -> list[dict[str, object]]:
        return [d for e in collector.events if e.data["time"] == last for d in e.data["detections"]
                if d["pattern"] == "engulfing"]

    found = await eventually(engulfing)
    assert found[0]["direction"] == "bullish"
    window = fleet.app.state.windows.window(symbol, Timeframe.D1)
    assert window is not None and window.time_ms.tolist() == frame.time_ms.tolist()


async def test_a_malformed_bar_event_is_acknowledged_and_the_next_one_still_detected(fleet: Fleet) -> None:
    symbol = unique_symbol()
    collector = await _listen(fleet.nc, f"patterns.1d.{symbol}")
    rows = [[0, "not a price", "1", "1", "1", "1"]]
    malformed = Event.new("md.bars", bar_subject(Timeframe.D1, symbol), source="test-feed",
                          data={"symbol": symbol, "venue": "test-feed", "timeframe": "1d", "bars": rows})
    await fleet.nc.jetstream().publish(malformed.subject, malformed.to_bytes(),
                                       headers={"Nats-Msg-Id": str(malformed.id)})
    frame = _engulfing_after_a_fall()
    await _publish(fleet.nc, symbol, _bars(frame))
    await eventually(lambda: _ready(collector.events))
    times = {iso(int(t)) for t in frame.time_ms}
    assert {e.data["time"] for e in collector.events} <= times
    durable = f"{fleet.app.state.settings.durable_prefix}-bars"

    async def settled() -> bool:
        info = await fleet.nc.jetstream().consumer_info("MARKET", durable)
        return info.num_ack_pending == 0 and info.num_redelivered == 0

    await eventually(settled)
