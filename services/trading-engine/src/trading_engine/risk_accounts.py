"""Each user's risk account: trading state (the kill switch), risk limits, the live-trading switch, and
the view of an account that pre-trade risk judges an order against.

Limits and state are per user and apply to each of the user's accounts (paper and venue accounts
alike); positions, open orders and today's P&L are those of the account the order goes to. The
order-rate window counts all of the user's orders that passed risk, read from the database, so it holds
across replicas and restarts. The row is also the user's lock: placing orders, applying fills and
changing state take it first (`lock`), which serializes them per user across replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading import outbox
from aitrading.market.prices import LatestPrices
from aitrading.trading.orders import ZERO, Side
from aitrading.trading.risk import AccountView, Instrument, RiskEngine, RiskLimits, TradingState
from trading_engine import events, store
from trading_engine.settings import Settings

_DECIMAL_LIMITS = ("max_order_notional", "max_position_notional", "max_position_quantity",
                   "max_gross_exposure", "daily_loss_limit", "price_band_pct")
_INT_LIMITS = ("max_open_orders", "max_orders_per_window")
_INSTRUMENT_FIELDS = tuple(f.name for f in fields(Instrument) if f.name != "symbol")


@dataclass(frozen=True)
class RiskAccount:
    owner: UUID
    state: TradingState
    reason: str | None
    live_enabled: bool
    limits: RiskLimits
    custom_limits: bool          # False: the defaults of the deployment apply
    updated_at: datetime | None


def default_limits(settings: Settings) -> RiskLimits:
    return RiskLimits(
        max_order_notional=settings.risk_max_order_notional,
        max_position_notional=settings.risk_max_position_notional,
        max_position_quantity=settings.risk_max_position_quantity,
        max_gross_exposure=settings.risk_max_gross_exposure,
        max_open_orders=settings.risk_max_open_orders,
        max_orders_per_window=settings.risk_max_orders_per_window,
        order_window_s=settings.risk_order_window_s,
        daily_loss_limit=settings.risk_daily_loss_limit,
        price_band_pct=settings.risk_price_band_pct,
    )


def limits_json(limits: RiskLimits) -> dict[str, Any]:
    """Limits as stored and returned: decimals as strings, null where not enforced."""
    out: dict[str, Any] = {name: _text(getattr(limits, name)) for name in _DECIMAL_LIMITS}
    out.update({name: getattr(limits, name) for name in _INT_LIMITS})
    out["order_window_s"] = limits.order_window_s
    out["allowed_symbols"] = None if limits.allowed_symbols is None else sorted(limits.allowed_symbols)
    out["instruments"] = {symbol: {name: _text(getattr(instrument, name)) for name in _INSTRUMENT_FIELDS}
                          for symbol, instrument in sorted(limits.instruments.items())}
    return out


def limits_from_json(data: Mapping[str, Any]) -> RiskLimits:
    allowed = data.get("allowed_symbols")
    instruments = {symbol: Instrument(symbol, **{name: _dec(spec.get(name)) for name in _INSTRUMENT_FIELDS})
                   for symbol, spec in (data.get("instruments") or {}).items()}
    return RiskLimits(
        max_order_notional=_dec(data.get("max_order_notional")),
        max_position_notional=_dec(data.get("max_position_notional")),
        max_position_quantity=_dec(data.get("max_position_quantity")),
        max_gross_exposure=_dec(data.get("max_gross_exposure")),
        max_open_orders=_int(data.get("max_open_orders")),
        max_orders_per_window=_int(data.get("max_orders_per_window")),
        order_window_s=float(data.get("order_window_s", 60.0)),
        daily_loss_limit=_dec(data.get("daily_loss_limit")),
        price_band_pct=_dec(data.get("price_band_pct")),
        allowed_symbols=None if allowed is None else frozenset(allowed),
        instruments=instruments,
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _account(row: Any, settings: Settings) -> RiskAccount:
    custom = row.limits is not None
    return RiskAccount(owner=row.owner_id, state=TradingState(row.state), reason=row.reason,
                       live_enabled=row.live_enabled,
                       limits=limits_from_json(row.limits) if custom else default_limits(settings),
                       custom_limits=custom, updated_at=row.updated_at)


def _now() -> datetime:
    return datetime.now(UTC)


async def lock(session: AsyncSession, owner: UUID, settings: Settings) -> RiskAccount:
    """The user's risk account, created with the defaults on first use, locked for this transaction."""
    return _account(await store.lock_risk_account(session, owner, _now()), settings)


