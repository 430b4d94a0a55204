"""What trading-engine publishes and consumes.

Publishes (stream TRADING, always through the outbox in the transaction that made the change):
- `orders.<status>.<SYMBOL>`, type `order.<status>`: the order as the API returns it plus `owner_id`
  (every status change: submitted, accepted, partially_filled, filled, pending_cancel, canceled,
  rejected, expired, denied);
- `fills.<SYMBOL>`, type `fill`: {id, order_id, owner_id, account, symbol, side, quantity, price, fee,
  liquidity, time, strategy_id}; the event id is not the fill id;
- `risk.state`, type `risk.state`: {owner_id, state, reason, time}.

Consumes `md.bars` on `md.bar.>` (`Settings.strategy_subject`) with the durable
`<durable_prefix>-strategy-bars` (strategy_runner), and follows md.tick/md.bar on core NATS for prices.

`<SYMBOL>` is `subject_token(symbol)` (`BTC/USDT` → `BTC-USDT`); the payload keeps the real symbol.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading import outbox
from aitrading.events import Event
from aitrading.streams import subject_token
from aitrading.trading.orders import Fill
from aitrading.trading.risk import TradingState
from trading_engine.account_orders import AccountOrder, fill_json, order_json

SOURCE = "trading-engine"
FILL = "fill"
RISK_STATE = "risk.state"


def order_subject(status: str, symbol: str) -> str:
    return f"orders.{status}.{subject_token(symbol)}"


def fill_subject(symbol: str) -> str:
    return f"fills.{subject_token(symbol)}"


def order_event(order: AccountOrder) -> Event:
    status = order.status.value
    data = {**order_json(order), "owner_id": order.owner}
    return Event.new(f"order.{status}", order_subject(status, order.symbol), data, source=SOURCE)


def fill_event(fill: Fill, account: str) -> Event:
    data = {**fill_json(fill, account), "owner_id": fill.owner}
    return Event.new(FILL, fill_subject(fill.symbol), data, source=SOURCE)


def risk_state_event(owner: UUID, state: TradingState, reason: str | None, time: datetime) -> Event:
    data = {"owner_id": owner, "state": state.value, "reason": reason, "time": time}
    return Event.new(RISK_STATE, RISK_STATE, data, source=SOURCE)


async def order_changed(session: AsyncSession, order: AccountOrder) -> None:
    """Enqueue the order's current status in the caller's transaction."""
    await outbox.enqueue(session, order_event(order))


async def fill_recorded(session: AsyncSession, fill: Fill, account: str) -> None:
    await outbox.enqueue(session, fill_event(fill, account))
