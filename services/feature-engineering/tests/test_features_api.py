"""GET /api/v1/features over the real database-service: values equal TA-Lib on the same bars, warm-up
is null, ranges work, refusals name what is wrong, a user's own series are theirs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import uuid4

import httpx
import numpy as np
import pytest
import talib

from aitrading.market import indicators
from aitrading.market.bars import OhlcvFrame

pytestmark = pytest.mark.slow  # starts database-service (chDB) and loads the bundled history


async def _stored_bars(database_service: Callable[[], httpx.AsyncClient], headers: dict[str, str],
                       **params: object) -> OhlcvFrame:
    async with database_service() as dbs:
        response = await dbs.get("/api/v1/market/ohlcv", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return OhlcvFrame.from_json_bars(response.json()["bars"])


def _column(rows: list[dict[str, object]], name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)


async def test_features_for_spx_equal_talib_on_the_same_bars(
        client: httpx.AsyncClient, user_headers: dict[str, str],
        database_service: Callable[[], httpx.AsyncClient]) -> None:
    names = ["sma_20", "rsi_14", "macd", "macd_12_26_9_signal", "bbands_20_2_upper", "atr_14", "adx_14",
             "stoch_14_3_3_k", "log_return", "volatility_20"]
    limit = 300
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": "SPX", "timeframe": "1d", "indicators": ",".join(names),
                                        "limit": limit})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["symbol"], body["timeframe"], body["indicators"]) == ("SPX", "1d", names)
    rows = body["rows"]
    assert len(rows) == limit and set(rows[0]) == {"time", *names}

    # The service read limit + the history its indicators need, and computed on exactly those bars.
    history = indicators.history_needed(indicators.parse_many(names))
    bars = await _stored_bars(database_service, user_headers, symbol="SPX", timeframe="1d",
                              limit=limit + history)
    assert [r["time"] for r in rows] == \
        [datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in bars.time_ms[-limit:]]
    high, low, close = bars.high, bars.low, bars.close
    macd, signal, _ = talib.MACD(close, 12, 26, 9)
    expected = {
        "sma_20": talib.SMA(close, 20), "rsi_14": talib.RSI(close, 14), "macd": macd,
        "macd_12_26_9_signal": signal, "bbands_20_2_upper": talib.BBANDS(close, 20, 2.0, 2.0, 0)[0],
        "atr_14": talib.ATR(high, low, close, 14), "adx_14": talib.ADX(high, low, close, 14),
        "stoch_14_3_3_k": talib.STOCH(high, low, close, 14, 3, 0, 3, 0)[0],
        "log_return": np.r_[np.nan, np.log(close[1:] / close[:-1])],
    }
    for name, reference in expected.items():
        np.testing.assert_allclose(_column(rows, name), reference[-limit:], rtol=1e-12, err_msg=name)

    # And, the history being enough, they equal TA-Lib over all twenty years of SPX too.
    everything = await _stored_bars(database_service, user_headers, symbol="SPX", timeframe="1d",
                                    limit=100_000)
    assert len(everything) > 5000
    full_rsi = talib.RSI(everything.close, 14)[-limit:]
    np.testing.assert_allclose(_column(rows, "rsi_14"), full_rsi, rtol=0, atol=1e-6 * 100)


async def test_values_are_null_while_an_indicator_warms_up(client: httpx.AsyncClient,
                                                           user_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": "SPX", "indicators": "sma_20,close", "limit": 10_000})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert len(rows) > 5000 and rows[0]["time"] == "1999-01-04T00:00:00Z"
    assert all(r["sma_20"] is None for r in rows[:19]) and all(r["sma_20"] is not None for r in rows[19:])
    assert all(isinstance(r["close"], float) for r in rows)


async def test_a_start_and_end_give_those_rows_warmed_up_from_earlier_bars(
        client: httpx.AsyncClient, user_headers: dict[str, str],
        database_service: Callable[[], httpx.AsyncClient]) -> None:
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": "SPX", "indicators": "sma_50,ema_20", "start": "2010-01-01",
                                        "end": "2010-03-31T00:00:00Z", "limit": 1000})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert rows[0]["time"] == "2010-01-04T00:00:00Z" and rows[-1]["time"] == "2010-03-31T00:00:00Z"
    everything = await _stored_bars(database_service, user_headers, symbol="SPX", timeframe="1d",
                                    limit=100_000)
    times = everything.time_ms
    first = int(np.searchsorted(times, datetime(2010, 1, 4, tzinfo=UTC).timestamp() * 1000))
    window = slice(first, first + len(rows))
    np.testing.assert_allclose(_column(rows, "sma_50"), talib.SMA(everything.close, 50)[window], rtol=1e-12)
    np.testing.assert_allclose(_column(rows, "ema_20"), talib.EMA(everything.close, 20)[window], rtol=1e-9)


@pytest.mark.parametrize(("params", "field", "reason"), [
    ({"indicators": "sma_20,foo"}, "indicators",
     "unknown indicator 'foo'; GET /api/v1/features/catalog lists them"),
    ({"indicators": "rsi_1"}, "indicators", "rsi_1: timeperiod must be between 2 and 100000"),
    ({"indicators": "macd_12_26_9_bar"}, "indicators",
     "macd_12_26_9_bar: unknown output 'bar'; macd has macd, signal, hist"),
    ({}, "indicators", "give indicators (comma-separated) or set"),
    ({"indicators": " , "}, "indicators", "must list at least one indicator"),
    ({"indicators": "sma_20", "set": "mine"}, "indicators", "give either indicators or set, not both"),
    ({"indicators": "sma_20", "timeframe": "7m"}, "timeframe", "must be one of 1m, 5m, 15m, 1h, 4h, 1d"),
    ({"indicators": "sma_20", "start": "2010-02-01", "end": "2010-01-01"}, "start", "must not be after end"),
])
async def test_a_bad_request_is_a_422_naming_the_field_and_reason(
        client: httpx.AsyncClient, user_headers: dict[str, str], params: dict[str, str], field: str,
        reason: str) -> None:
    response = await client.get("/api/v1/features", headers=user_headers, params={"symbol": "SPX", **params})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {"field": field, "reason": reason} in response.json()["errors"]


async def test_every_bad_indicator_is_named_at_once(client: httpx.AsyncClient,
                                                    user_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": "SPX", "indicators": "foo,sma_20,ema_x"})
    assert response.status_code == 422
    assert [e["reason"] for e in response.json()["errors"]] == [
        "unknown indicator 'foo'; GET /api/v1/features/catalog lists them",
        "ema_x: timeperiod must be a number, not 'x'"]


async def test_a_limit_over_ten_thousand_is_refused(client: httpx.AsyncClient,
                                                    user_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": "SPX", "indicators": "sma_20", "limit": 10_001})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.limit"


async def test_an_unknown_symbol_is_a_404(client: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": f"NOPE{uuid4().hex[:8].upper()}", "indicators": "sma_20"})
    assert response.status_code == 404, response.text


async def test_features_need_a_signed_in_caller(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/features", params={"symbol": "SPX", "indicators": "sma_20"})
    assert response.status_code == 401
    assert (await client.get("/api/v1/features/catalog")).status_code == 401


async def test_a_users_own_imported_series_gives_them_features_and_no_one_else(
        client: httpx.AsyncClient, user_headers: dict[str, str], other_headers: dict[str, str],
        database_service: Callable[[], httpx.AsyncClient]) -> None:
    symbol = f"OWN{uuid4().hex[:8].upper()}"
    closes = [100 + i + (i % 3) for i in range(40)]
    bars = [{"time": datetime.fromtimestamp(86_400 * (19_000 + i), UTC).isoformat(), "open": c, "high": c + 1,
             "low": c - 1, "close": c, "volume": 1000 + i} for i, c in enumerate(closes)]
    async with database_service() as dbs:
        imported = await dbs.post("/api/v1/market/import", headers=user_headers,
                                  json={"symbol": symbol, "timeframe": "1d", "bars": bars})
    assert imported.status_code == 201, imported.text
    mine = await client.get("/api/v1/features", headers=user_headers,
                            params={"symbol": symbol, "indicators": "sma_5,mom_1", "limit": 40})
    assert mine.status_code == 200, mine.text
    rows = mine.json()["rows"]
    assert len(rows) == 40 and rows[4]["sma_5"] == pytest.approx(sum(closes[:5]) / 5)
    assert [r["mom_1"] for r in rows[1:]] == [float(b - a) for a, b in itertools.pairwise(closes)]
    theirs = await client.get("/api/v1/features", headers=other_headers,
                              params={"symbol": symbol, "indicators": "sma_5"})
    assert theirs.status_code == 404


async def test_the_catalogue_lists_every_indicator_with_its_parameters(client: httpx.AsyncClient,
                                                                       user_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/features/catalog", headers=user_headers)
    assert response.status_code == 200
    entries = {e["name"]: e for e in response.json()}
    assert len([e for e in entries.values() if e["backend"] == "ta-lib"]) >= 30
    assert {"sma", "rsi", "macd", "bbands", "return", "log_return", "volatility", "zscore", "skew",
            "close"} <= set(entries)
    assert entries["bbands"]["outputs"] == ["upper", "middle", "lower"]
    assert entries["rsi"]["params"] == [{"name": "timeperiod", "type": "int", "default": 14, "minimum": 2,
                                         "maximum": 100000}]


async def test_a_feature_set_can_be_asked_for_by_name(client: httpx.AsyncClient,
                                                      user_headers: dict[str, str],
                                                      other_headers: dict[str, str]) -> None:
    created = await client.post("/api/v1/features/sets", headers=user_headers,
                                json={"name": "trend", "indicators": ["ema_10", "adx"]})
    assert created.status_code == 201, created.text
    response = await client.get("/api/v1/features", headers=user_headers,
                                params={"symbol": "SPX", "set": "trend", "limit": 5})
    assert response.status_code == 200, response.text
    assert response.json()["indicators"] == ["ema_10", "adx"]
    assert set(response.json()["rows"][0]) == {"time", "ema_10", "adx"}
    other = await client.get("/api/v1/features", headers=other_headers,
                             params={"symbol": "SPX", "set": "trend"})
    assert other.status_code == 404
