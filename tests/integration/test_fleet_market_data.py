"""Market data driven through the gateway: the warehouse, a replay feed, features, patterns, import."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import talib
from websockets.sync.client import connect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user(trading: Any) -> dict[str, str]:
    return dict(trading.new_user("quant"))


def test_the_bundled_spx_history_is_served_whole(gateway: httpx.Client, user: dict[str, str]) -> None:
    response = gateway.get("/api/v1/market/ohlcv", params={"symbol": "SPX", "timeframe": "1d",
                                                           "limit": 100_000}, headers=user)
    assert response.status_code == 200, response.text
    bars = response.json()["bars"]
    assert len(bars) == 5031
    assert bars[0]["time"].startswith("1999-01-04") and bars[-1]["time"].startswith("2018-12-31")
    assert isinstance(bars[0]["close"], str)
    symbols = gateway.get("/api/v1/market/symbols", headers=user).json()
    assert {"SPX", "NDX"} <= {s["symbol"] for s in symbols}


def test_a_replay_feed_lands_in_the_warehouse(gateway: httpx.Client, admin: dict[str, str], trading: Any,
                                              user: dict[str, str]) -> None:
    alias = f"SPXR{uuid.uuid4().hex[:6].upper()}"
    started = gateway.post("/api/v1/feeds", headers=admin, json={
        "kind": "replay", "symbols": ["SPX"],
        "params": {"publish_as": alias, "speed": 0, "start": "2018-01-01T00:00:00Z"}})
    assert started.status_code == 201, started.text

    def stored() -> list[dict[str, Any]]:
        r = gateway.get("/api/v1/market/ohlcv", params={"symbol": alias, "timeframe": "1d", "limit": 1000},
                        headers=user)
        return r.json()["bars"] if r.status_code == 200 and len(r.json()["bars"]) == 251 else []

    bars = trading.eventually(stored, timeout_s=60, every_s=0.5)
    assert len(bars) == 251, "the 251 trading days of 2018 should be stored under the replay's name"
    original = gateway.get("/api/v1/market/ohlcv", params={"symbol": "SPX", "timeframe": "1d", "limit": 251},
                           headers=user).json()["bars"]
    assert [b["close"] for b in bars] == [b["close"] for b in original]
    feed = gateway.get(f"/api/v1/feeds/{started.json()['id']}", headers=user).json()
    assert feed["counters"]["bars"] == 251


def test_features_for_spx_equal_talib_on_the_same_bars(gateway: httpx.Client, user: dict[str, str]) -> None:
    bars = gateway.get("/api/v1/market/ohlcv", params={"symbol": "SPX", "timeframe": "1d", "limit": 100_000},
                       headers=user).json()["bars"]
    close = np.array([float(b["close"]) for b in bars])
    response = gateway.get("/api/v1/features", headers=user, params={
        "symbol": "SPX", "timeframe": "1d", "indicators": "sma_20,rsi_14,bbands_20_2_upper", "limit": 50})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert len(rows) == 50 and rows[-1]["time"].startswith("2018-12-31")
    upper, _, _ = talib.BBANDS(close, 20, 2, 2)
    np.testing.assert_allclose([r["sma_20"] for r in rows], talib.SMA(close, 20)[-50:], rtol=1e-9)
    # RSI is recursive: the service starts it a settled distance back, not at 1999 (within 1e-6).
    np.testing.assert_allclose([r["rsi_14"] for r in rows], talib.RSI(close, 14)[-50:], rtol=1e-6)
    np.testing.assert_allclose([r["bbands_20_2_upper"] for r in rows], upper[-50:], rtol=1e-9)


def test_unknown_indicator_is_422_naming_it(gateway: httpx.Client, user: dict[str, str]) -> None:
    response = gateway.get("/api/v1/features", headers=user,
                           params={"symbol": "SPX", "timeframe": "1d", "indicators": "rsi_14,magic_9"})
    assert response.status_code == 422
    assert "magic_9" in response.text


def test_patterns_for_spx_come_back(gateway: httpx.Client, user: dict[str, str]) -> None:
    response = gateway.get("/api/v1/patterns", headers=user,
                           params={"symbol": "SPX", "timeframe": "1d", "limit": 500})
    assert response.status_code == 200, response.text
    detections = response.json()["detections"]
    assert detections, "500 daily bars of the S&P 500 hold candlestick patterns"
    first = detections[0]
    assert {"time", "pattern", "direction", "confidence"} <= set(first)
    assert 0 <= first["confidence"] <= 1
    window_start = datetime(2016, 12, 1, tzinfo=UTC)
    assert all(datetime.fromisoformat(d["time"].replace("Z", "+00:00")) >= window_start for d in detections)


def test_a_csv_with_one_bad_row_is_refused_whole(gateway: httpx.Client, user: dict[str, str]) -> None:
    symbol = f"IMP{uuid.uuid4().hex[:6].upper()}"
    day = date(2024, 1, 1)
    lines = ["time,open,high,low,close,volume"]
    for i in range(10):
        when = day.replace(day=i + 1).isoformat()
        lines.append(f"{when}T00:00:00Z,100,101,99,100.5,1000")
    lines[6] = lines[6].replace(",101,", ",98,")  # high below open: line 7 of the file (the header is 1)
    files = {"file": ("bars.csv", "\n".join(lines).encode(), "text/csv")}
    response = gateway.post("/api/v1/market/import", headers=user, files=files,
                            data={"symbol": symbol, "timeframe": "1d"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["row 7"]
    nothing = gateway.get("/api/v1/market/ohlcv", params={"symbol": symbol, "timeframe": "1d"}, headers=user)
    assert nothing.status_code == 404

    lines[6] = lines[5].replace("01-05", "01-06")
    good = gateway.post("/api/v1/market/import", headers=user, data={"symbol": symbol, "timeframe": "1d"},
                        files={"file": ("bars.csv", "\n".join(lines).encode(), "text/csv")})
    assert good.status_code == 201, good.text
    assert good.json()["imported"] == 10


def test_an_admin_import_replays_from_the_warehouse(gateway: httpx.Client, admin: dict[str, str],
                                                    trading: Any, user: dict[str, str]) -> None:
    symbol, alias = f"WH{uuid.uuid4().hex[:6].upper()}", f"WHR{uuid.uuid4().hex[:6].upper()}"
    bars = [{"time": f"2024-03-{day:02d}T00:00:00Z", "open": "10", "high": "11", "low": "9.5",
             "close": f"10.{day:02d}", "volume": "5"} for day in range(1, 21)]
    imported = gateway.post("/api/v1/market/import", headers=admin,
                            json={"symbol": symbol, "timeframe": "1d", "bars": bars})
    assert imported.status_code == 201, imported.text
    started = gateway.post("/api/v1/feeds", headers=admin, json={
        "kind": "replay", "symbols": [symbol],
        "params": {"source": "warehouse", "timeframe": "1d", "publish_as": alias, "speed": 0}})
    assert started.status_code == 201, started.text

    def replayed() -> list[dict[str, Any]]:
        r = gateway.get("/api/v1/market/ohlcv", params={"symbol": alias, "timeframe": "1d"}, headers=user)
        return r.json()["bars"] if r.status_code == 200 and len(r.json()["bars"]) == 20 else []

    stored = trading.eventually(replayed, timeout_s=60, every_s=0.5)
    assert [Decimal(b["close"]) for b in stored] == [Decimal(b["close"]) for b in bars]


def test_live_synthetic_ticks_stream_through_the_gateway(fleet_ws_url: str, user: dict[str, str]) -> None:
    token = user["Authorization"].split()[1]
    url = f"{fleet_ws_url}/ws/market?symbols=SYN-BTC/USD&token={token}"
    with connect(url, open_timeout=10) as ws:
        message = orjson.loads(ws.recv(timeout=15))
    assert message["symbol"] == "SYN-BTC/USD"
    assert message["synthetic"] is True
    assert message["type"] in ("tick", "bar")
