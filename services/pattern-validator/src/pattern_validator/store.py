"""Tables of pattern-validator and the named queries on them (the only SQL of the service).

User rules belong to their owner: every query is filtered by owner, so another user's rule is simply
not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import naming_convention_metadata

metadata = naming_convention_metadata()

Record = Row[Any]

TS = sa.DateTime(timezone=True)

rules = sa.Table(
    "rules", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_id", postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("expression", sa.Text(), nullable=False),
    sa.Column("direction", sa.Text(), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("owner_id", "name", name="uq_rules_owner_id_name"),
    sa.CheckConstraint("direction IN ('bullish', 'bearish', 'neutral')", name="direction"),
)


async def insert_rule(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(rules).values(**values))


async def rules_of(session: AsyncSession, owner: UUID) -> Sequence[Record]:
    result = await session.execute(
        sa.select(rules).where(rules.c.owner_id == owner).order_by(rules.c.created_at, rules.c.id))
    return result.all()


async def count_rules(session: AsyncSession, owner: UUID) -> int:
    result = await session.execute(
        sa.select(sa.func.count()).select_from(rules).where(rules.c.owner_id == owner))
    return int(result.scalar_one())


async def rule_of(session: AsyncSession, owner: UUID, rule_id: UUID) -> Record | None:
    result = await session.execute(sa.select(rules).where(rules.c.owner_id == owner, rules.c.id == rule_id))
    return result.first()


async def rule_named(session: AsyncSession, owner: UUID, name: str) -> Record | None:
    result = await session.execute(sa.select(rules).where(rules.c.owner_id == owner, rules.c.name == name))
    return result.first()


async def update_rule(session: AsyncSession, owner: UUID, rule_id: UUID, values: dict[str, Any],
                      now: datetime) -> Record | None:
    result = await session.execute(
        sa.update(rules).where(rules.c.owner_id == owner, rules.c.id == rule_id)
        .values(**values, updated_at=now).returning(*rules.c))
    return result.first()


async def delete_rule(session: AsyncSession, owner: UUID, rule_id: UUID) -> bool:
    result = await session.execute(
        sa.delete(rules).where(rules.c.owner_id == owner, rules.c.id == rule_id).returning(rules.c.id))
    return result.first() is not None
