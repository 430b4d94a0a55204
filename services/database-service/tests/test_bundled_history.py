"""SPX and NDX from arch.data, loaded at start and served by /ohlcv."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest


def arch_frame(name: str) -> Any:
    if name == "SPX":
        import arch.data.sp500 as dataset
    else:
        import arch.data.nasdaq as dataset
    return dataset.load()


@pytest.mark.parametrize("symbol", ["SPX", "NDX"])
async def test_all_bundled_bars_come_back_equal_to_arch(client: httpx.AsyncClient,
                                                         user_headers: dict[str, str], symbol: str) -> None:
    response = await client.get("/api/v1/market/ohlcv", headers=user_headers,
                                params={"symbol": symbol, "timeframe": "1d", "limit": 100_000})
    assert response.status_code == 200, response.text
    body = response.json()
    frame = arch_frame(symbol)
    assert body["symbol"] == symbol and body["timeframe"] == "1d"
    bars = body["bars"]
    assert len(bars) == len(frame) == 5031
    for bar, (day, row) in ((bars[0], next(frame.iterrows())), (bars[-1], list(frame.iterrows())[-1])):
        assert bar["time"] == day.strftime("%Y-%m-%dT00:00:00Z")
        for column in ("Open", "High", "Low", "Close"):
            assert Decimal(bar[column.lower()]) == Decimal(repr(float(row[column])))
        assert Decimal(bar["volume"]) == Decimal(int(row["Volume"]))
    assert bars[0]["time"] == "1999-01-04T00:00:00Z" and bars[-1]["time"] == "2018-12-31T00:00:00Z"
    times = [b["time"] for b in bars]
    assert times == sorted(times)
    assert all(isinstance(bar["close"], str) for bar in bars)
