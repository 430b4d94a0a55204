"""Tables of feature-engineering and the named queries on them (the only SQL of the service).

Every query on a user's feature sets is filtered by its owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import naming_convention_metadata

metadata = naming_convention_metadata()

Record = Row[*tuple[Any, ...]]

TS = sa.DateTime(timezone=True)

feature_sets = sa.Table(
    "feature_sets", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_id", postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("indicators", postgresql.ARRAY(sa.Text()), nullable=False),  # as the user wrote them
    sa.Column("stream", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("owner_id", "name", name="uq_feature_sets_owner_id_name"),
)
# The streaming consumer reads the names of every streamed set on each bar.
sa.Index("ix_feature_sets_streamed", feature_sets.c.stream, postgresql_where=feature_sets.c.stream)


async def insert_set(session: AsyncSession, *, owner: UUID, name: str, indicators: Sequence[str],
                     stream: bool, now: datetime) -> Record | None:
    """The new set, or None when the owner already has a set of that name."""
    stmt = (postgresql.insert(feature_sets)
            .values(id=uuid4(), owner_id=owner, name=name, indicators=list(indicators), stream=stream,
                    created_at=now, updated_at=now)
            .on_conflict_do_nothing(constraint="uq_feature_sets_owner_id_name")
            .returning(*feature_sets.c))
    return (await session.execute(stmt)).first()


async def count_sets(session: AsyncSession, owner: UUID) -> int:
    stmt = sa.select(sa.func.count()).select_from(feature_sets).where(feature_sets.c.owner_id == owner)
    return int((await session.execute(stmt)).scalar_one())


async def sets_of(session: AsyncSession, owner: UUID) -> Sequence[Record]:
    stmt = sa.select(feature_sets).where(feature_sets.c.owner_id == owner).order_by(feature_sets.c.name)
    return (await session.execute(stmt)).all()


async def set_named(session: AsyncSession, owner: UUID, name: str) -> Record | None:
    stmt = sa.select(feature_sets).where(feature_sets.c.owner_id == owner, feature_sets.c.name == name)
    return (await session.execute(stmt)).first()


async def update_set(session: AsyncSession, *, owner: UUID, name: str, new_name: str,
                     indicators: Sequence[str], stream: bool, now: datetime) -> Record | None:
    """The updated set, or None when it does not exist. A rename onto a taken name raises IntegrityError."""
    stmt = (sa.update(feature_sets)
            .where(feature_sets.c.owner_id == owner, feature_sets.c.name == name)
            .values(name=new_name, indicators=list(indicators), stream=stream, updated_at=now)
            .returning(*feature_sets.c))
    return (await session.execute(stmt)).first()


async def delete_set(session: AsyncSession, owner: UUID, name: str) -> bool:
    stmt = (sa.delete(feature_sets)
            .where(feature_sets.c.owner_id == owner, feature_sets.c.name == name)
            .returning(feature_sets.c.id))
    return (await session.execute(stmt)).first() is not None


async def streamed_indicators(session: AsyncSession) -> list[str]:
    """Every indicator name of every set marked `stream`, each once, in a stable order."""
    name = sa.func.unnest(feature_sets.c.indicators).label("name")
    inner = sa.select(name).where(feature_sets.c.stream).subquery()
    stmt = sa.select(inner.c.name).distinct().order_by(inner.c.name)
    return [str(n) for n in (await session.execute(stmt)).scalars()]
