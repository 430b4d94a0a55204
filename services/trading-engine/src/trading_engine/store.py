"""Tables of trading-engine and the named queries on them (the only SQL of the engine's own tables).

Every query on a user's data is filtered by its owner, except the engine's own sweeps (resting paper
orders, day-order expiry, reconciling external orders, the strategies of a series), which act for
every owner. Money and quantities are NUMERIC without scale: Decimals round-trip exactly.
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
from aitrading.trading.orders import OPEN_STATUSES, Fill, OrderStatus, TimeInForce
from trading_engine.account_orders import PAPER, AccountOrder

metadata = naming_convention_metadata()

Record = Row[*tuple[Any, ...]]

TS = sa.DateTime(timezone=True)
ID = postgresql.UUID(as_uuid=True)
NUM = sa.Numeric()
OPEN = sorted(s.value for s in OPEN_STATUSES)

risk_accounts = sa.Table(
    "risk_accounts", metadata,
    sa.Column("owner_id", ID, primary_key=True),
    sa.Column("state", sa.Text(), nullable=False, server_default="active"),
    sa.Column("reason", sa.Text()),
    sa.Column("live_enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("limits", postgresql.JSONB()),  # null: the settings' defaults
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("owner_id", ID, nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("venue", sa.Text(), nullable=False),
    sa.Column("client_order_id", sa.Text()),
    sa.Column("symbol", sa.Text(), nullable=False),
    sa.Column("side", sa.Text(), nullable=False),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("time_in_force", sa.Text(), nullable=False),
    sa.Column("quantity", NUM, nullable=False),
    sa.Column("price", NUM),
    sa.Column("stop_price", NUM),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("filled_quantity", NUM, nullable=False),
    sa.Column("average_price", NUM),
    sa.Column("fees", NUM, nullable=False),
    sa.Column("triggered", sa.Boolean(), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("venue_order_id", sa.Text()),
    sa.Column("strategy_id", ID),
    # An external order being sent or reconciled by one instance until then; others leave it alone.
    sa.Column("claimed_until", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("owner_id", "client_order_id", name="uq_orders_owner_id_client_order_id"),
)
sa.Index("ix_orders_owner_id_created_at", orders.c.owner_id, orders.c.created_at)
sa.Index("ix_orders_open", orders.c.owner_id, orders.c.account, postgresql_where=orders.c.status.in_(OPEN))
sa.Index("ix_orders_open_by_venue", orders.c.venue, postgresql_where=orders.c.status.in_(OPEN))

fills = sa.Table(
    "fills", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("order_id", ID, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("owner_id", ID, nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("symbol", sa.Text(), nullable=False),
    sa.Column("side", sa.Text(), nullable=False),
    sa.Column("quantity", NUM, nullable=False),
    sa.Column("price", NUM, nullable=False),
    sa.Column("fee", NUM, nullable=False),
    sa.Column("liquidity", sa.Text(), nullable=False),
    sa.Column("time", TS, nullable=False),
    sa.Column("strategy_id", ID),
    sa.Column("realized_pnl", NUM, nullable=False),  # before fees, what this fill closed
    sa.Column("venue_trade_id", sa.Text()),          # null on paper; the dedupe key of venue reports
    sa.UniqueConstraint("order_id", "venue_trade_id", name="uq_fills_order_id_venue_trade_id"),
)
sa.Index("ix_fills_owner_id_time", fills.c.owner_id, fills.c.time)
sa.Index("ix_fills_order_id", fills.c.order_id)

positions = sa.Table(
    "positions", metadata,
    sa.Column("owner_id", ID, primary_key=True),
    sa.Column("account", sa.Text(), primary_key=True),
    sa.Column("symbol", sa.Text(), primary_key=True),
    sa.Column("quantity", NUM, nullable=False),
    sa.Column("average_price", NUM, nullable=False),
    sa.Column("realized_pnl", NUM, nullable=False),
    sa.Column("fees", NUM, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("owner_id", ID, nullable=False),
    sa.Column("strategy", sa.Text(), nullable=False),
    sa.Column("params", postgresql.JSONB(), nullable=False),
    sa.Column("symbol", sa.Text(), nullable=False),
    sa.Column("timeframe", sa.Text(), nullable=False),
    sa.Column("mode", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("position", NUM, nullable=False),
    sa.Column("last_bar_time", TS),
    sa.Column("last_error", sa.Text()),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)
sa.Index("ix_deployments_owner_id_created_at", deployments.c.owner_id, deployments.c.created_at)
sa.Index("ix_deployments_series", deployments.c.symbol, deployments.c.timeframe,
         postgresql_where=deployments.c.enabled)


# --- risk accounts ---------------------------------------------------------------------------------

async def lock_risk_account(session: AsyncSession, owner: UUID, now: datetime) -> Record:
    """The owner's risk account, created on first use, locked until the transaction ends.

    Everything that changes an owner's orders, fills or positions takes this lock first, so placement,
    fills and state changes of one owner happen one at a time across replicas.
    """
    stmt = sa.select(risk_accounts).where(risk_accounts.c.owner_id == owner).with_for_update()
    found = (await session.execute(stmt)).first()
    if found is not None:  # the usual case: one round trip
        return found
    await session.execute(postgresql.insert(risk_accounts)
                          .values(owner_id=owner, created_at=now, updated_at=now)
                          .on_conflict_do_nothing(index_elements=["owner_id"]))
    return (await session.execute(stmt)).one()


async def risk_account(session: AsyncSession, owner: UUID) -> Record | None:
    stmt = sa.select(risk_accounts).where(risk_accounts.c.owner_id == owner)
    return (await session.execute(stmt)).first()


async def update_risk_account(session: AsyncSession, owner: UUID, now: datetime, **values: Any) -> Record:
    stmt = (sa.update(risk_accounts).where(risk_accounts.c.owner_id == owner)
            .values(updated_at=now, **values).returning(*risk_accounts.c))
    return (await session.execute(stmt)).one()


# --- orders ----------------------------------------------------------------------------------------

def _order_values(order: AccountOrder) -> dict[str, Any]:
    return {
        "status": order.status.value, "filled_quantity": order.filled_quantity,
        "average_price": order.average_price, "fees": order.fees, "triggered": order.triggered,
        "reason": order.reason, "venue_order_id": order.venue_order_id, "updated_at": order.updated_at,
    }


async def insert_order(session: AsyncSession, order: AccountOrder, *,
                       claimed_until: datetime | None = None) -> bool:
    """Store a new order; False when the owner already has an order with its client_order_id."""
    stmt = (postgresql.insert(orders)
            .values(id=order.id, owner_id=order.owner, account=order.account, venue=order.venue,
                    client_order_id=order.client_order_id, symbol=order.symbol, side=order.side.value,
                    type=order.type.value, time_in_force=order.time_in_force.value, quantity=order.quantity,
                    price=order.price, stop_price=order.stop_price, strategy_id=order.strategy_id,
                    created_at=order.created_at, claimed_until=claimed_until, **_order_values(order))
            .on_conflict_do_nothing(constraint="uq_orders_owner_id_client_order_id")
            .returning(orders.c.id))
    return (await session.execute(stmt)).first() is not None


async def update_order(session: AsyncSession, order: AccountOrder, *, expected_filled: Decimal | None = None,
                       expected_status: OrderStatus | None = None) -> bool:
    """Write the order's changing fields; with expectations, only if the stored order still matches them
    (what the caller read), so two instances never apply the same change twice. True when written."""
    stmt = sa.update(orders).where(orders.c.id == order.id)
    if expected_filled is not None:
        stmt = stmt.where(orders.c.filled_quantity == expected_filled, orders.c.status.in_(OPEN))
    if expected_status is not None:
        stmt = stmt.where(orders.c.status == expected_status.value)
    result = await session.execute(stmt.values(**_order_values(order)).returning(orders.c.id))
    return result.first() is not None


async def order_by_client_id(session: AsyncSession, owner: UUID, client_order_id: str) -> Record | None:
    stmt = sa.select(orders).where(orders.c.owner_id == owner, orders.c.client_order_id == client_order_id)
    return (await session.execute(stmt)).first()


async def owned_order(session: AsyncSession, owner: UUID, order_id: UUID, *,
                      for_update: bool = False) -> Record | None:
    stmt = sa.select(orders).where(orders.c.owner_id == owner, orders.c.id == order_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).first()


async def order_for_update(session: AsyncSession, order_id: UUID) -> Record | None:
    """Any owner's order, locked (the engine's own sweeps; the caller holds the owner's lock)."""
    stmt = sa.select(orders).where(orders.c.id == order_id).with_for_update()
    return (await session.execute(stmt)).first()


