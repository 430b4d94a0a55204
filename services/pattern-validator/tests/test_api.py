"""The HTTP API against the real database-service (in-process, chDB) and real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import numpy as np
import pytest
import talib
from fastapi import FastAPI
from pattern_validator import candlesticks, user_rules
from pattern_validator.main import create_app
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.market.bars import OhlcvFrame, datetime_to_ms
from aitrading.testing import TokenIssuer, rolled_back, running_app

from .services import database_service, pattern_settings, unique_symbol


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def stack(warehouse: Path, database_url: str, nats_url: str,
                token_issuer: TokenIssuer) -> AsyncIterator[dict[str, Any]]:
    async with database_service(warehouse, database_url=database_url, nats_url=nats_url,
                                jwks_url=token_issuer.jwks_url) as market_url:
        settings = pattern_settings(database_url=database_url, nats_url=nats_url,
                                    jwks_url=token_issuer.jwks_url, live_enabled=False,
                                    service_urls={"database-service": market_url})
        app = create_app(settings)
        async with running_app(app) as client, httpx.AsyncClient(base_url=market_url) as market:
            yield {"app": app, "client": client, "market": market}


@pytest.fixture(scope="module")
def app(stack: dict[str, Any]) -> FastAPI:
    return stack["app"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def market(stack: dict[str, Any]) -> httpx.AsyncClient:
    """database-service itself, for the reference bars."""
    return stack["market"]  # type: ignore[no-any-return]


@pytest.fixture
async def db_session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    async with rolled_back(app) as session:
        yield session


@pytest.fixture
def client(stack: dict[str, Any], db_session: AsyncSession) -> httpx.AsyncClient:
    return stack["client"]  # type: ignore[no-any-return]


@pytest.fixture
def alice(token_issuer: TokenIssuer) -> dict[str, str]:
    return bearer(token_issuer.token(sub=uuid4()))


@pytest.fixture
def bob(token_issuer: TokenIssuer) -> dict[str, str]:
    return bearer(token_issuer.token(sub=uuid4()))


async def reference_bars(market: httpx.AsyncClient, headers: dict[str, str], symbol: str,
                         limit: int) -> OhlcvFrame:
    response = await market.get("/api/v1/market/ohlcv", params={"symbol": symbol, "timeframe": "1d",
                                                                 "limit": limit}, headers=headers)
    assert response.status_code == 200, response.text
    return OhlcvFrame.from_json_bars(response.json()["bars"])


def ms(iso: str) -> int:
    return datetime_to_ms(datetime.fromisoformat(iso))


# --- patterns -----------------------------------------------------------------------------------------

async def test_patterns_for_spx_come_back_newest_last_over_the_last_limit_bars(
        client: httpx.AsyncClient, market: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await client.get("/api/v1/patterns", headers=alice,
                                params={"symbol": "SPX", "timeframe": "1d", "limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["symbol"] == "SPX" and body["timeframe"] == "1d" and body["bars"] == 1000
    bars = await reference_bars(market, alice, "SPX", 1000)
    assert ms(body["start"]) == int(bars.time_ms[0]) and ms(body["end"]) == int(bars.time_ms[-1])
    detections = body["detections"]
    times = [ms(d["time"]) for d in detections]
    assert times == sorted(times)
    assert times[0] >= int(bars.time_ms[0]) and times[-1] <= int(bars.time_ms[-1])
    assert {d["kind"] for d in detections} == {"candlestick", "chart"}
    assert all(0 <= d["confidence"] <= 1 and d["direction"] in ("bullish", "bearish", "neutral")
               for d in detections)
    chart = {d["pattern"] for d in detections if d["kind"] == "chart"}
    assert {"support", "resistance", "breakout"} <= chart
    level = next(d for d in detections if d["pattern"] == "support")
    assert float(level["details"]["level"]) > 0 and level["details"]["touches"] >= 2


async def test_candlestick_detections_equal_talib_on_the_same_bars(
        client: httpx.AsyncClient, market: httpx.AsyncClient, alice: dict[str, str]) -> None:
    limit = 750
    response = await client.get("/api/v1/patterns", headers=alice,
                                params={"symbol": "SPX", "limit": limit, "kinds": "candlestick"})
    assert response.status_code == 200, response.text
    got = {(ms(d["time"]), d["pattern"], d["direction"]) for d in response.json()["detections"]}
    # TA-Lib directly, on the same stored bars (with history before the range for its averages).
    bars = await reference_bars(market, alice, "SPX", limit + 100)
    first = int(bars.time_ms[-limit])
    want = set()
    for pattern in candlesticks.CATALOG:
        output = getattr(talib, pattern.function)(bars.open, bars.high, bars.low, bars.close)
        for i in np.flatnonzero(output):
            if bars.time_ms[i] >= first:
                direction = ("neutral" if pattern.meaning is candlesticks.Meaning.INDECISION
                             else "bullish" if output[i] > 0 else "bearish")
                want.add((int(bars.time_ms[i]), pattern.name, direction))
    assert got == want
    engulfing = next(i for i in range(len(bars)) if bars.time_ms[i] >= first
                     and talib.CDLENGULFING(bars.open, bars.high, bars.low, bars.close)[i] != 0)
    assert any(t == int(bars.time_ms[engulfing]) and name == "engulfing" for t, name, _ in got)


async def test_filters_kinds_confidence_and_details(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    params: dict[str, Any] = {"symbol": "SPX", "limit": 400, "kinds": "chart", "min_confidence": 0.6,
                              "details": "false"}
    response = await client.get("/api/v1/patterns", params=params, headers=alice)
    assert response.status_code == 200, response.text
    detections = response.json()["detections"]
    assert detections and all(d["kind"] == "chart" and d["confidence"] >= 0.6 for d in detections)
    assert all("details" not in d for d in detections)


@pytest.mark.parametrize(("params", "field"), [
    ({"symbol": "SPX", "kinds": "candlestick,waves"}, "kinds"),
    ({"symbol": "SPX", "kinds": ""}, "kinds"),
    ({"symbol": "SPX", "timeframe": "7m"}, "timeframe"),
    ({"symbol": "SPX", "limit": 10_001}, "limit"),
    ({"symbol": "SPX", "limit": 0}, "limit"),
    ({"symbol": "SPX", "min_confidence": 2}, "min_confidence"),
    ({}, "symbol"),
])
async def test_bad_queries_are_422_naming_the_field(client: httpx.AsyncClient, alice: dict[str, str],
                                                   params: dict[str, Any], field: str) -> None:
    response = await client.get("/api/v1/patterns", params=params, headers=alice)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"].split(".")[-1] for e in response.json()["errors"]}


async def test_an_unknown_symbol_is_404_and_no_token_is_401(client: httpx.AsyncClient,
                                                            alice: dict[str, str]) -> None:
    response = await client.get("/api/v1/patterns", params={"symbol": unique_symbol()}, headers=alice)
    assert response.status_code == 404, response.text
    assert (await client.get("/api/v1/patterns", params={"symbol": "SPX"})).status_code == 401


async def test_patterns_read_the_callers_own_imported_series_with_the_callers_token(
        client: httpx.AsyncClient, market: httpx.AsyncClient, alice: dict[str, str],
        bob: dict[str, str]) -> None:
    symbol = unique_symbol()
    start = datetime(2023, 1, 2, tzinfo=UTC)
    prices = [100 + 30 * np.sin(i / 6) for i in range(120)]  # swings: pivots, levels, tops and bottoms
    bars = []
    for i, close in enumerate(prices):
        open_ = prices[i - 1] if i else close
        bars.append({"time": (start + timedelta(days=i)).isoformat(), "open": f"{open_:.4f}",
                     "high": f"{max(open_, close) + 0.5:.4f}", "low": f"{min(open_, close) - 0.5:.4f}",
                     "close": f"{close:.4f}", "volume": "1000"})
    imported = await market.post("/api/v1/market/import", headers=alice,
                                  json={"symbol": symbol, "timeframe": "1d", "bars": bars})
    assert imported.status_code == 201, imported.text
    mine = await client.get("/api/v1/patterns", params={"symbol": symbol, "limit": 120}, headers=alice)
    assert mine.status_code == 200, mine.text
    assert mine.json()["bars"] == 120
    assert any(d["kind"] == "chart" for d in mine.json()["detections"])
    theirs = await client.get("/api/v1/patterns", params={"symbol": symbol}, headers=bob)
    assert theirs.status_code == 404, theirs.text


async def test_catalog_lists_every_candlestick_and_chart_pattern(client: httpx.AsyncClient,
                                                                 alice: dict[str, str]) -> None:
    response = await client.get("/api/v1/patterns/catalog", headers=alice)
    assert response.status_code == 200
    body = response.json()
    assert len(body["candlestick"]) == 61
    assert {"engulfing", "hammer", "doji", "morning_star"} <= {p["name"] for p in body["candlestick"]}
    assert {p["name"] for p in body["chart"]} == {
        "support", "resistance", "breakout", "double_top", "double_bottom", "head_and_shoulders",
        "inverse_head_and_shoulders", "ascending_triangle", "descending_triangle", "symmetric_triangle"}
    assert "crosses_above" in body["rule_functions"]


# --- rules --------------------------------------------------------------------------------------------

async def test_rule_lifecycle_create_list_get_replace_delete(client: httpx.AsyncClient,
                                                             alice: dict[str, str]) -> None:
    created = await client.post("/api/v1/patterns/rules", headers=alice, json={
        "name": "oversold", "expression": "rsi_14 < 30 and close > sma_200", "direction": "bullish",
        "description": "dip in an uptrend"})
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["features"] == ["rsi_14", "close", "sma_200"] and rule["direction"] == "bullish"
    listed = await client.get("/api/v1/patterns/rules", headers=alice)
    assert [r["id"] for r in listed.json()] == [rule["id"]]
    fetched = await client.get(f"/api/v1/patterns/rules/{rule['id']}", headers=alice)
    assert fetched.json() == rule
    replaced = await client.put(f"/api/v1/patterns/rules/{rule['id']}", headers=alice,
                                json={"name": "oversold", "expression": "crosses_above(sma_10, sma_30)"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["direction"] == "neutral" and replaced.json()["features"] == ["sma_10", "sma_30"]
    assert replaced.json()["created_at"] == rule["created_at"]
    deleted = await client.delete(f"/api/v1/patterns/rules/{rule['id']}", headers=alice)
    assert deleted.status_code == 204
    assert (await client.get(f"/api/v1/patterns/rules/{rule['id']}", headers=alice)).status_code == 404
    assert (await client.get("/api/v1/patterns/rules", headers=alice)).json() == []


async def test_another_users_rule_is_not_found_and_not_listed(
        client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]) -> None:
    created = await client.post("/api/v1/patterns/rules", headers=alice,
                                json={"name": "mine", "expression": "close > open"})
    rule_id = created.json()["id"]
    assert (await client.get(f"/api/v1/patterns/rules/{rule_id}", headers=bob)).status_code == 404
    replaced = await client.put(f"/api/v1/patterns/rules/{rule_id}", headers=bob,
                                json={"name": "taken", "expression": "close < open"})
    assert replaced.status_code == 404
    assert (await client.delete(f"/api/v1/patterns/rules/{rule_id}", headers=bob)).status_code == 404
    assert (await client.get("/api/v1/patterns/rules", headers=bob)).json() == []
    still = await client.get(f"/api/v1/patterns/rules/{rule_id}", headers=alice)
    assert still.json()["expression"] == "close > open"
    # Names are per owner: bob may use alice's.
    assert (await client.post("/api/v1/patterns/rules", headers=bob,
                              json={"name": "mine", "expression": "close > 1"})).status_code == 201


async def test_a_second_rule_with_the_same_name_is_409(client: httpx.AsyncClient,
                                                       alice: dict[str, str]) -> None:
    body = {"name": "twice", "expression": "close > open"}
    assert (await client.post("/api/v1/patterns/rules", headers=alice, json=body)).status_code == 201
    again = await client.post("/api/v1/patterns/rules", headers=alice, json=body)
    assert again.status_code == 409
    assert again.json()["errors"][0]["field"] == "name"
    other = await client.post("/api/v1/patterns/rules", headers=alice,
                              json={"name": "other", "expression": "close > 1"})
    renamed = await client.put(f"/api/v1/patterns/rules/{other.json()['id']}", headers=alice, json=body)
    assert renamed.status_code == 409


@pytest.mark.parametrize(("expression", "position", "words"), [
    ("rsi_x < 30", 0, "unknown feature 'rsi_x' at 0"),
    ("close > (sma_20 + 1", 19, "expected ')' at 19"),
    ("foo(close) > 1", 0, "unknown function 'foo'"),
    ("close", 0, "not a condition"),
])
async def test_a_bad_expression_is_422_with_its_position_and_nothing_is_saved(
        client: httpx.AsyncClient, alice: dict[str, str], expression: str, position: int, words: str) -> None:
    response = await client.post("/api/v1/patterns/rules", headers=alice,
                                 json={"name": "broken", "expression": expression})
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "expression" and error["position"] == position and words in error["reason"]
    validated = await client.post("/api/v1/patterns/rules/validate", headers=alice,
                                  json={"expression": expression})
    assert validated.status_code == 422 and validated.json()["errors"][0]["position"] == position
    assert (await client.get("/api/v1/patterns/rules", headers=alice)).json() == []


@pytest.mark.parametrize("body", [{"name": "", "expression": "close > 1"},
                                  {"name": "x" * 65, "expression": "close > 1"},
                                  {"name": "ok", "expression": "close > 1", "direction": "up"},
                                  {"name": "ok"}])
async def test_bad_rule_fields_are_422(client: httpx.AsyncClient, alice: dict[str, str],
                                       body: dict[str, Any]) -> None:
    response = await client.post("/api/v1/patterns/rules", headers=alice, json=body)
    assert response.status_code == 422, response.text


async def test_validate_reads_the_expression_back_with_its_features_and_history(
        client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await client.post("/api/v1/patterns/rules/validate", headers=alice,
                                 json={"expression": "((close > sma_20)) and prev(rsi_14, 3) < 30"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is True
    assert body["expression"] == "close > sma_20 and prev(rsi_14, 3) < 30"
    assert body["features"] == ["close", "sma_20", "rsi_14"]
    assert body["history_bars"] >= 19 + 3


async def test_the_callers_rules_are_detected_on_the_bars_where_they_hold(
        client: httpx.AsyncClient, market: httpx.AsyncClient, alice: dict[str, str],
        bob: dict[str, str]) -> None:
    created = await client.post("/api/v1/patterns/rules", headers=alice, json={
        "name": "golden cross", "expression": "crosses_above(sma_10, sma_30)", "direction": "bullish"})
    assert created.status_code == 201, created.text
    limit = 600
    response = await client.get("/api/v1/patterns", headers=alice,
                                params={"symbol": "SPX", "limit": limit, "kinds": "rule"})
    assert response.status_code == 200, response.text
    detections = response.json()["detections"]
    assert {d["pattern"] for d in detections} == {"rule:golden cross"}
    assert all(d["direction"] == "bullish" and d["confidence"] == 1.0 and d["kind"] == "rule"
               for d in detections)
    bars = await reference_bars(market, alice, "SPX", limit + 200)
    fast, slow = talib.SMA(bars.close, 10), talib.SMA(bars.close, 30)
    crossed = (fast[1:] > slow[1:]) & (fast[:-1] <= slow[:-1])
    want = [int(t) for t in bars.time_ms[1:][crossed] if t >= bars.time_ms[-limit]]
    assert [ms(d["time"]) for d in detections] == want and len(want) >= 3
    others = await client.get("/api/v1/patterns", headers=bob, params={"symbol": "SPX", "kinds": "rule"})
    assert others.json()["detections"] == []


async def test_the_number_of_rules_per_user_is_bounded(client: httpx.AsyncClient,
                                                       alice: dict[str, str]) -> None:
    for i in range(user_rules.MAX_RULES):
        created = await client.post("/api/v1/patterns/rules", headers=alice,
                                    json={"name": f"r{i}", "expression": "close > open"})
        assert created.status_code == 201, created.text
    refused = await client.post("/api/v1/patterns/rules", headers=alice,
                                json={"name": "one too many", "expression": "close > open"})
    assert refused.status_code == 409
    assert "delete one" in refused.json()["detail"]
