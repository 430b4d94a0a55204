"""The transactional outbox against real PostgreSQL and NATS, including a NATS outage."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import sysconfig
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import pytest
from sqlalchemy import text, update

from aitrading.db import Database
from aitrading.embedded import free_port
from aitrading.errors import Unavailable
from aitrading.events import Event, EventBus, PublishFailed
from aitrading.outbox import OutboxRelay, enqueue, outbox
from aitrading.streams import TRADING

if TYPE_CHECKING:
    from conftest import HandledEvents  # the fixture's class, for annotations only


def order_event(subject: str, n: int) -> Event:
    return Event.new("orders.test", subject, {"n": n}, source="tests")


async def outbox_row(database: Database, event: Event) -> dict[str, object] | None:
    async with database.engine.connect() as conn:
        row = (await conn.execute(text("SELECT subject, published_at FROM outbox WHERE event_id = :e"),
                                  {"e": event.id})).first()
    return dict(row._mapping) if row else None


async def wait_until(condition: Callable[[], Any], within_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not (await result if inspect.isawaitable(result := condition()) else result):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_event_enqueued_in_a_rolled_back_transaction_is_never_published(
        events_bus: EventBus, events_database: Database, events_subject: str, nats_url: str) -> None:
    event = order_event(events_subject, 1)
    with pytest.raises(RuntimeError):
        async with events_database.sessionmaker() as session, session.begin():
            await enqueue(session, event)
            raise RuntimeError("the write after the enqueue fails")
    relay = OutboxRelay(events_database, events_bus)
    await relay.relay_once()

    assert await outbox_row(events_database, event) is None
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(TRADING.name, subjects_filter=events_subject)
    finally:
        await nc.close()
    assert not info.state.subjects


async def test_committed_events_are_published_in_order_and_marked(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str) -> None:
    durable = f"outbox-{uuid.uuid4().hex[:12]}"
    events_bus.subscribe_durable(events_subject, durable, handled_events.handler(durable),
                                 database=events_database)
    events = [order_event(events_subject, n) for n in range(5)]
    async with events_database.sessionmaker() as session, session.begin():
        for event in events:
            await enqueue(session, event)

    assert await OutboxRelay(events_database, events_bus).relay_once() == 5
    rows = await handled_events.wait_for(durable, 5)
    assert [row["value"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert all([await _published(events_database, event) for event in events])


async def test_running_relay_wakes_on_commit_without_waiting_for_the_poll(
        events_bus: EventBus, events_database: Database, handled_events: HandledEvents,
        events_subject: str) -> None:
    durable = f"outbox-{uuid.uuid4().hex[:12]}"
    events_bus.subscribe_durable(events_subject, durable, handled_events.handler(durable),
                                 database=events_database)
    relay = OutboxRelay(events_database, events_bus, poll_interval_s=60)
    await relay.start()
    try:
        await wait_until(lambda: relay.listening)
        await relay.check()
        await asyncio.sleep(0.2)  # the relay is parked on its 60 s poll
        async with events_database.sessionmaker() as session, session.begin():
            await enqueue(session, order_event(events_subject, 8))
        rows = await handled_events.wait_for(durable, 1, within_s=5)
    finally:
        await relay.stop()
    assert [row["value"] for row in rows] == ["8"]
    with pytest.raises(Unavailable):
        await relay.check()


async def test_purge_removes_only_published_rows_past_retention(
        events_database: Database, events_subject: str) -> None:
    old, recent, pending = (order_event(events_subject, n) for n in range(3))
    now = datetime.now(UTC)
    async with events_database.sessionmaker() as session, session.begin():
        for event in (old, recent, pending):
            await enqueue(session, event)
        for event, published_at in ((old, now - timedelta(days=2)), (recent, now)):
            await session.execute(update(outbox).where(outbox.c.event_id == event.id)
                                  .values(published_at=published_at))

    assert await OutboxRelay(events_database, EventBus("nats://unused", source="tests")).purge() >= 1
    assert await outbox_row(events_database, old) is None
    assert await outbox_row(events_database, recent) is not None
    assert await outbox_row(events_database, pending) is not None
    async with events_database.engine.begin() as conn:  # leave nothing for the other tests' relays
        await conn.execute(text("DELETE FROM outbox WHERE event_id = :e"), {"e": pending.id})


class ThrowawayNats:
    """A nats-server with JetStream on a free port and a temp store, stopped and restarted at will."""

    def __init__(self, store: Path) -> None:
        binary = shutil.which("nats-server") or str(Path(sysconfig.get_path("scripts")) / "nats-server")
        self.port = free_port()
        self.argv = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise RuntimeError(f"nats-server did not listen on {self.port}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 10)
        self.process = None


@pytest.mark.slow
async def test_outbox_event_is_published_after_nats_comes_back(
        events_database: Database, handled_events: HandledEvents, tmp_path: Path) -> None:
    server = ThrowawayNats(tmp_path / "jetstream")
    await server.start()
    subject, durable = f"orders.test.{uuid.uuid4().hex}", f"outage-{uuid.uuid4().hex[:12]}"
    bus = EventBus(server.url, source="outage-test")
    bus.subscribe_durable(subject, durable, handled_events.handler(durable), database=events_database)
    relay = OutboxRelay(events_database, bus)
    try:
        await bus.start()
        await server.stop()
        await wait_until(lambda: not bus.connected)

        event = order_event(subject, 1)
        async with events_database.sessionmaker() as session, session.begin():
            await enqueue(session, event)
        with pytest.raises(PublishFailed):
            await relay.relay_once()
        row = await outbox_row(events_database, event)
        assert row is not None and row["published_at"] is None
        with pytest.raises(Unavailable):
            await bus.check()

        await relay.start()
        await server.start()
        rows = await handled_events.wait_for(durable, 1, within_s=45)
        assert [row["event_id"] for row in rows] == [event.id]
        await wait_until(lambda: _published(events_database, event))
        await bus.check()
    finally:
        await relay.stop()
        await bus.stop()
        await server.stop()


async def _published(database: Database, event: Event) -> bool:
    row = await outbox_row(database, event)
    return bool(row and row["published_at"])
