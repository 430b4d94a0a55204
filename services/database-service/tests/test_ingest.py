"""The feed consumer over real NATS: md.bars and md.ticks stored once, however often they arrive."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import httpx
import nats
from database_service.events import TICK_SUBJECTS, TickColumns
from database_service.ingest import StreamConsumer, _insert_ticks
from fastapi import FastAPI

from aitrading.events import EventBus
from aitrading.market.bars import Bar, datetime_to_ms
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import bars_event, ticks_event

Headers = dict[str, str]
# Feed data older than its retention (ticks 30 days, 1m bars 365) is dropped at insert: use recent times.
RECENT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


def minute_bars(count: int) -> list[Bar]:
    start = datetime_to_ms(RECENT)
    return [Bar(start + i * 60_000, Decimal("100.5") + i, Decimal("101.25") + i, Decimal("99.75") + i,
                Decimal("100.125") + i, Decimal("3.000000000001")) for i in range(count)]


def tick_rows(count: int, offset_ms: int = 0) -> list[list[Any]]:
    start = datetime_to_ms(RECENT) + offset_ms
    return [[start + i * 250, f"{43000 + i}.15", "0.002", f"{42999 + i}.9",
             None if i % 2 else f"{43001 + i}.1"] for i in range(count)]


async def stored_ticks(client: httpx.AsyncClient, headers: Headers, symbol: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/market/ticks", headers=headers,
                                params={"symbol": symbol, "limit": 100_000})
    assert response.status_code == 200, response.text
    ticks: list[dict[str, Any]] = response.json()["ticks"]
    return ticks


async def raw_tick_count(app: FastAPI, symbol: str) -> int:
    """Rows as stored, without FINAL: what an insert really wrote."""
    [[count]] = await app.state.warehouse.rows(
        "SELECT count() FROM aitrading.ticks WHERE symbol = {s:String}", {"s": symbol})
    return int(count)


async def test_published_bars_and_ticks_are_stored(app: FastAPI, client: httpx.AsyncClient,
                                                   user_headers: Headers, h: SimpleNamespace) -> None:
    bus: EventBus = app.state.bus
    symbol = h.unique_symbol("ING") + "/USDT"
    bars = minute_bars(5)
    rows = tick_rows(40)
    await bus.publish_many([bars_event(symbol, "test-venue", Timeframe.M1, bars, source="test"),
                            ticks_event(symbol, "test-venue", rows, source="test", synthetic=True)])

    async def bars_stored() -> list[dict[str, Any]]:
        response = await client.get("/api/v1/market/ohlcv", headers=user_headers,
                                    params={"symbol": symbol, "timeframe": "1m"})
        return response.json()["bars"] if response.status_code == 200 else []

    stored = await h.eventually(bars_stored)
    assert [(b["time"], b["open"], b["high"], b["low"], b["close"], b["volume"]) for b in stored] == [
        (h.iso(RECENT + timedelta(minutes=i)), str(b.open), str(b.high), str(b.low), str(b.close),
         str(b.volume)) for i, b in enumerate(bars)]
    ticks = await h.eventually(lambda: stored_ticks(client, user_headers, symbol))
    assert len(ticks) == 40
    assert ticks[1] == {"time": h.iso(RECENT)[:-1] + ".250Z", "price": "43001.15", "size": "0.002",
                        "bid": "43000.9", "ask": None}
    symbols = (await client.get("/api/v1/market/symbols", headers=user_headers)).json()
    listed = {s["symbol"]: s for s in symbols}
    assert listed[symbol]["venue"] == "test-venue" and listed[symbol]["asset_class"] == "crypto"
    assert listed[symbol]["ticks"] is True and "1h" in listed[symbol]["timeframes"]
    metrics = (await client.get("/metrics")).text
    assert 'warehouse_rows_inserted_total{table="ticks"}' in metrics


async def test_an_event_published_twice_or_redelivered_is_stored_once(
        app: FastAPI, client: httpx.AsyncClient, user_headers: Headers, nats_url: str,
        h: SimpleNamespace) -> None:
    bus: EventBus = app.state.bus
    symbol = h.unique_symbol("DUP")
    event = ticks_event(symbol, "test-venue", tick_rows(25), source="test")
    await bus.publish_many([event, event])  # the stream drops the second (same Nats-Msg-Id)
    # A redelivery the stream cannot see: the same event again, as a new stream message.
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(event.subject, event.to_bytes())
    finally:
        await nc.close()
    await h.eventually(lambda: stored_ticks(client, user_headers, symbol))
    marker = ticks_event(symbol, "test-venue", tick_rows(1, offset_ms=3_600_000), source="test")
    await bus.publish(marker)  # consumed after the duplicates: once it shows, they were all handled
    await h.eventually(lambda: _count_is(client, user_headers, symbol, 26))
    assert len(await stored_ticks(client, user_headers, symbol)) == 26


async def _count_is(client: httpx.AsyncClient, headers: Headers, symbol: str, count: int) -> bool:
    return len(await stored_ticks(client, headers, symbol)) == count


async def test_a_batch_delivered_again_whole_is_dropped_at_insert(app: FastAPI, nats_url: str,
                                                                  h: SimpleNamespace) -> None:
    """The consumer's dedup token: the same messages in a round again insert nothing."""
    symbol = h.unique_symbol("RED")
    bus: EventBus = app.state.bus
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    durable = f"dbs-test-redeliver-{uuid4().hex[:8]}"
    consumer = StreamConsumer(table="ticks", subject=TICK_SUBJECTS, durable=durable,
                              settings=app.state.settings, warehouse=app.state.warehouse,
                              new_batch=TickColumns, insert=_insert_ticks, known=set())
    # Background merges would collapse the duplicate rows themselves and hide what the inserts wrote.
    await app.state.warehouse.command("SYSTEM STOP MERGES aitrading.ticks")
    try:
        await js.add_consumer("MARKET", config=consumer.config())
        sub = await js.pull_subscribe_bind(durable=durable, stream="MARKET")
        await bus.publish_many([ticks_event(symbol, "v", tick_rows(10, offset_ms=k * 10_000), source="test")
                                for k in range(3)])
        # The app's own consumer stores these events too, under its own token: let it finish first.
        await h.eventually(lambda: _raw_count_is(app, symbol, 30))
        msgs = []
        while len(msgs) < 3:
            msgs += [m for m in await sub.fetch(10, timeout=5) if symbol.encode() in m.data]
        await consumer.process(msgs)
        assert await raw_tick_count(app, symbol) == 60
        await consumer.process(msgs)  # as NATS would after a lost acknowledgement
        assert await raw_tick_count(app, symbol) == 60
        assert consumer.counters["batches"] == 2 and consumer.counters["rows"] == 60
    finally:
        await app.state.warehouse.command("SYSTEM START MERGES aitrading.ticks")
        await js.delete_consumer("MARKET", durable)
        await nc.close()


