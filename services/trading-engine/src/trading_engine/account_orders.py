"""Orders and fills as the engine keeps them: the trading core's Order with the account it belongs to,
and the one JSON shape that both the API and the `orders.*` / `fills.*` events use.

An account is "paper" (the engine's own venue) or the name of one of the owner's venue accounts; the
order's `venue` says which kind of venue executes it ("paper", "ccxt", "mt5").
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from aitrading.trading.orders import Fill, Order, OrderIntent, OrderStatus, OrderType, Side, TimeInForce

PAPER = "paper"
# The symbols database-service accepts: letters and digits first, then . _ / : - + = ^ @.
SYMBOL = r"^[A-Za-z0-9^][A-Za-z0-9._/:\-+=^@]{0,63}$"


@dataclass
class AccountOrder(Order):
    """An order of one of the owner's accounts."""

    account: str = PAPER

    @classmethod
    def for_intent(cls, intent: OrderIntent, *, owner: UUID, account: str, venue: str, now: datetime,
                   strategy_id: UUID | None = None) -> AccountOrder:
        base = Order.from_intent(intent, owner=owner, now=now, venue=venue, strategy_id=strategy_id)
        return cls(**{f.name: getattr(base, f.name) for f in fields(Order)}, account=account)

    def copy(self) -> AccountOrder:
        return replace(self)

    @property
    def is_paper(self) -> bool:
        return self.venue == PAPER


def order_from_row(row: Any) -> AccountOrder:
    """An order from a row of the `orders` table."""
    return AccountOrder(
        id=row.id, owner=row.owner_id, symbol=row.symbol, side=Side(row.side), type=OrderType(row.type),
        quantity=row.quantity, created_at=row.created_at, price=row.price, stop_price=row.stop_price,
        time_in_force=TimeInForce(row.time_in_force), client_order_id=row.client_order_id,
        status=OrderStatus(row.status), filled_quantity=row.filled_quantity, average_price=row.average_price,
        fees=row.fees, triggered=row.triggered, reason=row.reason, venue=row.venue,
        venue_order_id=row.venue_order_id, strategy_id=row.strategy_id, updated_at=row.updated_at,
        account=row.account)


def order_json(order: AccountOrder) -> dict[str, Any]:
    """The order as the API returns it (Decimals and times are rendered by the JSON encoder)."""
    return {
        "id": order.id, "client_order_id": order.client_order_id, "status": order.status.value,
        "symbol": order.symbol, "side": order.side.value, "type": order.type.value,
        "quantity": order.quantity, "price": order.price, "stop_price": order.stop_price,
        "time_in_force": order.time_in_force.value, "filled_quantity": order.filled_quantity,
        "average_price": order.average_price, "fees": order.fees, "account": order.account,
        "reason": order.reason, "strategy_id": order.strategy_id, "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


@dataclass(frozen=True)
class AccountFill:
    """A recorded execution with the account it belongs to."""

    fill: Fill
    account: str
    realized_pnl: Decimal

    @property
    def id(self) -> UUID:
        return self.fill.id


def fill_from_row(row: Any) -> AccountFill:
    fill = Fill(order_id=row.order_id, owner=row.owner_id, symbol=row.symbol, side=Side(row.side),
                quantity=row.quantity, price=row.price, fee=row.fee, time=row.time, liquidity=row.liquidity,
                id=row.id, strategy_id=row.strategy_id)
    return AccountFill(fill, row.account, row.realized_pnl)


def fill_json(fill: Fill, account: str) -> dict[str, Any]:
    return {
        "id": fill.id, "order_id": fill.order_id, "account": account, "symbol": fill.symbol,
        "side": fill.side.value, "quantity": fill.quantity, "price": fill.price, "fee": fill.fee,
        "liquidity": fill.liquidity, "time": fill.time, "strategy_id": fill.strategy_id,
    }
