"""Routes: /api/v1/risk — the user's limits, the kill switch, and the admin's per-user controls."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from aitrading.auth import AdminUser, CurrentUser
from aitrading.db import DbSession
from aitrading.errors import Invalid
from aitrading.service import from_state
from aitrading.trading.risk import Instrument, RiskLimits, TradingState
from trading_engine import risk_accounts
from trading_engine.account_orders import SYMBOL
from trading_engine.risk_accounts import RiskAccount
from trading_engine.settings import Settings

router = APIRouter(prefix="/api/v1/risk", tags=["risk"])

Config = Annotated[Settings, Depends(from_state("settings"))]
Symbol = Annotated[str, Field(pattern=SYMBOL)]
Positive = Annotated[Decimal, Field(gt=0, max_digits=38, decimal_places=18)]


class InstrumentIO(BaseModel):
    quantity_step: Positive | None = None
    price_tick: Positive | None = None
    min_quantity: Positive | None = None


class LimitsIn(BaseModel):
    """A full replacement of your limits: a field left out takes the deployment's default, a field set to
    null is not enforced. `state` and `live_enabled` may be sent back as read; they change elsewhere."""

    max_order_notional: Positive | None = None
    max_position_notional: Positive | None = None
    max_position_quantity: Positive | None = None
    max_gross_exposure: Positive | None = None
    max_open_orders: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_orders_per_window: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    order_window_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    daily_loss_limit: Annotated[Decimal, Field(ge=0, max_digits=38, decimal_places=18)] | None = None
    price_band_pct: Annotated[Decimal, Field(gt=0, le=1000)] | None = None
    allowed_symbols: Annotated[list[Symbol], Field(max_length=10_000)] | None = None
    instruments: Annotated[dict[Symbol, InstrumentIO], Field(max_length=10_000)] | None = None
    state: TradingState | None = Field(default=None, description="read-only: POST /risk/halt, resume, reduce")
    live_enabled: bool | None = Field(default=None, description="read-only: set by an admin")

    def limits(self, defaults: RiskLimits) -> RiskLimits:
        given = self.model_fields_set
        if "order_window_s" in given and self.order_window_s is None:
            raise Invalid("order_window_s must be a number of seconds",
                          errors=[{"field": "order_window_s", "reason": "must be a number greater than 0"}])
        values: dict[str, Any] = {}
        for name in ("max_order_notional", "max_position_notional", "max_position_quantity",
                     "max_gross_exposure", "max_open_orders", "max_orders_per_window", "order_window_s",
                     "daily_loss_limit", "price_band_pct"):
            values[name] = getattr(self, name) if name in given else getattr(defaults, name)
        if "allowed_symbols" in given:
            allowed = self.allowed_symbols
            values["allowed_symbols"] = None if allowed is None else frozenset(allowed)
        else:
            values["allowed_symbols"] = defaults.allowed_symbols
        values["instruments"] = {
            symbol: Instrument(symbol, spec.quantity_step, spec.price_tick, spec.min_quantity)
            for symbol, spec in (self.instruments or {}).items()}
        return RiskLimits(**values)

    def check_read_only(self, account: RiskAccount) -> None:
        if self.state is not None and self.state is not account.state:
            raise Invalid("the trading state changes through POST /api/v1/risk/halt, /resume or /reduce",
                          errors=[{"field": "state", "reason": "read-only here"}])
        if self.live_enabled is not None and self.live_enabled != account.live_enabled:
            raise Invalid("live trading is enabled per user by an admin",
                          errors=[{"field": "live_enabled", "reason": "read-only: set by an admin"}])


class LimitsOut(BaseModel):
    max_order_notional: Decimal | None
    max_position_notional: Decimal | None
    max_position_quantity: Decimal | None
    max_gross_exposure: Decimal | None
    max_open_orders: int | None
    max_orders_per_window: int | None
    order_window_s: float
    daily_loss_limit: Decimal | None
    price_band_pct: Decimal | None
    allowed_symbols: list[str] | None
    instruments: dict[str, InstrumentIO]
    state: TradingState
    reason: str | None
    live_enabled: bool
    defaults: bool = Field(description="true while you have not set your own limits")

    @classmethod
    def of(cls, account: RiskAccount) -> LimitsOut:
        return cls(**risk_accounts.limits_json(account.limits), state=account.state, reason=account.reason,
                   live_enabled=account.live_enabled, defaults=not account.custom_limits)


class StateIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class StateOut(BaseModel):
    owner_id: UUID
    state: TradingState
    reason: str | None
    live_enabled: bool
    updated_at: datetime | None

    @classmethod
    def of(cls, account: RiskAccount) -> StateOut:
        return cls(owner_id=account.owner, state=account.state, reason=account.reason,
                   live_enabled=account.live_enabled, updated_at=account.updated_at)


class UserRiskIn(BaseModel):
    state: TradingState | None = None
    reason: str | None = Field(default=None, max_length=500)
    live_enabled: bool | None = None


@router.get("/limits", response_model=LimitsOut)
async def get_limits(user: CurrentUser, db: DbSession, settings: Config) -> LimitsOut:
    return LimitsOut.of(await risk_accounts.get(db, user.id, settings))


@router.put("/limits", response_model=LimitsOut)
async def put_limits(body: LimitsIn, user: CurrentUser, db: DbSession, settings: Config) -> LimitsOut:
    body.check_read_only(await risk_accounts.get(db, user.id, settings))
    limits = body.limits(risk_accounts.default_limits(settings))
    return LimitsOut.of(await risk_accounts.set_limits(db, user.id, limits, settings))


@router.get("/state", response_model=StateOut)
async def get_state(user: CurrentUser, db: DbSession, settings: Config) -> StateOut:
    return StateOut.of(await risk_accounts.get(db, user.id, settings))


async def _switch(db: DbSession, owner: UUID, state: TradingState, body: StateIn | None,
                  settings: Settings) -> StateOut:
    reason = body.reason if body is not None else None
    return StateOut.of(await risk_accounts.set_state(db, owner, state, reason, settings))


@router.post("/halt", response_model=StateOut)
async def halt(user: CurrentUser, db: DbSession, settings: Config, body: StateIn | None = None) -> StateOut:
    """The kill switch: every new order is refused (rule trading_state) until resumed; cancels still work."""
    return await _switch(db, user.id, TradingState.HALTED, body, settings)


@router.post("/reduce", response_model=StateOut)
async def reduce(user: CurrentUser, db: DbSession, settings: Config, body: StateIn | None = None) -> StateOut:
    """Only orders that shrink a position are accepted."""
    return await _switch(db, user.id, TradingState.REDUCING, body, settings)


@router.post("/resume", response_model=StateOut)
async def resume(user: CurrentUser, db: DbSession, settings: Config, body: StateIn | None = None) -> StateOut:
    return await _switch(db, user.id, TradingState.ACTIVE, body, settings)


@router.put("/users/{user_id}", response_model=StateOut)
async def admin_update(user_id: UUID, body: UserRiskIn, admin: AdminUser, db: DbSession,
                       settings: Config) -> StateOut:
    """Admin: a user's trading state and whether they may trade live."""
    account = await risk_accounts.get(db, user_id, settings)
    if body.live_enabled is not None:
        account = await risk_accounts.set_live_enabled(db, user_id, body.live_enabled, settings)
    if body.state is not None:
        reason = body.reason if body.reason is not None else f"set by admin {admin.id}"
        account = await risk_accounts.set_state(db, user_id, body.state, reason, settings)
    return StateOut.of(account)
