"""Routes: /api/v1/orders and /api/v1/fills — a user's orders and executions (everything by owner)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from aitrading.auth import CurrentUser
from aitrading.db import DbSession
from aitrading.errors import NotFound
from aitrading.service import from_state
from aitrading.trading.orders import OrderIntent, OrderStatus, OrderType, Side, TimeInForce
from trading_engine import store
from trading_engine.account_orders import (
    PAPER,
    SYMBOL,
    AccountOrder,
    fill_from_row,
    fill_json,
    order_from_row,
    order_json,
)
from trading_engine.orders import OrderFlow

router = APIRouter(prefix="/api/v1", tags=["orders"])

Flow = Annotated[OrderFlow, Depends(from_state("flow"))]

CLIENT_ORDER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}$"
Amount = Annotated[Decimal, Field(max_digits=38, decimal_places=18)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


class OrderIn(BaseModel):
    symbol: str = Field(pattern=SYMBOL, description="e.g. SPX, BTC/USDT")
    side: Side
    type: OrderType
    quantity: Amount = Field(description="greater than 0; a decimal string or a number")
    price: Amount | None = Field(default=None, description="limit price (limit, stop_limit)")
    stop_price: Amount | None = Field(default=None, description="trigger price (stop, stop_limit)")
    time_in_force: TimeInForce = TimeInForce.GTC
    client_order_id: str | None = Field(default=None, pattern=CLIENT_ORDER_ID,
                                        description="your id: the same id again returns the same order")
    account: str = Field(default=PAPER, min_length=1, max_length=64,
                         description="'paper' or the name of one of your venue accounts")

    def intent(self) -> OrderIntent:
        return OrderIntent(symbol=self.symbol, side=self.side, type=self.type, quantity=self.quantity,
                           price=self.price, stop_price=self.stop_price, time_in_force=self.time_in_force,
                           client_order_id=self.client_order_id)


class OrderOut(BaseModel):
    id: UUID
    client_order_id: str | None
    status: OrderStatus
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: TimeInForce
    filled_quantity: Decimal
    average_price: Decimal | None
    fees: Decimal
    account: str
    reason: str | None = Field(description="why it was denied, rejected, canceled or expired")
    strategy_id: UUID | None = Field(description="the deployed strategy that placed it")
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, order: AccountOrder) -> OrderOut:
        return cls(**order_json(order))


class FillOut(BaseModel):
    id: UUID
    order_id: UUID
    account: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: str
    time: datetime
    strategy_id: UUID | None


@router.post("/orders", status_code=201, response_model=OrderOut,
             responses={200: {"description": "an order with this client_order_id existed: that order"},
                        422: {"description": "invalid order, or refused by risk (`rule` names the rule)"}})
async def place_order(body: OrderIn, user: CurrentUser, db: DbSession, flow: Flow,
                      response: Response) -> OrderOut:
    placement = await flow.place_and_send(db, user.id, body.intent(), account=body.account, token=user.token)
    if not placement.created:
        response.status_code = 200
    return OrderOut.of(placement.order)


@router.get("/orders", response_model=list[OrderOut])
async def list_orders(user: CurrentUser, db: DbSession, status: OrderStatus | None = None,
                      symbol: Annotated[str | None, Query(max_length=64)] = None,
                      account: Annotated[str | None, Query(max_length=64)] = None,
                      limit: Limit = 100) -> list[OrderOut]:
    rows = await store.list_orders(db, user.id, status=status.value if status else None, symbol=symbol,
                                   account=account, limit=limit)
    return [OrderOut.of(order_from_row(r)) for r in rows]


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: UUID, user: CurrentUser, db: DbSession) -> OrderOut:
    row = await store.owned_order(db, user.id, order_id)
    if row is None:
        raise NotFound(f"no order {order_id}")
    return OrderOut.of(order_from_row(row))


@router.delete("/orders/{order_id}", response_model=OrderOut,
               responses={409: {"description": "the order is already final (filled, canceled, ...)"}})
async def cancel_order(order_id: UUID, user: CurrentUser, db: DbSession, flow: Flow) -> OrderOut:
    return OrderOut.of(await flow.cancel_and_send(db, user.id, order_id))


@router.get("/fills", response_model=list[FillOut])
async def list_fills(user: CurrentUser, db: DbSession, order_id: UUID | None = None,
                     symbol: Annotated[str | None, Query(max_length=64)] = None,
                     account: Annotated[str | None, Query(max_length=64)] = None,
                     limit: Limit = 100) -> list[dict[str, Any]]:
    rows = await store.list_fills(db, user.id, order_id=order_id, symbol=symbol, account=account, limit=limit)
    return [fill_json(f.fill, f.account) for f in map(fill_from_row, rows)]
