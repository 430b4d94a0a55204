"""The transactional outbox: an event is stored with the write it follows and published after commit.

`enqueue` inserts the encoded event in the caller's transaction, so the event exists exactly when the
write does. `OutboxRelay` publishes unpublished rows in id order and marks them published; while NATS
is unreachable the rows wait and the relay retries with back-off. A crash between publish and mark
costs one redundant publish, which JetStream drops by event id (and consumers dedupe beyond that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import Database
from aitrading.errors import Unavailable
from aitrading.events import EncodedEvent, Event, EventBus, PublishFailed, processed_events

_log = structlog.get_logger(__name__)

DAY_S = 24 * 3600.0
LISTENER_RETRY_S = 5.0

outbox = Table(
    "outbox", MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("event_id", Uuid, nullable=False),
    Column("subject", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("published_at", DateTime(timezone=True)),
)


async def enqueue(session: AsyncSession, event: Event) -> None:
    """Store `event` in the caller's transaction; a trigger notifies the relay when it commits."""
    await session.execute(insert(outbox).values(event_id=event.id, subject=event.subject,
                                                payload=event.to_bytes()))


def notify_channel(schema: str) -> str:
    """The channel the `outbox_notify` trigger of migration 0001 signals (identifiers stop at 63)."""
    return f"outbox_{schema}"[:63]


class OutboxRelay:
    """Publishes committed outbox rows of one service schema; a resource of the service factory."""

    name = "outbox"

    def __init__(self, database: Database, bus: EventBus, *, batch_size: int = 500,
                 poll_interval_s: float = 0.5, retention_s: float = DAY_S,
                 processed_retention_s: float = 35 * DAY_S, housekeeping_interval_s: float = 60.0) -> None:
        self.database = database
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention_s = retention_s
        # Longer than any stream keeps messages (30 days), so no redelivery can outlive its ledger row.
        self.processed_retention_s = processed_retention_s
        self.housekeeping_interval_s = housekeeping_interval_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._listener_retry_at = 0.0
        self._lock_key = f"aitrading.outbox:{database.schema}"
        self._log = _log.bind(schema=database.schema)

    async def start(self) -> None:
        self._stop.clear()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"outbox:{self.database.schema}")
        self._task.add_done_callback(self._on_done)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stop.set()
        self._wake.set()
        if task is not None:
            await asyncio.wait([task])
        await self._close_listener()

    @property
    def listening(self) -> bool:
        """Whether a commit wakes the relay at once (its LISTEN connection is up); else it only polls."""
        return self._listener is not None and not self._listener.is_closed()

    async def check(self) -> None:
        if self._task is None or self._task.done():
            raise Unavailable("the outbox relay is not running")

    async def relay_once(self) -> int:
        """Publish one batch of unpublished rows in id order; returns how many were published.

        Raises PublishFailed when NATS did not confirm them all; the confirmed leading rows are marked
        anyway and the rest stay for the next attempt, so order holds and nothing is lost.
        """
        failure: PublishFailed | None = None
        async with self.database.engine.connect() as conn, conn.begin():
            # One relay per schema at a time, even with replicas: batches go out one after another.
            if not await conn.scalar(select(func.pg_try_advisory_xact_lock(func.hashtext(self._lock_key)))):
                return 0
            rows = (await conn.execute(
                select(outbox.c.id, outbox.c.event_id, outbox.c.subject, outbox.c.payload)
                .where(outbox.c.published_at.is_(None)).order_by(outbox.c.id).limit(self.batch_size)
                .with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            try:
                await self.bus.publish_encoded([EncodedEvent(r.subject, str(r.event_id), r.payload)
                                                for r in rows])
                published = len(rows)
            except PublishFailed as exc:
                failure, published = exc, exc.published
            if published:
                await conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows[:published]]))
                                   .values(published_at=func.now()))
        if failure is not None:
            raise failure
        return published

    async def purge(self) -> int:
        """Delete published rows and processed-event ids past their retention; returns outbox rows deleted."""
        now = datetime.now(UTC)
        async with self.database.engine.begin() as conn:
            result = await conn.execute(
                delete(outbox).where(outbox.c.published_at < now - timedelta(seconds=self.retention_s)))
            await conn.execute(delete(processed_events).where(
                processed_events.c.processed_at < now - timedelta(seconds=self.processed_retention_s)))
        return int(result.rowcount or 0)

    async def _run(self) -> None:
        failures, next_housekeeping = 0, 0.0
        while not self._stop.is_set():
            await self._ensure_listener()
            self._wake.clear()  # before reading: a commit notified from now on wakes the next round
            try:
                count = await self.relay_once()
                if time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + self.housekeeping_interval_s
                    if purged := await self.purge():
                        self._log.info("published outbox rows purged", rows=purged)
            except (PublishFailed, SQLAlchemyError, OSError, TimeoutError) as exc:
                failures += 1
                delay = min(0.5 * 2.0 ** failures, 30.0)
                self._log.warning("outbox relay failed; rows stay and are retried", error=str(exc),
                                  published=getattr(exc, "published", 0), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            if failures:
                self._log.info("outbox relay publishing again", after_failures=failures)
                failures = 0
            if count < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _ensure_listener(self) -> None:
        """LISTEN on a dedicated connection; without one the relay still polls, only a little later."""
        if self._listener is not None and not self._listener.is_closed():
            return
        if time.monotonic() < self._listener_retry_at:
            return
        self._listener_retry_at = time.monotonic() + LISTENER_RETRY_S
        dsn = make_url(self.database.url).set(drivername="postgresql").render_as_string(hide_password=False)
        listener: asyncpg.Connection | None = None
        try:
            listener = await asyncpg.connect(
                dsn, timeout=5, server_settings={"application_name": f"{self.database.schema}-outbox"})
            await listener.add_listener(notify_channel(self.database.schema), self._on_notify)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self._log.warning("outbox listener unavailable; polling only", error=repr(exc))
            if listener is not None:
                listener.terminate()
            return
        self._listener = listener

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error("outbox relay stopped unexpectedly", exc_info=task.exception())

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            try:
                await listener.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                listener.terminate()
