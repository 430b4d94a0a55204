"""Routes of data-bridge: feeds (admins control them, any signed-in user sees them) and live quotes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from aitrading.auth import AdminUser, CurrentUser
from aitrading.errors import Invalid
from aitrading.service import from_state
from data_bridge.feed_manager import FeedManager
from data_bridge.quotes import QuoteBook

router = APIRouter(prefix="/api/v1")

Feeds = Annotated[FeedManager, Depends(from_state("feeds"))]
Quotes = Annotated[QuoteBook, Depends(from_state("quotes"))]

MAX_QUOTE_SYMBOLS = 500


class FeedIn(BaseModel):
    kind: str = Field(description="replay, synthetic, ccxt or mt5")
    symbols: list[str] = Field(description="canonical form: BTC/USDT, SPX")
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's parameters")


class CountersOut(BaseModel):
    ticks: int
    bars: int
    errors: int
    reconnects: int
    last_data_at: datetime | None
    last_error: str | None


class FeedOut(BaseModel):
    id: UUID
    kind: str
    venue: str
    symbols: list[str]
    params: dict[str, Any]
    status: str = Field(description="starting, running, finished, failed or stopped")
    error: str | None = Field(description="why it failed")
    synthetic: bool
    desired: str = Field(description="running or stopped: what it returns to after a restart")
    counters: CountersOut
    created_at: datetime


class QuoteOut(BaseModel):
    symbol: str
    last: str
    bid: str | None
    ask: str | None
    time: datetime
    venue: str
    feed: UUID | None
    synthetic: bool


@router.post("/feeds", status_code=201, response_model=FeedOut, tags=["feeds"])
async def create_feed(body: FeedIn, _: AdminUser, feeds: Feeds) -> dict[str, Any]:
    return await feeds.create(body.kind, body.symbols, body.params)


@router.get("/feeds", response_model=list[FeedOut], tags=["feeds"])
async def list_feeds(_: CurrentUser, feeds: Feeds) -> list[dict[str, Any]]:
    return await feeds.list_feeds()


@router.get("/feeds/{feed_id}", response_model=FeedOut, tags=["feeds"])
async def get_feed(feed_id: UUID, _: CurrentUser, feeds: Feeds) -> dict[str, Any]:
    return await feeds.get_feed(feed_id)


@router.post("/feeds/{feed_id}/stop", response_model=FeedOut, tags=["feeds"])
async def stop_feed(feed_id: UUID, _: AdminUser, feeds: Feeds) -> dict[str, Any]:
    return await feeds.stop_feed(feed_id)


@router.post("/feeds/{feed_id}/start", response_model=FeedOut, tags=["feeds"])
async def start_feed(feed_id: UUID, _: AdminUser, feeds: Feeds) -> dict[str, Any]:
    return await feeds.start_feed(feed_id)


@router.delete("/feeds/{feed_id}", status_code=204, tags=["feeds"])
async def delete_feed(feed_id: UUID, _: AdminUser, feeds: Feeds) -> Response:
    await feeds.delete(feed_id)
    return Response(status_code=204)


@router.get("/quotes", response_model=list[QuoteOut], tags=["quotes"])
async def list_quotes(_: CurrentUser, quotes: Quotes,
                      symbols: Annotated[str | None, Query(description="comma-separated; "
                                                           "default: every quote of this instance")] = None,
                      ) -> list[dict[str, Any]]:
    if symbols is None:
        return [quote.as_json() for quote in quotes.local()]
    names = [name.strip() for name in symbols.split(",") if name.strip()]
    if len(names) > MAX_QUOTE_SYMBOLS:
        raise Invalid(f"at most {MAX_QUOTE_SYMBOLS} symbols per request",
                      errors=[{"field": "symbols", "reason": f"more than {MAX_QUOTE_SYMBOLS}"}])
    found = [await quotes.get(name) for name in names]
    return [quote.as_json() for quote in found if quote is not None]


@router.get("/quotes/{symbol:path}", response_model=QuoteOut, tags=["quotes"])
async def get_quote(symbol: str, _: CurrentUser, quotes: Quotes) -> dict[str, Any]:
    return (await quotes.require(symbol)).as_json()
