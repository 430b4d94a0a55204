"""Routes of pattern-validator: parse, authorize, call the domain, shape the response."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from aitrading.auth import CurrentUser
from aitrading.db import DbSession
from aitrading.errors import Invalid
from aitrading.jsonutil import dumps
from aitrading.market.bars import ms_to_datetime
from aitrading.market.history import MAX_LIMIT, MarketData
from aitrading.market.timeframes import Timeframe
from aitrading.service import from_state
from pattern_validator import candlesticks, chart_patterns, rules, scan, user_rules
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.detections import Direction, Kind
from pattern_validator.user_rules import CompiledRule, Rule, RuleDraft

router = APIRouter(prefix="/api/v1/patterns", tags=["patterns"])
_log = structlog.get_logger(__name__)

Market = Annotated[MarketData, Depends(from_state("market"))]
Chart = Annotated[ChartSettings, Depends(from_state("chart"))]

DEFAULT_LIMIT, MAX_BARS = 500, 10_000
ALL_KINDS = "candlestick,chart,rule"
RULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$"


# --- models -------------------------------------------------------------------------------------------

class DetectionOut(BaseModel):
    time: datetime
    pattern: str
    direction: Direction
    confidence: float = Field(ge=0, le=1)
    kind: Kind
    details: dict[str, Any] | None = None


class PatternsOut(BaseModel):
    symbol: str
    timeframe: str
    bars: int = Field(description="bars in the range scanned")
    start: datetime | None = Field(description="the first bar of the range")
    end: datetime | None = Field(description="the last bar of the range")
    detections: list[DetectionOut] = Field(description="newest last")


class RuleIn(BaseModel):
    name: str = Field(pattern=RULE_NAME, description="letters, digits, space, '_', '.', '-'; at most 64")
    # The parser refuses more than rules.MAX_LENGTH characters and says where; this bound only keeps
    # absurd bodies out.
    expression: str = Field(max_length=10_000)
    direction: Direction = Direction.NEUTRAL
    description: str | None = Field(default=None, max_length=1000)

    def draft(self) -> RuleDraft:
        return RuleDraft(self.name, self.expression, self.direction, self.description)


class RuleOut(BaseModel):
    id: UUID
    name: str
    expression: str
    direction: Direction
    description: str | None
    features: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rule: Rule) -> RuleOut:
        return cls(id=rule.id, name=rule.name, expression=rule.expression, direction=rule.direction,
                   description=rule.description, features=user_rules.features_named(rule.expression),
                   created_at=rule.created_at, updated_at=rule.updated_at)


class ExpressionIn(BaseModel):
    expression: str = Field(max_length=10_000)


class ValidationOut(BaseModel):
    valid: bool
    expression: str = Field(description="the expression as the service reads it (minimal parentheses)")
    features: list[str]
    history_bars: int = Field(description="bars before the first evaluated bar its features need")


# --- detections ---------------------------------------------------------------------------------------

def parse_kinds(text: str) -> frozenset[Kind]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    accepted = ", ".join(k.value for k in Kind)
    unknown = [name for name in names if name not in {k.value for k in Kind}]
    if not names or unknown:
        reason = f"must be a comma-separated list of {accepted}"
        detail = f"unknown kind {unknown[0]!r}; {reason}" if unknown else f"kinds {reason}"
        raise Invalid(detail, errors=[{"field": "kinds", "reason": reason}])
    return frozenset(Kind(name) for name in names)


async def _compiled_rules(db: DbSession, owner: UUID) -> list[CompiledRule]:
    compiled = []
    for rule in await user_rules.list_for(db, owner):
        try:
            compiled.append(rule.compiled())
        except Invalid as exc:  # saved before a catalogue change; the rest still run
            _log.warning("stored rule no longer compiles; skipped", rule_id=str(rule.id), error=exc.detail)
    return compiled


@router.get("", response_model=PatternsOut)
async def get_patterns(
    user: CurrentUser, db: DbSession, market: Market, chart: Chart,
    symbol: Annotated[str, Query(min_length=1, max_length=64)],
    timeframe: str = "1d",
    limit: Annotated[int, Query(ge=1, le=MAX_BARS, description="recent bars to scan")] = DEFAULT_LIMIT,
    kinds: Annotated[str, Query(description="comma-separated: candlestick, chart, rule")] = ALL_KINDS,
    min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.0,
    details: bool = True,
) -> Response:
    """Patterns completed on the last `limit` bars of a series, newest last; the caller's rules included."""
    wanted = parse_kinds(kinds)
    frame_timeframe = Timeframe.parse(timeframe)
    compiled = await _compiled_rules(db, user.id) if Kind.RULE in wanted else []
    history = scan.history_needed(wanted, compiled, chart)
    frame = await market.ohlcv(symbol, frame_timeframe, limit=min(limit + history, MAX_LIMIT),
                               token=user.token)
    since = max(0, len(frame) - limit)
    # Scanning ten thousand bars is tens of milliseconds of CPU: off the event loop.
    found = await asyncio.to_thread(scan.scan, frame, kinds=wanted, compiled=compiled, chart=chart,
                                    since=since)
    rows = []
    for detection in found:
        if detection.confidence >= min_confidence:
            row = detection.as_json()
            if not details:
                row.pop("details", None)
            rows.append(row)
    empty = len(frame) == since
    body = {"symbol": symbol, "timeframe": frame_timeframe.value, "bars": len(frame) - since,
            "start": None if empty else ms_to_datetime(int(frame.time_ms[since])),
            "end": None if empty else ms_to_datetime(int(frame.time_ms[-1])),
            "detections": rows}
    return Response(dumps(body), media_type="application/json")