async def get(session: AsyncSession, owner: UUID, settings: Settings) -> RiskAccount:
    """The user's risk account as it stands (the defaults for a user who never traded)."""
    row = await store.risk_account(session, owner)
    if row is None:
        return RiskAccount(owner, TradingState.ACTIVE, None, False, default_limits(settings), False, None)
    return _account(row, settings)


async def set_state(session: AsyncSession, owner: UUID, state: TradingState, reason: str | None,
                    settings: Settings) -> RiskAccount:
    """Move the kill switch and publish `risk.state`."""
    await lock(session, owner, settings)
    now = _now()
    row = await store.update_risk_account(session, owner, now, state=state.value, reason=reason)
    await outbox.enqueue(session, events.risk_state_event(owner, state, reason, now))
    return _account(row, settings)


async def set_limits(session: AsyncSession, owner: UUID, limits: RiskLimits,
                     settings: Settings) -> RiskAccount:
    await lock(session, owner, settings)
    row = await store.update_risk_account(session, owner, _now(), limits=limits_json(limits))
    return _account(row, settings)


async def set_live_enabled(session: AsyncSession, owner: UUID, enabled: bool,
                           settings: Settings) -> RiskAccount:
    await lock(session, owner, settings)
    row = await store.update_risk_account(session, owner, _now(), live_enabled=enabled)
    return _account(row, settings)


async def engine_for(session: AsyncSession, account: RiskAccount, now: datetime) -> RiskEngine:
    """A RiskEngine for one check, its rate window seeded from the user's recent orders in the database."""
    engine = RiskEngine(account.limits, account.state)
    limit = account.limits.max_orders_per_window
    if limit is not None:
        since = now - timedelta(seconds=account.limits.order_window_s)
        engine.remember_count(await store.orders_placed_since(session, account.owner, since, limit))
    return engine


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def account_view(session: AsyncSession, owner: UUID, account: str, prices: LatestPrices, *,
                       known: Mapping[str, Decimal], token: str | None, now: datetime) -> AccountView:
    """Positions, open orders, pending quantity and today's P&L of one account, valued at the latest
    prices (`known` ones first). Today's P&L is the realized P&L net of fees of today's fills plus the
    unrealized P&L of the open positions; a position with no price anywhere is valued at its average."""
    held = await store.open_positions(session, owner, account)
    wanted = [p.symbol for p in held if p.symbol not in known]
    quotes = await asyncio.gather(*(prices.latest(symbol, token=token) for symbol in wanted))
    price_of: dict[str, Decimal] = dict(known)
    price_of.update({q.symbol: q.last for q in quotes if q is not None})
    positions: dict[str, Decimal] = {}
    unrealized = ZERO
    for p in held:
        positions[p.symbol] = p.quantity
        unrealized += (price_of.get(p.symbol, p.average_price) - p.average_price) * p.quantity
    pending: dict[Side, dict[str, Decimal]] = {Side.BUY: {}, Side.SELL: {}}
    open_orders = await store.open_orders_of(session, owner, account)
    for o in open_orders:
        side = pending[Side(o.side)]
        side[o.symbol] = side.get(o.symbol, ZERO) + o.quantity - o.filled_quantity
    realized = await store.realized_since(session, owner, account, day_start(now))
    return AccountView(positions=positions, prices=price_of, open_orders=len(open_orders),
                       pending_buy=pending[Side.BUY], pending_sell=pending[Side.SELL],
                       daily_pnl=realized + unrealized)