async def list_orders(session: AsyncSession, owner: UUID, *, status: str | None, symbol: str | None,
                      account: str | None, limit: int) -> Sequence[Record]:
    stmt = sa.select(orders).where(orders.c.owner_id == owner)
    if status is not None:
        stmt = stmt.where(orders.c.status == status)
    if symbol is not None:
        stmt = stmt.where(orders.c.symbol == symbol)
    if account is not None:
        stmt = stmt.where(orders.c.account == account)
    stmt = stmt.order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
    return (await session.execute(stmt)).all()


async def open_orders_of(session: AsyncSession, owner: UUID, account: str) -> Sequence[Record]:
    """The account's open orders, for the open-order count and the pending quantity per symbol."""
    stmt = (sa.select(orders.c.symbol, orders.c.side, orders.c.quantity, orders.c.filled_quantity)
            .where(orders.c.owner_id == owner, orders.c.account == account, orders.c.status.in_(OPEN)))
    return (await session.execute(stmt)).all()


async def orders_placed_since(session: AsyncSession, owner: UUID, since: datetime, limit: int) -> int:
    """How many of the owner's orders passed risk (not denied) since `since`, counting up to `limit`."""
    placed = (sa.select(orders.c.id)
              .where(orders.c.owner_id == owner, orders.c.created_at > since,
                     orders.c.status != OrderStatus.DENIED.value)
              .limit(limit).subquery())
    return int((await session.execute(sa.select(sa.func.count()).select_from(placed))).scalar_one())


