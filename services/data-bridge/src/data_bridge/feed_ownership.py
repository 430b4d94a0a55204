"""Which instance runs a feed: the one holding the feed's Postgres session advisory lock.

The locks live on one autocommit connection held for the life of the instance. When the instance dies
its session ends and Postgres releases its locks, so another replica can take the feeds over; when
the connection breaks under a live instance, `ensure` reports the loss so the instance stops the
feeds it can no longer prove it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from aitrading.db import Database
from data_bridge import store

_log = structlog.get_logger("data_bridge.feed_ownership")


class FeedLocks:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None
        self._guard = asyncio.Lock()  # one statement at a time on the connection

    async def ensure(self) -> bool:
        """Open the lock connection if needed; True when a live one was lost (and every lock with it)."""
        async with self._guard:
            lost = False
            if self._conn is not None:
                try:
                    await store.ping(self._conn)
                    return False
                except (SQLAlchemyError, OSError) as exc:
                    _log.warning("feed lock connection lost; its feeds are no longer ours", error=repr(exc))
                    await self._drop()
                    lost = True
            conn = await self.db.engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return lost

    async def take(self, feed_id: UUID) -> bool:
        """Take the feed's lock; False when another instance holds it."""
        async with self._guard:
            if self._conn is None:
                return False
            return await store.try_lock_feed(self._conn, self.db.schema, feed_id)

    async def release(self, feed_id: UUID) -> None:
        async with self._guard:
            if self._conn is None:
                return
            try:
                await store.unlock_feed(self._conn, self.db.schema, feed_id)
            except (SQLAlchemyError, OSError) as exc:  # a broken session released it anyway
                _log.warning("feed lock not released", feed=str(feed_id), error=repr(exc))

    async def close(self) -> None:
        """Close the connection: Postgres releases every lock it held."""
        async with self._guard:
            await self._drop(invalidate=False)

    async def _drop(self, *, invalidate: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(SQLAlchemyError, OSError):
            if invalidate:
                await conn.invalidate()
            await conn.close()
