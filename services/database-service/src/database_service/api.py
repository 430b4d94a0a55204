"""Routes of database-service under /api/v1/market: symbols, bars, ticks, import, gaps, retention."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from aitrading import jsonutil
from aitrading.auth import AdminUser, CurrentUser
from aitrading.market.timeframes import Timeframe
from aitrading.service import from_state
from database_service import bar_import, gaps, ohlcv, retention, store
from database_service.retention import Retention
from database_service.series import owners_for, parse_symbol, symbol_views
from database_service.settings import Settings
from database_service.warehouse import Warehouse

router = APIRouter(prefix="/api/v1/market", tags=["market"])

WarehouseDep = Annotated[Warehouse, Depends(from_state("warehouse"))]
SettingsDep = Annotated[Settings, Depends(from_state("settings"))]
RetentionDefaults = Annotated[Retention, Depends(from_state("retention_defaults"))]

SymbolQuery = Annotated[str, Query(min_length=1, max_length=64, description="e.g. SPX, BTC/USDT")]
TimeframeQuery = Annotated[str, Query(description="1m, 5m, 15m, 1h, 4h or 1d")]
StartQuery = Annotated[datetime | None, Query(description="ISO 8601; naive times are UTC")]
EndQuery = Annotated[datetime | None, Query(description="ISO 8601; naive times are UTC")]


def _json(body: Any, status_code: int = 200) -> Response:
    # Rendered directly: 100,000 bars through response-model validation would take seconds.
    return Response(jsonutil.dumps(body), status_code=status_code, media_type="application/json")


class SymbolOut(BaseModel):
    symbol: str
    venue: str
    asset_class: str
    timeframes: list[str] = Field(description="timeframes that can be requested: stored and derived")
    stored_timeframes: list[str]
    own: bool = Field(description="the caller has imported series of this symbol (theirs win)")
    synthetic: bool
    ticks: bool = Field(description="ticks of this symbol are stored")


@router.get("/symbols", response_model=list[SymbolOut])
async def list_symbols(user: CurrentUser, wh: WarehouseDep) -> list[SymbolOut]:
    owners = owners_for(user)
    views = symbol_views(await store.visible_series(wh, owners), owners)
    return [SymbolOut(**vars(v)) for v in views]


class BarOut(BaseModel):
    time: datetime
    open: str
    high: str
    low: str
    close: str
    volume: str


class OhlcvOut(BaseModel):
    symbol: str
    timeframe: str
    bars: list[BarOut]
    resampled_from: str | None = Field(default=None, description="the stored timeframe aggregated")


@router.get("/ohlcv", response_model=OhlcvOut)
async def get_ohlcv(user: CurrentUser, wh: WarehouseDep, symbol: SymbolQuery, timeframe: TimeframeQuery,
                    start: StartQuery = None, end: EndQuery = None,
                    limit: Annotated[int, Query(ge=1, le=ohlcv.MAX_LIMIT)] = ohlcv.DEFAULT_LIMIT) -> Response:
    result = await ohlcv.read(wh, owners_for(user), parse_symbol(symbol), Timeframe.parse(timeframe),
                              start=start, end=end, limit=limit)
    head = jsonutil.dumps({"symbol": result.symbol, "timeframe": result.timeframe.value,
                           "resampled_from": result.source.stored.value if result.source.resampled else None})
    # The bars arrive as JSON already (see ohlcv.read): spliced in as the last member, not re-encoded.
    return Response(head[:-1] + b',"bars":' + result.bars_json + b"}", media_type="application/json")


class TickOut(BaseModel):
    time: datetime
    price: str
    size: str
    bid: str | None
    ask: str | None


class TicksOut(BaseModel):
    symbol: str
    ticks: list[TickOut]


@router.get("/ticks", response_model=TicksOut)
async def get_ticks(user: CurrentUser, wh: WarehouseDep, symbol: SymbolQuery, start: StartQuery = None,
                    end: EndQuery = None,
                    limit: Annotated[int, Query(ge=1, le=ohlcv.MAX_LIMIT)] = ohlcv.DEFAULT_LIMIT) -> Response:
    """Stored feed ticks of a symbol, oldest first: from `start` on, or the most recent `limit` (feeds are
    public)."""
    start_ms, end_ms = ohlcv.time_range(start, end)
    symbol = parse_symbol(symbol)
    rows = await store.read_ticks(wh, symbol, start_ms=start_ms, end_ms=end_ms, limit=limit,
                                  newest_first=start is None)
    if start is None:
        rows.reverse()
    times = ohlcv.iso_times([r[0] for r in rows])
    ticks = [{"time": t, "price": r[1], "size": r[2], "bid": r[3], "ask": r[4]}
             for t, r in zip(times, rows, strict=True)]
    return _json({"symbol": symbol, "ticks": ticks})


class ImportOut(BaseModel):
    symbol: str
    timeframe: str
    imported: int = Field(description="rows stored: new bars and bars whose values changed")
    skipped: int = Field(description="rows identical to the bars already stored")
    public: bool = Field(description="imported by an admin: visible to everyone")


@router.post("/import", status_code=201, response_model=ImportOut, openapi_extra=bar_import.OPENAPI_BODY)
async def import_bars(request: Request, user: CurrentUser, wh: WarehouseDep,
                      settings: SettingsDep) -> ImportOut:
    """Bars as JSON `{symbol, timeframe, bars: [...]}` or a CSV upload (multipart: file, symbol, timeframe).

    Every row is checked first; any bad row refuses the whole import (422 naming the rows)."""
    upload = await bar_import.read_request(request, max_bytes=settings.import_max_bytes,
                                           max_rows=settings.import_max_rows)
    result = await bar_import.store_upload(wh, user, upload)
    return ImportOut(symbol=result.symbol, timeframe=result.timeframe.value, imported=result.imported,
                     skipped=result.skipped, public=result.public)


class GapOut(BaseModel):
    start: datetime = Field(serialization_alias="from", description="first missing bar")
    to: datetime = Field(description="last missing bar")
    missing_bars: int


class GapsOut(BaseModel):
    symbol: str
    timeframe: str
    first: datetime | None
    last: datetime | None
    bars: int
    gaps: list[GapOut]


@router.get("/gaps", response_model=GapsOut, response_model_by_alias=True)
async def get_gaps(user: CurrentUser, wh: WarehouseDep, symbol: SymbolQuery, timeframe: TimeframeQuery,
                   start: StartQuery = None, end: EndQuery = None) -> GapsOut:
    """Missing bars between stored ones (and before/after them within an explicit start/end).

    For 1d bars of anything but crypto, weekends are not missing."""
    report = await gaps.find(wh, owners_for(user), parse_symbol(symbol), Timeframe.parse(timeframe),
                             start=start, end=end)
    return GapsOut(symbol=report.symbol, timeframe=report.timeframe.value, first=report.first,
                   last=report.last, bars=report.bars,
                   gaps=[GapOut(start=g.first, to=g.last, missing_bars=g.missing_bars) for g in report.gaps])


class RetentionIO(BaseModel):
    ticks_days: int | None = Field(default=None, description="days of ticks kept; null: forever")
    bars_days: dict[str, int | None] = Field(default_factory=dict,
                                             description="days of feed bars kept by timeframe; null: forever")


def _retention_out(value: Retention) -> RetentionIO:
    return RetentionIO(ticks_days=value.ticks_days, bars_days=value.bars_days)


@router.get("/retention", response_model=RetentionIO)
async def get_retention(user: CurrentUser, wh: WarehouseDep, defaults: RetentionDefaults) -> RetentionIO:
    """How long feed data is kept (imported series are kept until deleted)."""
    return _retention_out(await retention.current(wh, defaults))


@router.put("/retention", response_model=RetentionIO)
async def put_retention(body: RetentionIO, admin: AdminUser, wh: WarehouseDep,
                        defaults: RetentionDefaults) -> RetentionIO:
    """Change retention (admin). Fields left out keep their value; null keeps data forever."""
    now = await retention.current(wh, defaults)
    wanted = now.merged(body.ticks_days, body.bars_days, ticks_given="ticks_days" in body.model_fields_set)
    await retention.update(wh, wanted)
    return _retention_out(wanted)
