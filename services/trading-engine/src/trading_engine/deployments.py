"""Deployed strategies: a user's strategy running on one series, trading on each closed bar.

A paper deployment trades on the user's paper account; a live one on one of the user's venue accounts,
only once an admin enabled live trading for the user (checked again on every order). The deployment's
position is what its own fills add up to; `last_bar_time` is the last bar it decided on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Conflict, Forbidden, Invalid, NotFound
from aitrading.market.timeframes import Timeframe
from aitrading.trading import strategies
from trading_engine import risk_accounts, store
from trading_engine.account_orders import PAPER
from trading_engine.settings import Settings
from trading_engine.venue_accounts import account_named

Mode = Literal["paper", "live"]


@dataclass(frozen=True)
class Deployment:
    id: UUID
    owner: UUID
    strategy: str
    params: dict[str, Any]
    symbol: str
    timeframe: Timeframe
    mode: str
    account: str
    enabled: bool
    position: Decimal
    last_bar_time: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Deployment:
        return cls(id=row.id, owner=row.owner_id, strategy=row.strategy, params=dict(row.params),
                   symbol=row.symbol, timeframe=Timeframe(row.timeframe), mode=row.mode, account=row.account,
                   enabled=row.enabled, position=row.position, last_bar_time=row.last_bar_time,
                   last_error=row.last_error, created_at=row.created_at, updated_at=row.updated_at)


def _now() -> datetime:
    return datetime.now(UTC)


async def _account_for(session: AsyncSession, owner: UUID, mode: Mode, account: str | None,
                       settings: Settings) -> str:
    """The account a deployment of `mode` trades on; refuses what the mode does not allow."""
    if mode == "paper":
        if account not in (None, PAPER):
            raise Invalid("a paper deployment trades on the paper account",
                          errors=[{"field": "account",
                                   "reason": "must be 'paper' (or left out) in paper mode"}])
        return PAPER
    risk = await risk_accounts.get(session, owner, settings)
    if not risk.live_enabled:
        raise Forbidden("live trading is not enabled for you: an admin enables it per user")
    if account is None or account == PAPER:
        raise Invalid("a live deployment trades on one of your venue accounts",
                      errors=[{"field": "account", "reason": "name one of your venue accounts in live mode"}])
    await account_named(session, owner, account, settings)  # 404 naming it when there is none
    return account


async def create(session: AsyncSession, owner: UUID, *, strategy: str, params: dict[str, Any], symbol: str,
                 timeframe: str, mode: Mode, account: str | None, settings: Settings) -> Deployment:
    built = strategies.build(strategy, params)  # 422 naming `strategy` or `params.<field>`
    tf = Timeframe.parse(timeframe)
    trading_account = await _account_for(session, owner, mode, account, settings)
    if await store.count_deployments(session, owner) >= settings.max_deployments_per_user:
        raise Conflict(f"you have {settings.max_deployments_per_user} deployments, the most allowed; "
                       "delete one first")
    now = _now()
    row = await store.insert_deployment(
        session, id=uuid4(), owner_id=owner, strategy=built.name, params=built.params.model_dump(mode="json"),
        symbol=symbol, timeframe=tf.value, mode=mode, account=trading_account, enabled=True,
        position=Decimal(0), created_at=now, updated_at=now)
    return Deployment.from_row(row)


async def list_for(session: AsyncSession, owner: UUID) -> list[Deployment]:
    return [Deployment.from_row(r) for r in await store.deployments_of(session, owner)]


async def get(session: AsyncSession, owner: UUID, deployment_id: UUID) -> Deployment:
    row = await store.owned_deployment(session, owner, deployment_id)
    if row is None:
        raise NotFound(f"no strategy deployment {deployment_id}")
    return Deployment.from_row(row)


async def set_enabled(session: AsyncSession, owner: UUID, deployment_id: UUID, enabled: bool,
                      settings: Settings) -> Deployment:
    current = await get(session, owner, deployment_id)
    if enabled and current.mode == "live":
        risk = await risk_accounts.get(session, owner, settings)
        if not risk.live_enabled:
            raise Forbidden("live trading is not enabled for you: an admin enables it per user")
    row = await store.update_deployment(session, owner, deployment_id, _now(), enabled=enabled)
    if row is None:
        raise NotFound(f"no strategy deployment {deployment_id}")
    return Deployment.from_row(row)


async def delete(session: AsyncSession, owner: UUID, deployment_id: UUID) -> None:
    """Stop and forget a deployment; its orders, fills and the position they built stay the user's."""
    if not await store.delete_deployment(session, owner, deployment_id):
        raise NotFound(f"no strategy deployment {deployment_id}")
