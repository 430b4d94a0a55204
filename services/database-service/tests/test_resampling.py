"""Timeframes that are not stored come from finer stored bars, aggregated in SQL like pandas does."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest

Headers = dict[str, str]


def pandas_resample(bars: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    frame = pd.DataFrame({
        "time": pd.to_datetime([b["time"] for b in bars], utc=True),
        **{k: [Decimal(b[k]) for b in bars] for k in ("open", "high", "low", "close", "volume")},
    }).set_index("time")
    grouped = frame.resample(rule, label="left", closed="left")
    out = pd.DataFrame({"open": grouped["open"].first(), "high": grouped["high"].max(),
                        "low": grouped["low"].min(), "close": grouped["close"].last(),
                        "volume": grouped["volume"].sum()}).dropna()
    return [{"time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), **{k: Decimal(str(row[k])) for k in out.columns}}
            for t, row in out.iterrows()]


def as_decimals(bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"time": b["time"], **{k: Decimal(b[k]) for k in ("open", "high", "low", "close", "volume")}}
            for b in bars]


@pytest.fixture(scope="module")
async def minute_series(client: httpx.AsyncClient, user_headers: Headers,
                        h: SimpleNamespace) -> tuple[str, list[dict[str, Any]]]:
    symbol = h.unique_symbol("RS")
    # Three hours and ten minutes of 1m bars starting 00:00, with a hole of 7 minutes in the second hour.
    bars = h.walk_bars(h.START, timedelta(minutes=1), 190, seed=11)
    bars = [b for i, b in enumerate(bars) if not 70 <= i < 77]
    response = await client.post("/api/v1/market/import", headers=user_headers,
                                 json={"symbol": symbol, "timeframe": "1m", "bars": bars})
    assert response.status_code == 201, response.text
    return symbol, bars


@pytest.mark.parametrize(("timeframe", "rule"),
                         [("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("4h", "4h")])
async def test_resampled_bars_equal_a_pandas_resample(client: httpx.AsyncClient, user_headers: Headers,
                                                      minute_series: tuple[str, list[dict[str, Any]]],
                                                      timeframe: str, rule: str) -> None:
    symbol, bars = minute_series
    response = await client.get("/api/v1/market/ohlcv", headers=user_headers,
                                params={"symbol": symbol, "timeframe": timeframe, "limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resampled_from"] == "1m"
    assert as_decimals(body["bars"]) == pandas_resample(bars, rule)


async def test_resampled_reads_honour_range_and_limit(client: httpx.AsyncClient, user_headers: Headers,
                                                      minute_series: tuple[str, list[dict[str, Any]]],
                                                      h: SimpleNamespace) -> None:
    symbol, bars = minute_series
    expected = pandas_resample(bars, "5min")
    latest = await client.get("/api/v1/market/ohlcv", headers=user_headers,
                              params={"symbol": symbol, "timeframe": "5m", "limit": 3})
    assert as_decimals(latest.json()["bars"]) == expected[-3:]
    # A start inside a bucket begins at the next whole bucket; an end inside one still includes it whole.
    window = await client.get("/api/v1/market/ohlcv", headers=user_headers, params={
        "symbol": symbol, "timeframe": "5m", "start": h.iso(h.START + timedelta(minutes=12)),
        "end": h.iso(h.START + timedelta(minutes=31))})
    assert as_decimals(window.json()["bars"]) == [b for b in expected if b["time"] in {
        h.iso(h.START + timedelta(minutes=m)) for m in (15, 20, 25, 30)}]


async def test_symbols_list_derivable_timeframes(client: httpx.AsyncClient, user_headers: Headers,
                                                 minute_series: tuple[str, list[dict[str, Any]]]) -> None:
    symbol, _ = minute_series
    symbols = (await client.get("/api/v1/market/symbols", headers=user_headers)).json()
    listed = {s["symbol"]: s for s in symbols}
    assert listed[symbol]["stored_timeframes"] == ["1m"]
    assert listed[symbol]["timeframes"] == ["1m", "5m", "15m", "1h", "4h", "1d"]
