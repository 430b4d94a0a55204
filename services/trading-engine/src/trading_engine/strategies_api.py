"""Routes: /api/v1/strategies — deploying built-in strategies that trade on each closed bar."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from aitrading.auth import CurrentUser
from aitrading.db import DbSession
from aitrading.service import from_state
from aitrading.trading import strategies
from trading_engine import deployments
from trading_engine.account_orders import SYMBOL
from trading_engine.deployments import Deployment, Mode
from trading_engine.settings import Settings

router = APIRouter(prefix="/api/v1/strategies", tags=["strategies"])

Config = Annotated[Settings, Depends(from_state("settings"))]


class DeploymentIn(BaseModel):
    strategy: str = Field(max_length=64, description="a name from GET /api/v1/strategies/catalog")
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters")
    symbol: str = Field(pattern=SYMBOL)
    timeframe: str = Field(default="1d", max_length=8, description="1m, 5m, 15m, 1h, 4h or 1d")
    mode: Mode = "paper"
    account: str | None = Field(default=None, min_length=1, max_length=64,
                                description="live mode: one of your venue accounts; paper mode: 'paper'")


class DeploymentPatch(BaseModel):
    enabled: bool


class DeploymentOut(BaseModel):
    id: UUID
    strategy: str
    params: dict[str, Any]
    symbol: str
    timeframe: str
    mode: str
    account: str
    enabled: bool
    position: Decimal = Field(description="what the deployment's own fills add up to")
    last_bar_time: datetime | None = Field(description="the last closed bar it decided on")
    last_error: str | None = Field(description="why its last bar placed no order, when something refused it")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: Deployment) -> DeploymentOut:
        return cls(id=d.id, strategy=d.strategy, params=d.params, symbol=d.symbol,
                   timeframe=d.timeframe.value, mode=d.mode, account=d.account, enabled=d.enabled,
                   position=d.position,
                   last_bar_time=d.last_bar_time, last_error=d.last_error, created_at=d.created_at,
                   updated_at=d.updated_at)


class CatalogEntry(BaseModel):
    name: str
    description: str
    params: dict[str, Any] = Field(description="JSON schema of the parameters")


@router.get("/catalog", response_model=list[CatalogEntry])
async def catalog(user: CurrentUser) -> list[dict[str, Any]]:
    return strategies.catalog()


@router.post("", status_code=201, response_model=DeploymentOut,
             responses={403: {"description": "live mode without live trading enabled by an admin"}})
async def deploy(body: DeploymentIn, user: CurrentUser, db: DbSession, settings: Config) -> DeploymentOut:
    created = await deployments.create(db, user.id, strategy=body.strategy, params=body.params,
                                       symbol=body.symbol, timeframe=body.timeframe, mode=body.mode,
                                       account=body.account, settings=settings)
    return DeploymentOut.of(created)


@router.get("", response_model=list[DeploymentOut])
async def list_deployments(user: CurrentUser, db: DbSession) -> list[DeploymentOut]:
    return [DeploymentOut.of(d) for d in await deployments.list_for(db, user.id)]


@router.get("/{deployment_id}", response_model=DeploymentOut)
async def get_deployment(deployment_id: UUID, user: CurrentUser, db: DbSession) -> DeploymentOut:
    return DeploymentOut.of(await deployments.get(db, user.id, deployment_id))


@router.patch("/{deployment_id}", response_model=DeploymentOut)
async def patch_deployment(deployment_id: UUID, body: DeploymentPatch, user: CurrentUser, db: DbSession,
                           settings: Config) -> DeploymentOut:
    return DeploymentOut.of(await deployments.set_enabled(db, user.id, deployment_id, body.enabled, settings))


@router.delete("/{deployment_id}", status_code=204)
async def delete_deployment(deployment_id: UUID, user: CurrentUser, db: DbSession) -> Response:
    await deployments.delete(db, user.id, deployment_id)
    return Response(status_code=204)
