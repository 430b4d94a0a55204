"""Local fixtures of the library tests. Event-bus fixtures are prefixed `events_` / named for events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import Database
from aitrading.events import Event, EventBus
from aitrading.request_context import current_request_id
from aitrading.streams import TRADING


class HandledEvents:
    """Durable handlers that write one row per applied event, and the queries to count those rows."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.attempts: dict[str, int] = {}

    def handler(self, tag: str, *, fail_first: int = 0, sleep_first_s: float = 0.0
                ) -> Callable[[AsyncSession, Event], Awaitable[None]]:
        async def handle(session: AsyncSession, event: Event) -> None:
            self.attempts[tag] = attempt = self.attempts.get(tag, 0) + 1
            await session.execute(
                text("INSERT INTO handled_events (tag, event_id, value, request_id) VALUES (:t, :e, :v, :r)"),
                {"t": tag, "e": event.id, "v": str(event.data.get("n")), "r": current_request_id()})
            if attempt == 1 and sleep_first_s:
                await asyncio.sleep(sleep_first_s)
            if attempt <= fail_first:
                raise RuntimeError(f"handler {tag} fails on attempt {attempt} by design")
        return handle

    async def rows(self, tag: str) -> list[dict[str, Any]]:
        async with self.database.engine.connect() as conn:
            result = await conn.execute(
                text("SELECT event_id, value, request_id FROM handled_events WHERE tag = :t ORDER BY id"),
                {"t": tag})
            return [dict(row._mapping) for row in result]

    async def wait_for(self, tag: str, count: int, within_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            rows = await self.rows(tag)
            if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
                return rows
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def events_database(database_url: str) -> AsyncIterator[Database]:
    """A fresh schema per test module with the platform tables and a `handled_events` table."""
    db = Database(database_url, f"test_events_{uuid.uuid4().hex[:16]}")
    await db.start()
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE handled_events (id bigserial PRIMARY KEY, tag text NOT NULL, "
                                "event_id uuid NOT NULL, value text, request_id text)"))
    try:
        yield db
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
        await db.stop()


@pytest.fixture(scope="module")
async def events_bus(nats_url: str) -> AsyncIterator[EventBus]:
    bus = EventBus(nats_url, source="aitrading-tests")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


@pytest.fixture(scope="module")
def handled_events(events_database: Database) -> HandledEvents:
    return HandledEvents(events_database)


@pytest.fixture
async def events_subject(nats_url: str) -> AsyncIterator[str]:
    """A unique subject in the TRADING stream; its messages and consumers are removed afterwards."""
    subject = f"orders.test.{uuid.uuid4().hex}"
    yield subject
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.consumers_info(TRADING.name):
            if info.config.filter_subject == subject:
                await js.delete_consumer(TRADING.name, info.name)
        await js.purge_stream(TRADING.name, subject=subject)
    finally:
        await nc.close()
