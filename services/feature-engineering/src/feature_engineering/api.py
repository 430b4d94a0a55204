"""Routes of feature-engineering: parse, authorize, call the domain, shape the response."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from aitrading import jsonutil
from aitrading.auth import CurrentUser
from aitrading.db import DbSession
from aitrading.errors import Invalid
from aitrading.market import indicators
from aitrading.market.history import MarketData
from aitrading.market.timeframes import Timeframe
from aitrading.service import from_state
from feature_engineering import feature_sets, features
from feature_engineering.feature_sets import FeatureSet
from feature_engineering.settings import Settings

router = APIRouter(prefix="/api/v1/features", tags=["features"])

Market = Annotated[MarketData, Depends(from_state("market"))]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Config = Annotated[Settings, Depends(_settings)]


# --- models ---------------------------------------------------------------------------------------

class FeaturesOut(BaseModel):
    symbol: str
    timeframe: str
    indicators: list[str] = Field(description="the columns of each row, as asked for")
    rows: list[dict[str, Any]] = Field(description="[{time, <indicator>: number | null}] oldest first; "
                                                   "null while an indicator warms up")


class ParamOut(BaseModel):
    name: str
    type: str
    default: float
    minimum: float
    maximum: float


class IndicatorOut(BaseModel):
    name: str
    group: str
    description: str
    params: list[ParamOut]
    outputs: list[str]
    inputs: list[str]
    example: str
    backend: str


class FeatureSetIn(BaseModel):
    name: str = Field(max_length=64)
    indicators: list[str] = Field(max_length=1000)
    stream: bool = False


class FeatureSetUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=64, description="a new name renames the set")
    indicators: list[str] = Field(max_length=1000)
    stream: bool = False


class FeatureSetOut(BaseModel):
    name: str
    indicators: list[str]
    stream: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, fs: FeatureSet) -> FeatureSetOut:
        return cls(name=fs.name, indicators=fs.indicators, stream=fs.stream, created_at=fs.created_at,
                   updated_at=fs.updated_at)


# --- features ---------------------------------------------------------------------------------------

def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.get("", response_model=FeaturesOut)
async def get_features(
    user: CurrentUser, db: DbSession, market: Market, settings: Config,
    symbol: Annotated[str, Query(min_length=1, max_length=64)],
    timeframe: str = "1d",
    indicators_: Annotated[str | None, Query(alias="indicators", max_length=10_000,
                                             description="comma-separated, e.g. sma_20,rsi_14,macd")] = None,
    feature_set: Annotated[str | None, Query(alias="set", max_length=64,
                                             description="one of your feature sets")] = None,
    limit: Annotated[int, Query(ge=1, le=features.MAX_ROWS)] = features.DEFAULT_LIMIT,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Response:
    tf = Timeframe.parse(timeframe)
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start > end:
        raise Invalid("start is after end", errors=[{"field": "start", "reason": "must not be after end"}])
    if (indicators_ is None) == (feature_set is None):
        raise Invalid("give either indicators=... or set=...",
                      errors=[{"field": "indicators", "reason": "give either indicators or set, not both"
                               if indicators_ else "give indicators (comma-separated) or set"}])
    if feature_set is not None:
        names = (await feature_sets.get(db, user.id, feature_set)).indicators
    else:
        names = [n for n in (indicators_ or "").split(",") if n.strip()]
        if not names:
            raise Invalid("no indicator asked for",
                          errors=[{"field": "indicators", "reason": "must list at least one indicator"}])
        if len(names) > settings.max_indicators:
            raise Invalid(f"at most {settings.max_indicators} indicators per request",
                          errors=[{"field": "indicators",
                                   "reason": f"at most {settings.max_indicators} indicators"}])
    specs = indicators.parse_many(names)
    table = await features.compute_features(market, symbol, tf, specs, limit=limit, start=start, end=end,
                                            token=user.token)
    body = {"symbol": symbol, "timeframe": tf.value, "indicators": list(table.columns), "rows": table.rows()}
    return Response(jsonutil.dumps(body), media_type="application/json")


@router.get("/catalog", response_model=list[IndicatorOut])
async def catalog(user: CurrentUser) -> list[dict[str, Any]]:
    return indicators.catalog_json()


# --- feature sets -----------------------------------------------------------------------------------

@router.post("/sets", status_code=201, response_model=FeatureSetOut)
async def create_set(body: FeatureSetIn, user: CurrentUser, db: DbSession, settings: Config) -> FeatureSetOut:
    created = await feature_sets.create(db, user.id, name=body.name, names=body.indicators,
                                        stream=body.stream, max_indicators=settings.max_indicators,
                                        max_sets=settings.max_sets_per_user)
    return FeatureSetOut.of(created)


@router.get("/sets", response_model=list[FeatureSetOut])
async def list_sets(user: CurrentUser, db: DbSession) -> list[FeatureSetOut]:
    return [FeatureSetOut.of(s) for s in await feature_sets.list_for(db, user.id)]


@router.get("/sets/{name}", response_model=FeatureSetOut)
async def get_set(name: str, user: CurrentUser, db: DbSession) -> FeatureSetOut:
    return FeatureSetOut.of(await feature_sets.get(db, user.id, name))


@router.put("/sets/{name}", response_model=FeatureSetOut)
async def replace_set(name: str, body: FeatureSetUpdate, user: CurrentUser, db: DbSession,
                      settings: Config) -> FeatureSetOut:
    updated = await feature_sets.replace(db, user.id, name, new_name=body.name, names=body.indicators,
                                         stream=body.stream, max_indicators=settings.max_indicators)
    return FeatureSetOut.of(updated)


@router.delete("/sets/{name}", status_code=204)
async def delete_set(name: str, user: CurrentUser, db: DbSession) -> Response:
    await feature_sets.delete(db, user.id, name)
    return Response(status_code=204)
