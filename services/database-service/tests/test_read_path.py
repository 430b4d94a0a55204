"""The bars read path: answers rendered by the warehouse, and the caches kept beside a chDB warehouse.

Every answer must be the one a fresh read gives: an import, a feed insert or a new series shows in the
very next request, whatever was read before it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import httpx
import pytest
from database_service import caches, sql, store
from database_service.caches import WarehouseCache
from fastapi import FastAPI

Headers = dict[str, str]
OHLCV = "/api/v1/market/ohlcv"
IMPORT = "/api/v1/market/import"


async def bars(client: httpx.AsyncClient, headers: Headers, **params: Any) -> dict[str, Any]:
    response = await client.get(OHLCV, headers=headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def imported(client: httpx.AsyncClient, headers: Headers, symbol: str, timeframe: str,
                   rows: list[dict[str, Any]]) -> None:
    response = await client.post(IMPORT, headers=headers, json={"symbol": symbol, "timeframe": timeframe,
                                                                "bars": rows})
    assert response.status_code == 201, response.text


# --- over the app --------------------------------------------------------------------------------

async def test_a_reimport_shows_in_the_next_read_of_a_bars_answer_read_before(
        client: httpx.AsyncClient, user_headers: Headers, h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    rows = h.walk_bars(h.START, timedelta(hours=1), 30)
    await imported(client, user_headers, symbol, "1h", rows)
    for _ in range(2):  # the second read is answered from the cache
        before = await bars(client, user_headers, symbol=symbol, timeframe="1h", limit=5)
        day = await bars(client, user_headers, symbol=symbol, timeframe="1d", limit=5)
    assert before["bars"][-1]["close"] == str(Decimal(rows[-1]["close"]))
    changed = [dict(r) for r in rows]
    changed[-1]["close"] = str(Decimal(rows[-1]["close"]) + Decimal("0.5"))
    changed[-1]["high"] = str(Decimal(rows[-1]["high"]) + Decimal("0.5"))
    await imported(client, user_headers, symbol, "1h", changed)
    after = await bars(client, user_headers, symbol=symbol, timeframe="1h", limit=5)
    assert Decimal(after["bars"][-1]["close"]) == Decimal(changed[-1]["close"])
    assert after["bars"][:-1] == before["bars"][:-1]
    resampled = await bars(client, user_headers, symbol=symbol, timeframe="1d", limit=5)
    assert resampled["resampled_from"] == "1h"
    assert Decimal(resampled["bars"][-1]["close"]) == Decimal(changed[-1]["close"])
    assert resampled["bars"][-1] != day["bars"][-1]


async def test_a_new_stored_timeframe_answers_instead_of_resampling_at_once(
        client: httpx.AsyncClient, user_headers: Headers, h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    await imported(client, user_headers, symbol, "1h", h.walk_bars(h.START, timedelta(hours=1), 48))
    derived = await bars(client, user_headers, symbol=symbol, timeframe="1d")
    assert derived["resampled_from"] == "1h" and len(derived["bars"]) == 2
    daily = h.walk_bars(h.START, timedelta(days=1), 3, seed=11, price="500")
    await imported(client, user_headers, symbol, "1d", daily)
    stored = await bars(client, user_headers, symbol=symbol, timeframe="1d")
    assert stored["resampled_from"] is None
    assert [b["time"] for b in stored["bars"]] == [b["time"] for b in daily]


async def test_other_users_do_not_see_an_own_series_and_the_owner_does_at_once(
        client: httpx.AsyncClient, user_headers: Headers, other_headers: Headers, h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    missing = await client.get(OHLCV, headers=user_headers, params={"symbol": symbol, "timeframe": "1d"})
    assert missing.status_code == 404
    await imported(client, user_headers, symbol, "1d", h.walk_bars(h.START, timedelta(days=1), 3))
    assert len((await bars(client, user_headers, symbol=symbol, timeframe="1d"))["bars"]) == 3
    hidden = await client.get(OHLCV, headers=other_headers, params={"symbol": symbol, "timeframe": "1d"})
    assert hidden.status_code == 404


async def test_times_carry_milliseconds_on_every_bar_only_when_one_has_them(
        app: FastAPI, client: httpx.AsyncClient, user_headers: Headers, user_id: UUID,
        h: SimpleNamespace) -> None:
    # Imports and the feed store whole bars; a stored time with milliseconds is written here directly.
    symbol, owner = h.unique_symbol(), str(user_id)
    start_ms = int(h.START.timestamp() * 1000)
    times = [start_ms, start_ms + 60_250, start_ms + 120_000]
    wh = app.state.warehouse
    await store.insert_bars(wh, {
        "owner": [owner] * 3, "symbol": [symbol] * 3, "timeframe": ["1m"] * 3, "time": times,
        "open": ["1.5"] * 3, "high": ["2.25"] * 3, "low": ["1"] * 3, "close": ["2.000"] * 3,
        "volume": ["10"] * 3, "venue": ["test"] * 3, "source": [sql.SOURCE_IMPORT] * 3,
        "synthetic": [False] * 3})
    await store.register_series(wh, [store.Series(owner, symbol, "1m", "test", "crypto", False)])
    both = await bars(client, user_headers, symbol=symbol, timeframe="1m")
    assert [b["time"] for b in both["bars"]] == ["2024-03-04T00:00:00.000Z", "2024-03-04T00:01:00.250Z",
                                                 "2024-03-04T00:02:00.000Z"]
    last = await bars(client, user_headers, symbol=symbol, timeframe="1m", limit=1)
    assert [b["time"] for b in last["bars"]] == ["2024-03-04T00:02:00Z"]
    assert last["bars"] == [{"time": "2024-03-04T00:02:00Z", "open": "1.5", "high": "2.25", "low": "1",
                             "close": "2", "volume": "10"}]
    assert list(last["bars"][0]) == ["time", "open", "high", "low", "close", "volume"]


async def test_an_empty_range_is_an_empty_list(client: httpx.AsyncClient, user_headers: Headers) -> None:
    body = await bars(client, user_headers, symbol="SPX", timeframe="1d", start="2030-01-01T00:00:00Z")
    assert body == {"symbol": "SPX", "timeframe": "1d", "resampled_from": None, "bars": []}


# --- the cache itself ----------------------------------------------------------------------------

def test_a_bars_answer_is_dropped_by_a_write_of_its_symbol_only() -> None:
    cache = WarehouseCache()
    cache.put_bars("A", 1, cache.bars_version("A"), b"[1]")
    cache.put_bars("B", 1, cache.bars_version("B"), b"[2]")
    assert cache.get_bars("A", 1) == b"[1]" and cache.get_bars("A", 2) is None
    cache.drop_bars(["A"])
    assert cache.get_bars("A", 1) is None
    assert cache.get_bars("B", 1) == b"[2]"
    cache.drop_all_bars()
    assert cache.get_bars("B", 1) is None


def test_a_read_that_raced_a_write_is_not_kept() -> None:
    cache = WarehouseCache()
    seen = cache.bars_version("A")
    cache.drop_bars(["A"])  # an insert finished while the read ran
    cache.put_bars("A", 1, seen, b"[old]")
    assert cache.get_bars("A", 1) is None
    seen = cache.bars_version("A")
    cache.drop_all_bars()
    cache.put_bars("A", 1, seen, b"[old]")
    assert cache.get_bars("A", 1) is None


def test_answers_expire_and_the_oldest_give_way_to_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = WarehouseCache()
    monkeypatch.setattr(caches, "MAX_BYTES", 40)
    for key in range(4):
        cache.put_bars("A", key, cache.bars_version("A"), b"x" * 10)
    assert cache.get_bars("A", 0) is not None  # now the most recently used
    cache.put_bars("A", 4, cache.bars_version("A"), b"x" * 10)
    assert cache.get_bars("A", 1) is None and cache.get_bars("A", 0) is not None
    cache.put_bars("A", 5, cache.bars_version("A"), b"x" * 11)  # more than a quarter: not kept
    assert cache.get_bars("A", 5) is None
    monkeypatch.setattr(caches, "MAX_AGE_S", -1.0)
    assert cache.get_bars("A", 0) is None
