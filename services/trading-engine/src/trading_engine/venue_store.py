"""The venue accounts table and its queries. Every query is filtered by the owner.

`credentials` holds a Fernet token (credentials.py), never the credentials themselves; `key_hint` the
last characters of the API key (or agent id), so a user can tell accounts apart.
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

from trading_engine.store import metadata

Record = Row[Any]

venue_accounts = sa.Table(
    "venue_accounts", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_id", postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("exchange", sa.Text()),
    sa.Column("sandbox", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("options", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("credentials", sa.Text(), nullable=False),
    sa.Column("key_hint", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("owner_id", "name", name="uq_venue_accounts_owner_id_name"),
    sa.CheckConstraint("kind IN ('ccxt', 'mt5')", name="kind"),
)


async def insert_account(session: AsyncSession, *, owner: UUID, name: str, kind: str, exchange: str | None,
                         sandbox: bool, options: dict[str, Any], credentials: str, key_hint: str,
                         now: datetime) -> Record | None:
    """The new account, or None when the owner already has an account of that name."""
    stmt = (postgresql.insert(venue_accounts)
            .values(id=uuid4(), owner_id=owner, name=name, kind=kind, exchange=exchange, sandbox=sandbox,
                    options=options, credentials=credentials, key_hint=key_hint, created_at=now)
            .on_conflict_do_nothing(constraint="uq_venue_accounts_owner_id_name")
            .returning(*venue_accounts.c))
    return (await session.execute(stmt)).first()


async def accounts_of(session: AsyncSession, owner: UUID) -> Sequence[Record]:
    stmt = (sa.select(venue_accounts).where(venue_accounts.c.owner_id == owner)
            .order_by(venue_accounts.c.name))
    return (await session.execute(stmt)).all()


async def account_by_id(session: AsyncSession, owner: UUID, account_id: UUID) -> Record | None:
    stmt = sa.select(venue_accounts).where(venue_accounts.c.owner_id == owner,
                                           venue_accounts.c.id == account_id)
    return (await session.execute(stmt)).first()


async def account_by_name(session: AsyncSession, owner: UUID, name: str) -> Record | None:
    stmt = sa.select(venue_accounts).where(venue_accounts.c.owner_id == owner,
                                           venue_accounts.c.name == name)
    return (await session.execute(stmt)).first()


async def delete_account(session: AsyncSession, owner: UUID, account_id: UUID) -> Record | None:
    """The deleted account, or None when the owner has no such account."""
    stmt = (sa.delete(venue_accounts)
            .where(venue_accounts.c.owner_id == owner, venue_accounts.c.id == account_id)
            .returning(*venue_accounts.c))
    return (await session.execute(stmt)).first()
