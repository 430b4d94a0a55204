"""The event envelope, streams, and durable idempotent consumers against real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

import nats
import pytest

from aitrading.db import Database
from aitrading.events import Event, EventBus, ensure_stream, retry_delay
from aitrading.request_context import request_id_var
from aitrading.streams import AUDIT, MARKET, PLATFORM, TRADING, StreamSpec, stream_for, subject_token

if TYPE_CHECKING:
    from conftest import HandledEvents  # the fixture's class, for annotations only


def durable_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def consume(bus: EventBus, subject: str, durable: str, handled: HandledEvents, database: Database) -> None:
    bus.subscribe_durable(subject, durable, handled.handler(durable), database=database)


def order_event(subject: str, n: int, **kw: str) -> Event:
    return Event.new("orders.test", subject, {"n": n, "price": Decimal("101.25")}, source="tests", **kw)


# --- envelope and streams (no I/O) ---

def test_event_round_trip_keeps_every_field_and_turns_decimals_into_strings() -> None:
    event = Event.new("fills.created", "fills.created.u1",
                      {"price": Decimal("0.000123"), "qty": Decimal("2"), "order": uuid.UUID(int=7)},
                      source="trading-engine", request_id="req-1")
    assert event.data == {"price": "0.000123", "qty": "2", "order": str(uuid.UUID(int=7))}
    decoded = Event.from_bytes(event.to_bytes())
    assert decoded == event
    assert decoded.time.tzinfo is not None and decoded.time.utcoffset() == timedelta(0)
    assert b'"price":"0.000123"' in event.to_bytes()


def test_event_time_is_utc_and_request_id_comes_from_the_request_context() -> None:
    token = request_id_var.set("req-from-context")
    try:
        event = Event.new("users.registered", "users.registered", {}, source="user-service")
    finally:
        request_id_var.reset(token)
    assert event.request_id == "req-from-context"
    assert event.time.tzinfo == UTC
    shifted = Event(type="t", source="s", subject="audit.x", data={},
                    time=datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert shifted.time == datetime(2024, 1, 1, 10, tzinfo=UTC) and shifted.time.tzinfo == UTC


def test_from_bytes_refuses_what_is_not_an_event() -> None:
    for raw in (b"not json", b"{}", b'{"type": "x"}'):
        with pytest.raises(ValueError):
            Event.from_bytes(raw)


def test_subject_token_makes_symbols_safe_for_one_subject_token() -> None:
    assert subject_token("BTC/USDT") == "BTC-USDT"
    assert subject_token("EURUSD.m") == "EURUSD-m"
    assert subject_token(" ES 03-25 ") == "ES-03-25"
    assert subject_token("a*b>c") == "a-b-c"
    assert subject_token("^GSPC") == "^GSPC"
    with pytest.raises(ValueError):
        subject_token("  ")


def test_stream_for_maps_subject_families_to_streams() -> None:
    assert stream_for(f"md.bar.1d.{subject_token('BTC/USDT')}") is MARKET
    assert stream_for("orders.created.u1") is TRADING
    assert stream_for("orders.>") is TRADING
    assert stream_for("risk.halted") is TRADING
    assert stream_for("audit.record") is AUDIT
    assert stream_for("payments.*") is PLATFORM
    assert stream_for("fleet.heartbeat.user-service") is None
    assert stream_for(">") is None
    assert stream_for("orders") is None


def test_failed_handlers_back_off_up_to_a_minute() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(50) == 60.0


# --- against NATS and PostgreSQL ---

async def test_published_event_reaches_durable_consumer_and_its_effect_is_written(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str) -> None:
    durable = durable_name()
    consume(events_bus, events_subject, durable, handled_events, events_database)
    event = order_event(events_subject, 1, request_id="req-42")
    await events_bus.publish(event)

    rows = await handled_events.wait_for(durable, 1)
    assert rows == [{"event_id": event.id, "value": "1", "request_id": "req-42"}]


async def test_publish_many_delivers_in_order(events_bus: EventBus, events_database: Database,
                                              handled_events: HandledEvents, events_subject: str) -> None:
    durable = durable_name()
    consume(events_bus, events_subject, durable, handled_events, events_database)
    await events_bus.publish_many([order_event(events_subject, n) for n in range(20)])

    rows = await handled_events.wait_for(durable, 20)
    assert [row["value"] for row in rows] == [str(n) for n in range(20)]


async def test_same_event_published_twice_is_applied_once(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str, nats_url: str) -> None:
    durable = durable_name()
    consume(events_bus, events_subject, durable, handled_events, events_database)
    event = order_event(events_subject, 7)
    await events_bus.publish(event)
    await events_bus.publish(event)  # deduplicated by the server (Nats-Msg-Id)
    # Beyond the server's dedupe window: the same bytes stored twice, without a message id.
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.publish(events_subject, event.to_bytes())
        await js.publish(events_subject, event.to_bytes())
        await wait_until_acknowledged(js, durable, 3)
    finally:
        await nc.close()

    assert len(await handled_events.rows(durable)) == 1


async def test_handler_failure_rolls_back_and_redelivery_applies_the_event_once(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str) -> None:
    durable = durable_name()
    events_bus.subscribe_durable(events_subject, durable, handled_events.handler(durable, fail_first=1),
                                 database=events_database)
    await events_bus.publish(order_event(events_subject, 3))

    rows = await handled_events.wait_for(durable, 1)
    await asyncio.sleep(0.5)
    assert len(await handled_events.rows(durable)) == len(rows) == 1
    assert handled_events.attempts[durable] == 2


async def test_redelivery_while_the_first_delivery_is_still_running_is_applied_once(
        nats_url: str, events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str) -> None:
    # Two replicas share the durable; the first handler outlives ack_wait, so NATS redelivers to the other.
    durable = durable_name()
    handler = handled_events.handler(durable, sleep_first_s=2.5)
    replicas = [EventBus(nats_url, source=f"replica-{i}") for i in range(2)]
    for replica in replicas:
        replica.subscribe_durable(events_subject, durable, handler, database=events_database, ack_wait_s=1.0)
        await replica.start()
    nc = await nats.connect(nats_url)
    try:
        await events_bus.publish(order_event(events_subject, 5))
        await handled_events.wait_for(durable, 1)
        await wait_until_acknowledged(nc.jetstream(), durable, 2)  # delivered twice, both answered
    finally:
        await nc.close()
        await asyncio.gather(*(replica.stop() for replica in replicas))

    assert handled_events.attempts[durable] == 1  # the redelivery was recognised before the handler ran
    assert len(await handled_events.rows(durable)) == 1


async def test_unparseable_message_is_terminated_and_does_not_block_the_consumer(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str, nats_url: str) -> None:
    durable = durable_name()
    consume(events_bus, events_subject, durable, handled_events, events_database)
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(events_subject, b"\x00 not an event")
    finally:
        await nc.close()
    await events_bus.publish(order_event(events_subject, 9))

    rows = await handled_events.wait_for(durable, 1)
    assert [row["value"] for row in rows] == ["9"]


async def test_stopped_consumer_catches_up_on_events_published_while_it_was_down(
        nats_url: str, events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str) -> None:
    durable = durable_name()
    first = EventBus(nats_url, source="catch-up-before")
    consume(first, events_subject, durable, handled_events, events_database)
    await first.start()
    await events_bus.publish(order_event(events_subject, 1))
    assert len(await handled_events.wait_for(durable, 1)) == 1
    await first.stop()

    await events_bus.publish_many([order_event(events_subject, n) for n in (2, 3, 4)])
    await asyncio.sleep(0.3)
    assert len(await handled_events.rows(durable)) == 1  # nobody is consuming

    second = EventBus(nats_url, source="catch-up-after")
    consume(second, events_subject, durable, handled_events, events_database)
    await second.start()
    try:
        rows = await handled_events.wait_for(durable, 4)
    finally:
        await second.stop()
    assert [row["value"] for row in rows] == ["1", "2", "3", "4"]


async def test_core_subscription_receives_events_outside_streams(events_bus: EventBus) -> None:
    subject = f"fleet.test.{uuid.uuid4().hex}"
    received: asyncio.Queue[Event] = asyncio.Queue()
    events_bus.subscribe(subject, received.put)
    await asyncio.sleep(0.2)  # the subscription is sent in the background after start
    event = Event.new("fleet.heartbeat", subject, {"status": "ok"}, source="tests")
    await events_bus.publish(event)

    assert await asyncio.wait_for(received.get(), 5) == event


async def test_durable_subscription_needs_a_stream_and_a_valid_name(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents) -> None:
    with pytest.raises(ValueError, match="no JetStream stream"):
        consume(events_bus, "fleet.heartbeat", "x", handled_events, events_database)
    with pytest.raises(ValueError, match="durable name"):
        consume(events_bus, "orders.x", "bad.name", handled_events, events_database)


async def wait_until_acknowledged(js: nats.js.JetStreamContext, durable: str, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        info = await js.consumer_info(TRADING.name, durable)
        if info.ack_floor.stream_seq and info.num_pending == 0 and info.num_ack_pending == 0 \
                and info.delivered.consumer_seq >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"consumer {durable} did not acknowledge {count} messages in time")


async def test_ensure_stream_creates_then_updates_a_changed_definition(nats_url: str) -> None:
    family = f"zztest{uuid.uuid4().hex[:8]}"
    before = StreamSpec(name=family.upper(), subjects=(f"{family}.a.>",), description="before", max_age_s=60)
    after = StreamSpec(name=family.upper(), subjects=(f"{family}.a.>", f"{family}.b.>"), description="after",
                       max_age_s=3600)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await ensure_stream(js, before)
        await ensure_stream(js, before)
        await ensure_stream(js, after)
        config = (await js.stream_info(after.name)).config
        assert (config.description, config.subjects, config.max_age) == ("after", list(after.subjects), 3600)
    finally:
        await js.delete_stream(after.name)
        await nc.close()
