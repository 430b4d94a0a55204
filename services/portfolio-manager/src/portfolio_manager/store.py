"""Tables of portfolio-manager and the named queries on them (the only SQL of the service).

Every query on a user's accounts, positions, fills and ledger is filtered by its owner. Amounts are
NUMERIC without a scale: PostgreSQL keeps every Decimal exactly as the accounting computed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import naming_convention_metadata

metadata = naming_convention_metadata()

Record = Row[*tuple[Any, ...]]

TS = sa.DateTime(timezone=True)
UUID_T = postgresql.UUID(as_uuid=True)
NUM = sa.Numeric(asdecimal=True)

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("owner_id", UUID_T, primary_key=True),
    sa.Column("account", sa.Text(), primary_key=True),
    sa.Column("initial_cash", NUM, nullable=False),
    sa.Column("cash", NUM, nullable=False),
    sa.Column("realized_pnl", NUM, nullable=False),
    sa.Column("fees", NUM, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

positions = sa.Table(
    "positions", metadata,
    sa.Column("owner_id", UUID_T, primary_key=True),
    sa.Column("account", sa.Text(), primary_key=True),
    sa.Column("symbol", sa.Text(), primary_key=True),
    sa.Column("quantity", NUM, nullable=False),
    sa.Column("average_price", NUM, nullable=False),
    sa.Column("realized_pnl", NUM, nullable=False),
    sa.Column("fees", NUM, nullable=False),
    sa.Column("last_fill_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

# Every fill applied, once: the fill id is the key, so the same fill under a second event id is a no-op.
fills = sa.Table(
    "fills", metadata,
    sa.Column("id", UUID_T, primary_key=True),
    sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),  # order of arrival
    sa.Column("event_id", UUID_T, nullable=False),
    sa.Column("owner_id", UUID_T, nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("order_id", UUID_T, nullable=False),
    sa.Column("symbol", sa.Text(), nullable=False),
    sa.Column("side", sa.Text(), nullable=False),
    sa.Column("quantity", NUM, nullable=False),
    sa.Column("price", NUM, nullable=False),
    sa.Column("fee", NUM, nullable=False),
    sa.Column("liquidity", sa.Text(), nullable=False),
    sa.Column("time", TS, nullable=False),
    sa.Column("strategy_id", UUID_T, nullable=True),
    sa.Column("applied_at", TS, nullable=False),
)
sa.Index("ix_fills_position", fills.c.owner_id, fills.c.account, fills.c.symbol, fills.c.time, fills.c.seq)

cash_ledger = sa.Table(
    "cash_ledger", metadata,
    sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
    sa.Column("owner_id", UUID_T, nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),          # "initial" | "fill"
    sa.Column("amount", NUM, nullable=False),              # signed: money in is positive
    sa.Column("balance", NUM, nullable=False),             # cash after this entry
    sa.Column("fill_id", UUID_T, nullable=True),
    sa.Column("symbol", sa.Text(), nullable=True),
    sa.Column("time", TS, nullable=False),
)
sa.Index("ix_cash_ledger_owner_id", cash_ledger.c.owner_id, cash_ledger.c.account, cash_ledger.c.id)


# --- accounts ---------------------------------------------------------------------------------------

async def create_account(session: AsyncSession, *, owner: UUID, account: str, initial_cash: Decimal,
                         now: datetime) -> bool:
    """Create the account with its starting cash; False when it exists already."""
    stmt = (postgresql.insert(accounts)
            .values(owner_id=owner, account=account, initial_cash=initial_cash, cash=initial_cash,
                    realized_pnl=Decimal(0), fees=Decimal(0), created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=[accounts.c.owner_id, accounts.c.account])
            .returning(accounts.c.owner_id))
    return (await session.execute(stmt)).first() is not None


async def account_for_update(session: AsyncSession, owner: UUID, account: str) -> Record | None:
    """The account row, locked until the transaction ends: fills of one account apply one at a time."""
    stmt = (sa.select(accounts).where(accounts.c.owner_id == owner, accounts.c.account == account)
            .with_for_update())
    return (await session.execute(stmt)).first()


async def update_account(session: AsyncSession, *, owner: UUID, account: str, cash: Decimal,
                         realized_pnl: Decimal, fees: Decimal, now: datetime) -> None:
    await session.execute(
        sa.update(accounts).where(accounts.c.owner_id == owner, accounts.c.account == account)
        .values(cash=cash, realized_pnl=realized_pnl, fees=fees, updated_at=now))


async def account_of(session: AsyncSession, owner: UUID, account: str) -> Record | None:
    stmt = sa.select(accounts).where(accounts.c.owner_id == owner, accounts.c.account == account)
    return (await session.execute(stmt)).first()


async def accounts_of(session: AsyncSession, owner: UUID) -> Sequence[Record]:
    stmt = sa.select(accounts).where(accounts.c.owner_id == owner).order_by(accounts.c.account)
    return (await session.execute(stmt)).all()


# --- fills and positions ----------------------------------------------------------------------------

async def insert_fill(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Record a fill; False when a fill with this id was recorded before (it is not applied again)."""
    stmt = (postgresql.insert(fills).values(**values)
            .on_conflict_do_nothing(index_elements=[fills.c.id]).returning(fills.c.id))
    return (await session.execute(stmt)).first() is not None