@router.get("/catalog")
async def get_catalog(user: CurrentUser) -> dict[str, Any]:
    """The patterns this service detects, and what rules can use."""
    return {
        "candlestick": [{"name": p.name, "talib": p.function, "candles": p.candles,
                         "meaning": p.meaning.value} for p in candlesticks.CATALOG],
        "chart": [{"name": name} for name in chart_patterns.NAMES],
        "rule_functions": sorted(rules.FUNCTIONS),
        "rule_limits": {"max_length": rules.MAX_LENGTH, "max_depth": rules.MAX_DEPTH,
                        "max_prev": rules.MAX_PREV},
    }


# --- rules --------------------------------------------------------------------------------------------

@router.post("/rules/validate", response_model=ValidationOut)
async def validate_rule(body: ExpressionIn, user: CurrentUser) -> ValidationOut:
    expression, specs = user_rules.compile_expression(body.expression)
    return ValidationOut(valid=True, expression=rules.to_text(expression.root),
                         features=list(expression.features),
                         history_bars=user_rules.history_bars(expression, specs))


@router.post("/rules", status_code=201, response_model=RuleOut)
async def create_rule(body: RuleIn, user: CurrentUser, db: DbSession) -> RuleOut:
    return RuleOut.of(await user_rules.create(db, user.id, body.draft()))


@router.get("/rules", response_model=list[RuleOut])
async def list_rules(user: CurrentUser, db: DbSession) -> list[RuleOut]:
    return [RuleOut.of(rule) for rule in await user_rules.list_for(db, user.id)]


@router.get("/rules/{rule_id}", response_model=RuleOut)
async def get_rule(rule_id: UUID, user: CurrentUser, db: DbSession) -> RuleOut:
    return RuleOut.of(await user_rules.get(db, user.id, rule_id))


@router.put("/rules/{rule_id}", response_model=RuleOut)
async def replace_rule(rule_id: UUID, body: RuleIn, user: CurrentUser, db: DbSession) -> RuleOut:
    return RuleOut.of(await user_rules.replace(db, user.id, rule_id, body.draft()))


@router.delete("/rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: UUID, user: CurrentUser, db: DbSession) -> Response:
    await user_rules.delete(db, user.id, rule_id)
    return Response(status_code=204)
