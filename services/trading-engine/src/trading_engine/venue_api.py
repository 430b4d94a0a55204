"""Routes: /api/v1/venues — the venues available and the user's venue accounts (credentials go in,
never out), and an account's balances as its venue reports them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import ccxt
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from aitrading.auth import CurrentUser
from aitrading.db import DbSession
from aitrading.errors import Unavailable
from aitrading.service import from_state
from trading_engine import venue_accounts
from trading_engine.settings import Settings
from trading_engine.venue_accounts import NewVenueAccount, VenueAccountInfo
from trading_engine.venue_registry import HoldingsVenue, VenueNotSupported
from trading_engine.venues import Venue, VenueUnavailable

router = APIRouter(prefix="/api/v1/venues", tags=["venues"])

Config = Annotated[Settings, Depends(from_state("settings"))]
Venues = Annotated[Mapping[str, Venue], Depends(from_state("venues"))]


class VenuesOut(BaseModel):
    kinds: list[str] = Field(description="paper (the engine's own), and the external kinds deployed")
    exchanges: list[str] = Field(description="exchange ids a ccxt account can name")


class VenueAccountIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="how orders name the account (`account`)")
    kind: Literal["ccxt", "mt5"]
    exchange: str | None = Field(None, max_length=64, description="ccxt: the exchange id, e.g. binance")
    credentials: dict[str, Any] = Field(max_length=16,
                                        description="ccxt: {apiKey, secret, password?, uid?}; mt5: "
                                                    "{agent_id}. Stored encrypted, never returned")
    sandbox: bool = Field(False, description="ccxt: trade the exchange's sandbox (testnet)")
    symbols: dict[str, str] = Field(default_factory=dict,
                                    description="mt5: platform symbol → terminal symbol, where they differ")


class VenueAccountOut(BaseModel):
    id: UUID
    name: str
    kind: str
    exchange: str | None
    sandbox: bool
    key_hint: str | None = Field(description="the last 4 characters of the API key (mt5: of the agent id)")
    symbols: dict[str, str]
    created_at: datetime

    @classmethod
    def of(cls, info: VenueAccountInfo) -> VenueAccountOut:
        return cls(id=info.id, name=info.name, kind=info.kind, exchange=info.exchange, sandbox=info.sandbox,
                   key_hint=info.key_hint, symbols=info.symbols, created_at=info.created_at)


class BalanceOut(BaseModel):
    asset: str
    free: Decimal
    total: Decimal


class BalancesOut(BaseModel):
    account: str
    balances: list[BalanceOut]


@router.get("", response_model=VenuesOut)
async def venues_available(user: CurrentUser, venues: Venues) -> VenuesOut:
    kinds = ["paper", *sorted(venues)]
    return VenuesOut(kinds=kinds, exchanges=list(ccxt.exchanges) if "ccxt" in venues else [])


@router.post("/accounts", status_code=201, response_model=VenueAccountOut,
             responses={409: {"description": "you already have an account of that name"},
                        503: {"description": "credentials_key is not configured: nothing can be stored"}})
async def create_account(body: VenueAccountIn, user: CurrentUser, db: DbSession,
                         settings: Config) -> VenueAccountOut:
    request = NewVenueAccount(name=body.name, kind=body.kind, exchange=body.exchange,
                              credentials=body.credentials, sandbox=body.sandbox, symbols=body.symbols)
    return VenueAccountOut.of(await venue_accounts.create(db, user.id, request, settings))


@router.get("/accounts", response_model=list[VenueAccountOut])
async def list_accounts(user: CurrentUser, db: DbSession) -> list[VenueAccountOut]:
    return [VenueAccountOut.of(info) for info in await venue_accounts.list_of(db, user.id)]


@router.get("/accounts/{account_id}", response_model=VenueAccountOut)
async def get_account(account_id: UUID, user: CurrentUser, db: DbSession) -> VenueAccountOut:
    return VenueAccountOut.of(await venue_accounts.get(db, user.id, account_id))


@router.delete("/accounts/{account_id}", status_code=204, response_class=Response,
               responses={409: {"description": "the account has open orders"}})
async def delete_account(account_id: UUID, user: CurrentUser, db: DbSession, settings: Config) -> Response:
    await venue_accounts.delete(db, user.id, account_id, settings)
    return Response(status_code=204)


@router.get("/accounts/{account_id}/balances", response_model=BalancesOut,
            responses={422: {"description": "refused by the venue, or a venue that reports no balances"},
                       503: {"description": "the venue did not answer"}})
async def account_balances(account_id: UUID, user: CurrentUser, db: DbSession, settings: Config,
                           venues: Venues) -> BalancesOut:
    account = await venue_accounts.account_by_id(db, user.id, account_id, settings)
    await db.commit()  # no database connection held while the venue is asked
    venue = venues.get(account.kind)
    if venue is None:
        raise Unavailable(f"no {account.kind} venue is available in this deployment")
    if not isinstance(venue, HoldingsVenue):
        raise VenueNotSupported(f"the {account.kind} venue does not report balances")
    try:
        holdings = await venue.holdings(account)
    except VenueUnavailable as exc:
        raise Unavailable(str(exc), venue=account.kind) from exc
    return BalancesOut(account=account.name,
                       balances=[BalanceOut(asset=h.asset, free=h.free, total=h.total) for h in holdings])