async def open_paper_orders(session: AsyncSession) -> Sequence[Record]:
    """Every owner's resting paper orders."""
    stmt = sa.select(orders).where(orders.c.venue == PAPER, orders.c.status.in_(OPEN))
    return (await session.execute(stmt)).all()


async def stale_day_orders(session: AsyncSession, day_start: datetime, limit: int) -> Sequence[Record]:
    """Open paper day orders placed before `day_start` (their UTC day is over)."""
    stmt = (sa.select(orders.c.id, orders.c.owner_id)
            .where(orders.c.venue == PAPER, orders.c.status.in_(OPEN),
                   orders.c.time_in_force == TimeInForce.DAY.value, orders.c.created_at < day_start)
            .order_by(orders.c.created_at).limit(limit))
    return (await session.execute(stmt)).all()


async def claim_external_orders(session: AsyncSession, now: datetime, until: datetime,
                                limit: int) -> Sequence[Record]:
    """Claim open external orders nobody holds until `until`, least recently claimed first; the rows.

    `claimed_until` is when an instance's hold on the order ends: set ahead while it sends or asks
    about the order, set to the present when it is done (so it also orders the rotation)."""
    candidates = (sa.select(orders.c.id)
                  .where(orders.c.venue != PAPER, orders.c.status.in_(OPEN),
                         sa.or_(orders.c.claimed_until.is_(None), orders.c.claimed_until < now))
                  .order_by(orders.c.claimed_until.asc().nulls_first(), orders.c.updated_at).limit(limit)
                  .with_for_update(skip_locked=True))
    stmt = (sa.update(orders).where(orders.c.id.in_(candidates.scalar_subquery()))
            .values(claimed_until=until).returning(*orders.c))
    return (await session.execute(stmt)).all()


async def set_claim(session: AsyncSession, order_id: UUID, until: datetime) -> None:
    await session.execute(sa.update(orders).where(orders.c.id == order_id).values(claimed_until=until))


# --- fills -----------------------------------------------------------------------------------------

async def insert_fill(session: AsyncSession, fill: Fill, *, account: str, realized_pnl: Decimal,
                      venue_trade_id: str | None = None) -> bool:
    """Record an execution; False when the venue trade was already recorded for this order."""
    stmt = (postgresql.insert(fills)
            .values(id=fill.id, order_id=fill.order_id, owner_id=fill.owner, account=account,
                    symbol=fill.symbol, side=fill.side.value, quantity=fill.quantity, price=fill.price,
                    fee=fill.fee, liquidity=fill.liquidity, time=fill.time, strategy_id=fill.strategy_id,
                    realized_pnl=realized_pnl, venue_trade_id=venue_trade_id)
            .on_conflict_do_nothing(constraint="uq_fills_order_id_venue_trade_id")
            .returning(fills.c.id))
    return (await session.execute(stmt)).first() is not None


async def venue_trade_recorded(session: AsyncSession, order_id: UUID, venue_trade_id: str) -> bool:
    stmt = sa.select(fills.c.id).where(fills.c.order_id == order_id, fills.c.venue_trade_id == venue_trade_id)
    return (await session.execute(stmt)).first() is not None


async def list_fills(session: AsyncSession, owner: UUID, *, order_id: UUID | None, symbol: str | None,
                     account: str | None, limit: int) -> Sequence[Record]:
    stmt = sa.select(fills).where(fills.c.owner_id == owner)
    if order_id is not None:
        stmt = stmt.where(fills.c.order_id == order_id)
    if symbol is not None:
        stmt = stmt.where(fills.c.symbol == symbol)
    if account is not None:
        stmt = stmt.where(fills.c.account == account)
    stmt = stmt.order_by(fills.c.time.desc(), fills.c.id.desc()).limit(limit)
    return (await session.execute(stmt)).all()