async def position_for_update(session: AsyncSession, owner: UUID, account: str,
                              symbol: str) -> Record | None:
    stmt = (sa.select(positions)
            .where(positions.c.owner_id == owner, positions.c.account == account,
                   positions.c.symbol == symbol)
            .with_for_update())
    return (await session.execute(stmt)).first()


async def save_position(session: AsyncSession, *, owner: UUID, account: str, symbol: str, quantity: Decimal,
                        average_price: Decimal, realized_pnl: Decimal, fees: Decimal, last_fill_at: datetime,
                        now: datetime) -> None:
    values = {"quantity": quantity, "average_price": average_price, "realized_pnl": realized_pnl,
              "fees": fees, "last_fill_at": last_fill_at, "updated_at": now}
    stmt = (postgresql.insert(positions)
            .values(owner_id=owner, account=account, symbol=symbol, **values)
            .on_conflict_do_update(index_elements=[positions.c.owner_id, positions.c.account,
                                                   positions.c.symbol], set_=values))
    await session.execute(stmt)


async def realized_by_symbol(session: AsyncSession, owner: UUID, account: str) -> dict[str, Decimal]:
    stmt = (sa.select(positions.c.symbol, positions.c.realized_pnl)
            .where(positions.c.owner_id == owner, positions.c.account == account))
    return {r.symbol: r.realized_pnl for r in (await session.execute(stmt)).all()}


async def fills_of_position(session: AsyncSession, owner: UUID, account: str,
                            symbol: str) -> Sequence[Record]:
    """Every fill of one position in the order they happened (ties: the order they arrived)."""
    stmt = (sa.select(fills)
            .where(fills.c.owner_id == owner, fills.c.account == account, fills.c.symbol == symbol)
            .order_by(fills.c.time, fills.c.seq))
    return (await session.execute(stmt)).all()


async def positions_of(session: AsyncSession, owner: UUID, account: str, *,
                       include_flat: bool = False) -> Sequence[Record]:
    stmt = sa.select(positions).where(positions.c.owner_id == owner, positions.c.account == account)
    if not include_flat:
        stmt = stmt.where(positions.c.quantity != 0)
    return (await session.execute(stmt.order_by(positions.c.symbol))).all()


# --- cash ledger -----------------------------------------------------------------------------------

async def add_ledger_entry(session: AsyncSession, *, owner: UUID, account: str, kind: str, amount: Decimal,
                           balance: Decimal, time: datetime, fill_id: UUID | None = None,
                           symbol: str | None = None) -> None:
    await session.execute(sa.insert(cash_ledger).values(
        owner_id=owner, account=account, kind=kind, amount=amount, balance=balance, fill_id=fill_id,
        symbol=symbol, time=time))


async def ledger_of(session: AsyncSession, owner: UUID, account: str, *, limit: int,
                    before: int | None = None) -> Sequence[Record]:
    """The newest `limit` entries (older than entry `before` when given), newest first."""
    stmt = sa.select(cash_ledger).where(cash_ledger.c.owner_id == owner, cash_ledger.c.account == account)
    if before is not None:
        stmt = stmt.where(cash_ledger.c.id < before)
    return (await session.execute(stmt.order_by(cash_ledger.c.id.desc()).limit(limit))).all()
