"""Tables of data-bridge and the named queries on them (the only SQL of the service).

`feeds` holds each feed's definition and desired state (running or stopped), so running feeds come
back after a restart, plus the status and counters its runner last saved, so every replica can show
them. Which instance runs a feed is decided by a Postgres session advisory lock per feed, taken on one
connection the feed manager holds: when that instance dies, its connection closes and another takes
the feed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from aitrading.db import naming_convention_metadata

metadata = naming_convention_metadata()

Record = Row[*tuple[Any, ...]]  # a result row; columns by attribute

TS = sa.DateTime(timezone=True)

feeds = sa.Table(
    "feeds", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("venue", sa.Text(), nullable=False),
    sa.Column("symbols", postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column("params", postgresql.JSONB(), nullable=False),  # validated, defaults filled in
    sa.Column("synthetic", sa.Boolean(), nullable=False),
    sa.Column("desired", sa.Text(), nullable=False),  # running | stopped
    sa.Column("status", sa.Text(), nullable=False),  # starting | running | finished | failed | stopped
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("counters", postgresql.JSONB(), nullable=False, server_default="{}"),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

bootstrap = sa.Table(
    "bootstrap", metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("done_at", TS, nullable=False),
)

# A feed that finished or failed stays so until someone starts it again.
CLAIMABLE_STATUSES = ("starting", "running", "stopped")


async def insert_feed(session: AsyncSession, *, id: UUID, kind: str, venue: str, symbols: Sequence[str],
                      params: dict[str, Any], synthetic: bool, now: datetime) -> Record:
    result = await session.execute(
        sa.insert(feeds).values(id=id, kind=kind, venue=venue, symbols=list(symbols), params=params,
                                synthetic=synthetic, desired="running", status="starting", error=None,
                                counters={}, created_at=now, updated_at=now).returning(*feeds.c))
    return result.one()


async def feed_by_id(session: AsyncSession, feed_id: UUID) -> Record | None:
    return (await session.execute(sa.select(feeds).where(feeds.c.id == feed_id))).first()


async def all_feeds(session: AsyncSession) -> Sequence[Record]:
    return (await session.execute(sa.select(feeds).order_by(feeds.c.created_at, feeds.c.id))).all()


async def feeds_to_run(session: AsyncSession) -> Sequence[Record]:
    """Feeds someone wants running that have not finished or failed."""
    query = sa.select(feeds).where(feeds.c.desired == "running",
                                   feeds.c.status.in_(CLAIMABLE_STATUSES)).order_by(feeds.c.created_at)
    return (await session.execute(query)).all()


async def set_desired(session: AsyncSession, feed_id: UUID, desired: str, status: str,
                      now: datetime) -> Record | None:
    result = await session.execute(
        sa.update(feeds).where(feeds.c.id == feed_id)
        .values(desired=desired, status=status, error=None, updated_at=now).returning(*feeds.c))
    return result.first()


async def save_state(session: AsyncSession, feed_id: UUID, *, status: str, error: str | None,
                     counters: dict[str, Any], now: datetime) -> None:
    """The runner's status and counters.

    A periodic "running" save never overwrites what happened meanwhile: a stop made through another
    replica, or the feed finishing or failing (a late "running" would have it claimed again).
    """
    query = sa.update(feeds).where(feeds.c.id == feed_id)
    if status in ("starting", "running"):
        query = query.where(feeds.c.status.not_in(("finished", "failed")))
        status_value: Any = sa.case((feeds.c.desired == "running", status), else_=feeds.c.status)
    else:
        status_value = status
    await session.execute(query.values(status=status_value, error=error, counters=counters, updated_at=now))


async def delete_feed(session: AsyncSession, feed_id: UUID) -> bool:
    result = await session.execute(sa.delete(feeds).where(feeds.c.id == feed_id).returning(feeds.c.id))
    return result.first() is not None


async def claim_bootstrap(session: AsyncSession, name: str, now: datetime) -> bool:
    """Mark a one-time step done; True for the one caller that marked it (serialised by the key)."""
    result = await session.execute(pg_insert(bootstrap).values(name=name, done_at=now)
                                   .on_conflict_do_nothing().returning(bootstrap.c.name))
    return result.first() is not None


def _lock_key(schema: str, feed_id: UUID) -> str:
    return f"{schema}:feed:{feed_id}"


async def try_lock_feed(conn: AsyncConnection, schema: str, feed_id: UUID) -> bool:
    """Take the feed's session advisory lock on `conn` (an autocommit connection); False if taken."""
    result = await conn.execute(sa.text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"),
                                {"key": _lock_key(schema, feed_id)})
    return bool(result.scalar())


async def unlock_feed(conn: AsyncConnection, schema: str, feed_id: UUID) -> None:
    await conn.execute(sa.text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"),
                       {"key": _lock_key(schema, feed_id)})


async def ping(conn: AsyncConnection) -> None:
    await conn.execute(sa.text("SELECT 1"))