async def realized_since(session: AsyncSession, owner: UUID, account: str, since: datetime) -> Decimal:
    """Realized P&L net of fees of the account's fills since `since`."""
    stmt = (sa.select(sa.func.coalesce(sa.func.sum(fills.c.realized_pnl - fills.c.fee), 0))
            .where(fills.c.owner_id == owner, fills.c.account == account, fills.c.time >= since))
    return Decimal((await session.execute(stmt)).scalar_one())


# --- positions -------------------------------------------------------------------------------------

async def position_for_update(session: AsyncSession, owner: UUID, account: str, symbol: str) -> Record | None:
    stmt = (sa.select(positions)
            .where(positions.c.owner_id == owner, positions.c.account == account,
                   positions.c.symbol == symbol)
            .with_for_update())
    return (await session.execute(stmt)).first()


async def save_position(session: AsyncSession, owner: UUID, account: str, symbol: str, *, quantity: Decimal,
                        average_price: Decimal, realized_pnl: Decimal, fees: Decimal, now: datetime) -> None:
    values = {"quantity": quantity, "average_price": average_price, "realized_pnl": realized_pnl,
              "fees": fees, "updated_at": now}
    stmt = (postgresql.insert(positions).values(owner_id=owner, account=account, symbol=symbol, **values)
            .on_conflict_do_update(index_elements=["owner_id", "account", "symbol"], set_=values))
    await session.execute(stmt)


async def open_positions(session: AsyncSession, owner: UUID, account: str) -> Sequence[Record]:
    stmt = (sa.select(positions)
            .where(positions.c.owner_id == owner, positions.c.account == account, positions.c.quantity != 0))
    return (await session.execute(stmt)).all()


# --- deployments -----------------------------------------------------------------------------------

async def insert_deployment(session: AsyncSession, **values: Any) -> Record:
    stmt = postgresql.insert(deployments).values(**values).returning(*deployments.c)
    return (await session.execute(stmt)).one()


async def count_deployments(session: AsyncSession, owner: UUID) -> int:
    stmt = sa.select(sa.func.count()).select_from(deployments).where(deployments.c.owner_id == owner)
    return int((await session.execute(stmt)).scalar_one())


async def deployments_of(session: AsyncSession, owner: UUID) -> Sequence[Record]:
    stmt = (sa.select(deployments).where(deployments.c.owner_id == owner)
            .order_by(deployments.c.created_at.desc(), deployments.c.id))
    return (await session.execute(stmt)).all()


async def owned_deployment(session: AsyncSession, owner: UUID, deployment_id: UUID) -> Record | None:
    stmt = sa.select(deployments).where(deployments.c.owner_id == owner, deployments.c.id == deployment_id)
    return (await session.execute(stmt)).first()


async def deployment(session: AsyncSession, deployment_id: UUID) -> Record | None:
    stmt = sa.select(deployments).where(deployments.c.id == deployment_id)
    return (await session.execute(stmt)).first()


async def update_deployment(session: AsyncSession, owner: UUID, deployment_id: UUID, now: datetime,
                            **values: Any) -> Record | None:
    stmt = (sa.update(deployments)
            .where(deployments.c.owner_id == owner, deployments.c.id == deployment_id)
            .values(updated_at=now, **values).returning(*deployments.c))
    return (await session.execute(stmt)).first()


async def delete_deployment(session: AsyncSession, owner: UUID, deployment_id: UUID) -> bool:
    stmt = (sa.delete(deployments)
            .where(deployments.c.owner_id == owner, deployments.c.id == deployment_id)
            .returning(deployments.c.id))
    return (await session.execute(stmt)).first() is not None


async def deployments_on(session: AsyncSession, symbol: str, timeframe: str) -> Sequence[Record]:
    """The enabled deployments of one series, by owner (the order their owners' locks are taken in)."""
    stmt = (sa.select(deployments)
            .where(deployments.c.enabled, deployments.c.symbol == symbol,
                   deployments.c.timeframe == timeframe)
            .order_by(deployments.c.owner_id, deployments.c.id))
    return (await session.execute(stmt)).all()


async def add_deployment_position(session: AsyncSession, deployment_id: UUID, signed: Decimal) -> None:
    await session.execute(sa.update(deployments).where(deployments.c.id == deployment_id)
                          .values(position=deployments.c.position + signed))


async def mark_deployment_bar(session: AsyncSession, deployment_id: UUID, *, bar_time: datetime,
                              error: str | None, now: datetime) -> None:
    """Record the bar a deployment decided on (and what went wrong, if anything)."""
    await session.execute(sa.update(deployments).where(deployments.c.id == deployment_id)
                          .values(last_bar_time=bar_time, last_error=error, updated_at=now))