async def test_a_malformed_message_is_terminated_and_counted_while_the_rest_is_stored(
        app: FastAPI, client: httpx.AsyncClient, user_headers: Headers, h: SimpleNamespace) -> None:
    bus: EventBus = app.state.bus
    good, bad = h.unique_symbol("OK"), h.unique_symbol("BAD")
    rows = tick_rows(3)
    broken = [list(r) for r in rows]
    broken[1][1] = "-5"
    ingest = app.state.ingest
    rejected_before = ingest.ticks.counters["rejected"]
    await bus.publish_many([ticks_event(bad, "v", broken, source="test"),
                            ticks_event(good, "v", rows, source="test")])
    await h.eventually(lambda: stored_ticks(client, user_headers, good))
    assert ingest.ticks.counters["rejected"] == rejected_before + 1
    assert await stored_ticks(client, user_headers, bad) == []
    assert 'ingest_messages_rejected_total{table="ticks"}' in (await client.get("/metrics")).text


async def test_feed_throughput_is_measured(app: FastAPI, client: httpx.AsyncClient, user_headers: Headers,
                                           h: SimpleNamespace) -> None:
    """Printed, not asserted: the insert path alone, then NATS to warehouse end to end."""
    symbol = h.unique_symbol("PERF")
    events = [ticks_event(symbol, "bench", tick_rows(1000, offset_ms=k * 1_000_000), source="test")
              for k in range(100)]
    payloads = [e.to_bytes() for e in events]
    started = time.perf_counter()
    batch = TickColumns()
    for payload in payloads:
        batch.add(payload)
    parsed = time.perf_counter()
    await _insert_ticks(app.state.warehouse, batch.columns(), f"bench:{symbol}")
    inserted = time.perf_counter()
    rows = len(batch)
    print(f"\ninsert path: {rows} tick rows parsed in {parsed - started:.3f}s, inserted in "
          f"{inserted - parsed:.3f}s: {rows / (inserted - started):,.0f} rows/s")

    symbol = h.unique_symbol("PERF")
    events = [ticks_event(symbol, "bench", tick_rows(1000, offset_ms=k * 1_000_000), source="test")
              for k in range(100)]
    started = time.perf_counter()
    await app.state.bus.publish_many(events)
    published = time.perf_counter()
    await h.eventually(lambda: _raw_count_is(app, symbol, 100_000), timeout_s=60, interval_s=0.05)
    done = time.perf_counter()
    print(f"end to end: 100,000 ticks in 100 events published in {published - started:.3f}s, stored "
          f"{done - started:.3f}s after the first publish: {100_000 / (done - started):,.0f} rows/s")


async def _raw_count_is(app: FastAPI, symbol: str, count: int) -> bool:
    return await raw_tick_count(app, symbol) >= count
