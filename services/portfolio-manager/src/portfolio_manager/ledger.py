"""Applying a fill to an account: position, cash, realized P&L, fees and a cash-ledger entry.

The arithmetic is the trading core's (`aitrading.trading.accounting`): the account and the position are
loaded into a `Portfolio`, the fill is applied there, and the result is written back. Each fill is
applied once, keyed by its own id, whatever event carried it. Fills of one account apply one at a time
under a row lock, so replicas that split the consumer never lose an update.

A fill older than the last one the position saw (replicas can finish fills of one symbol out of
order; a restart gets unacknowledged fills again after newer ones) rebuilds the position from all its
stored fills in time order, so its average price and realized P&L come out exactly as if the fills had
arrived in order, and the account's realized P&L is then the sum over its positions. Cash and fees do
not depend on the order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.trading.accounting import Portfolio, Position
from aitrading.trading.orders import Fill, Side
from portfolio_manager import store

PAPER = "paper"
ZERO = Decimal(0)


class FillData(BaseModel):
    """The `data` of a `fill` event, as trading-engine publishes it (see the contract)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID
    order_id: UUID
    owner_id: UUID
    account: str = Field(min_length=1, max_length=200)
    symbol: str = Field(min_length=1, max_length=200)
    side: Side
    quantity: Decimal = Field(gt=0, allow_inf_nan=False)
    price: Decimal = Field(gt=0, allow_inf_nan=False)
    fee: Decimal = Field(default=ZERO, allow_inf_nan=False)  # negative: a maker rebate
    liquidity: str = "taker"
    time: datetime
    strategy_id: UUID | None = None

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class AccountFill:
    """A fill and the account of its owner it belongs to."""

    account: str
    fill: Fill


def parse_fill(data: dict[str, Any]) -> AccountFill:
    """The fill in an event's data; raises ValueError (pydantic's ValidationError) when it is not one."""
    parsed = FillData.model_validate(data)
    fill = Fill(order_id=parsed.order_id, owner=parsed.owner_id, symbol=parsed.symbol, side=parsed.side,
                quantity=parsed.quantity, price=parsed.price, fee=parsed.fee, time=parsed.time,
                liquidity=parsed.liquidity, id=parsed.id, strategy_id=parsed.strategy_id)
    return AccountFill(parsed.account, fill)


def initial_cash(account: str, paper_initial_cash: Decimal) -> Decimal:
    """What an account starts with: the paper allowance, or nothing for a venue account."""
    return paper_initial_cash if account == PAPER else ZERO


def rebuilt_position(symbol: str, fills: Iterable[Fill]) -> Position:
    """The position that `fills`, in this order, make from flat."""
    position = Position(symbol)
    for fill in fills:
        position.apply(fill.side, fill.quantity, fill.price, fill.fee)
    return position


@dataclass(frozen=True)
class Applied:
    """The state of the account and the position after one fill."""

    owner: UUID
    account: str
    fill: Fill
    position: Position
    cash: Decimal
    cash_change: Decimal
    realized_pnl: Decimal      # of the account, all symbols
    fees: Decimal              # of the account, all symbols
    rebuilt: bool              # the fill came out of order and the position was replayed


async def apply_fill(session: AsyncSession, received: AccountFill, *, event_id: UUID,
                     paper_initial_cash: Decimal, now: datetime) -> Applied | None:
    """Apply one fill in the caller's transaction; None when this fill id was applied before."""
    fill, account = received.fill, received.account
    owner, symbol = fill.owner, fill.symbol
    recorded = await store.insert_fill(session, {
        "id": fill.id, "event_id": event_id, "owner_id": owner, "account": account, "order_id": fill.order_id,
        "symbol": symbol, "side": fill.side.value, "quantity": fill.quantity, "price": fill.price,
        "fee": fill.fee, "liquidity": fill.liquidity, "time": fill.time, "strategy_id": fill.strategy_id,
        "applied_at": now})
    if not recorded:
        return None

    starting = initial_cash(account, paper_initial_cash)
    if await store.create_account(session, owner=owner, account=account, initial_cash=starting, now=now) \
            and starting != ZERO:
        # Dated with the first fill, so the ledger reads in time order.
        await store.add_ledger_entry(session, owner=owner, account=account, kind="initial", amount=starting,
                                     balance=starting, time=fill.time)
    row = await store.account_for_update(session, owner, account)
    assert row is not None  # created above or before, and never deleted
    held = await store.position_for_update(session, owner, account, symbol)
    position = Position(symbol) if held is None else Position(
        symbol, held.quantity, held.average_price, held.realized_pnl, held.fees)

    portfolio = Portfolio(cash=row.cash, initial_cash=row.initial_cash, positions={symbol: position},
                          realized_pnl=row.realized_pnl, fees=row.fees)
    portfolio.apply_fill(fill)
    last_fill_at = fill.time
    rebuilt = False
    if held is not None:
        last_fill_at = max(held.last_fill_at, fill.time)
        if fill.time < held.last_fill_at:
            rows = await store.fills_of_position(session, owner, account, symbol)
            portfolio.positions[symbol] = position = rebuilt_position(symbol, (_fill_of(r) for r in rows))
            # The account's realized P&L becomes the sum over its positions (this one as rebuilt).
            others = await store.realized_by_symbol(session, owner, account)
            others[symbol] = position.realized_pnl
            portfolio.realized_pnl = sum((others[s] for s in sorted(others)), ZERO)
            rebuilt = True

    await store.save_position(session, owner=owner, account=account, symbol=symbol,
                              quantity=position.quantity, average_price=position.average_price,
                              realized_pnl=position.realized_pnl, fees=position.fees,
                              last_fill_at=last_fill_at, now=now)
    await store.update_account(session, owner=owner, account=account, cash=portfolio.cash,
                               realized_pnl=portfolio.realized_pnl, fees=portfolio.fees, now=now)
    change = portfolio.cash - row.cash
    await store.add_ledger_entry(session, owner=owner, account=account, kind="fill", amount=change,
                                 balance=portfolio.cash, time=fill.time, fill_id=fill.id, symbol=symbol)
    return Applied(owner, account, fill, position, portfolio.cash, change, portfolio.realized_pnl,
                   portfolio.fees, rebuilt)


def _fill_of(row: store.Record) -> Fill:
    return Fill(order_id=row.order_id, owner=row.owner_id, symbol=row.symbol, side=Side(row.side),
                quantity=row.quantity, price=row.price, fee=row.fee, time=row.time, liquidity=row.liquidity,
                id=row.id, strategy_id=row.strategy_id)
