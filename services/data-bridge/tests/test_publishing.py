"""Publishing: batches wait out a NATS outage and go out once it ends; the wait is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from data_bridge.publishing import Publisher

from aitrading.events import EventBus, PublishFailed
from aitrading.market.wire import parse_ticks
from aitrading.metrics import ServiceMetrics
from aitrading.streams import subject_token

T = 1_700_000_000_000


def rows(first: int, count: int) -> list[list[Any]]:
    return [[T + i, f"{100 + i % 7}", "1", None, None] for i in range(first, first + count)]


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


async def test_an_outage_keeps_the_batch_and_retries_until_nats_takes_it(
        make_settings: Any, nats_url: str, listen: Any, symbol: Callable[..., str]) -> None:
    name = symbol()
    settings = make_settings(publish_retry_initial_s=0.05, publish_retry_max_s=0.1)
    metrics = ServiceMetrics("data-bridge")
    bus = EventBus(nats_url, source="data-bridge")  # not started: NATS is unreachable for it
    publisher = Publisher(bus, settings, metrics)
    await publisher.start()
    try:
        async with listen(f"md.tick.{subject_token(name)}") as ticks:
            publisher.add_ticks(name, "desk", False, rows(0, 300))
            await asyncio.sleep(0.4)
            assert sample(metrics, "data_bridge_publish_retries_total") >= 2
            assert publisher.backlog == 300
            await publisher.room()  # an outage never holds producers back
            await bus.start()
            events = await ticks.wait_for(lambda evs: sum(len(e.data["ticks"]) for e in evs) >= 300)
            assert [t.time_ms for e in events for t in parse_ticks(e).ticks] == [T + i for i in range(300)]
            for _ in range(100):  # acknowledged a moment after delivery
                if publisher.backlog == 0:
                    break
                await asyncio.sleep(0.02)
            assert publisher.backlog == 0
            assert sample(metrics, "data_bridge_published_ticks_total") == 300
    finally:
        await publisher.stop()
        await bus.stop()


async def test_the_buffer_is_bounded_and_drops_the_oldest_counting_them(
        make_settings: Any, nats_url: str, listen: Any, symbol: Callable[..., str]) -> None:
    name = symbol()
    metrics = ServiceMetrics("data-bridge")
    bus = EventBus(nats_url, source="data-bridge")
    publisher = Publisher(bus, make_settings(publish_buffer_max=250), metrics)
    for first in (0, 100, 200):
        publisher.add_ticks(name, "desk", False, rows(first, 100))
        with pytest.raises(PublishFailed):
            await publisher.flush()
    assert publisher.backlog == 200
    assert sample(metrics, "data_bridge_publish_dropped_total", kind="ticks") == 100
    await bus.start()
    try:
        async with listen(f"md.tick.{subject_token(name)}") as ticks:
            await publisher.flush()
            events = await ticks.wait_for(lambda evs: sum(len(e.data["ticks"]) for e in evs) >= 200)
            times = [t.time_ms for e in events for t in parse_ticks(e).ticks]
            assert times == [T + i for i in range(100, 300)]
    finally:
        await bus.stop()


async def test_big_batches_are_split_below_the_nats_message_limit(
        make_settings: Any, nats_url: str, listen: Any, symbol: Callable[..., str]) -> None:
    name = symbol()
    long_price = "100." + "1" * 400  # long decimal strings make a big event
    bus = EventBus(nats_url, source="data-bridge")
    publisher = Publisher(bus, make_settings(max_event_bytes=100_000), ServiceMetrics("data-bridge"))
    await bus.start()
    try:
        async with listen(f"md.tick.{subject_token(name)}") as ticks:
            publisher.add_ticks(name, "desk", False,
                                [[T + i, long_price, "1", None, None] for i in range(1000)])
            await publisher.flush()
            events = await ticks.wait_for(lambda evs: sum(len(e.data["ticks"]) for e in evs) >= 1000)
            assert len(events) >= 4
            assert all(len(e.to_bytes()) < 110_000 for e in events)
    finally:
        await bus.stop()
