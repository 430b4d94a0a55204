"""Both warehouse backends run the same SQL and give the same answers.

The ClickHouse-server backend is driven through clickhouse-connect. No ClickHouse server recent enough
installs here (Debian ships 18.16, from before DateTime64), so it runs on clickhouse-connect's own chDB
transport (`chdb://<folder>`): the same client calls, the same SQL and encodings, only the HTTP hop is
not exercised. Set CLICKHOUSE_TEST_URL to a real server to run these tests against it as well.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from database_service import sql, store
from database_service.main import create_app
from database_service.settings import Settings
from database_service.warehouse import ChdbWarehouse, ServerWarehouse, Warehouse, WarehouseError

from aitrading.testing import running_app

BACKENDS = ["chdb", "clickhouse-connect"]
if os.environ.get("CLICKHOUSE_TEST_URL"):
    BACKENDS.append("clickhouse-server")


@pytest.fixture(scope="module", params=BACKENDS)
async def warehouse(request: pytest.FixtureRequest, warehouse_dir: Path) -> AsyncIterator[Warehouse]:
    folder = warehouse_dir / "database-service" / "warehouse"
    wh: ChdbWarehouse | ServerWarehouse
    if request.param == "chdb":
        wh = ChdbWarehouse(folder)
    elif request.param == "clickhouse-connect":
        wh = ServerWarehouse(f"chdb://{folder.resolve()}")
    else:
        wh = ServerWarehouse(os.environ["CLICKHOUSE_TEST_URL"])
    await wh.start()
    try:
        yield wh
    finally:
        await wh.stop()


def bar_columns(owner: str, symbol: str,
                rows: list[tuple[int, str, str, str, str, str]]) -> dict[str, list[Any]]:
    n = len(rows)
    return {"owner": [owner] * n, "symbol": [symbol] * n, "timeframe": ["1m"] * n,
            "time": [r[0] for r in rows],
            "open": [r[1] for r in rows], "high": [r[2] for r in rows], "low": [r[3] for r in rows],
            "close": [r[4] for r in rows], "volume": [r[5] for r in rows], "venue": ["v\tx"] * n,
            "source": [sql.SOURCE_IMPORT] * n, "synthetic": [False] * n}


async def test_decimals_come_back_exactly_at_both_ends_of_their_range(warehouse: Warehouse) -> None:
    owner, symbol = str(uuid4()), f"W{uuid4().hex[:8]}"
    huge = "9" * 26 + ".999999999999"
    rows = [(60_000, "0.000000000001", huge, "0.000000000001", "1.5", "0"),
            (120_000, "43000.123456789012", "43001", "42999", "43000", "12345678901234567890123456")]
    assert await store.insert_bars(warehouse, bar_columns(owner, symbol, rows)) == 2
    read = await store.read_bars(warehouse, owner, symbol, "1m", start_ms=0, end_ms=10**12, limit=10,
                                 newest_first=False)
    assert read == [(60_000, "0.000000000001", huge, "0.000000000001", "1.5", "0"), rows[1]]
    [series_row] = await warehouse.rows(
        "SELECT DISTINCT venue FROM aitrading.bars WHERE symbol = {s:String}", {"s": symbol})
    assert series_row == ["v\tx"]


async def test_a_reinsert_replaces_and_a_repeated_token_is_dropped(warehouse: Warehouse) -> None:
    owner, symbol = str(uuid4()), f"W{uuid4().hex[:8]}"
    first = bar_columns(owner, symbol, [(60_000, "1", "2", "0.5", "1.5", "10")])
    token = f"test:{uuid4()}"
    # A background merge would collapse a duplicate by itself and hide what the second insert wrote.
    await warehouse.command("SYSTEM STOP MERGES aitrading.bars")
    try:
        await store.insert_bars(warehouse, first, token=token)
        await store.insert_bars(warehouse, first, token=token)
        [[raw]] = await warehouse.rows("SELECT count() FROM aitrading.bars WHERE symbol = {s:String}",
                                       {"s": symbol})
        assert raw == 1
        await store.insert_bars(warehouse, first, token=f"{token}-other")
        [[raw]] = await warehouse.rows("SELECT count() FROM aitrading.bars WHERE symbol = {s:String}",
                                       {"s": symbol})
        assert raw == 2  # another token is another insert: only FINAL collapses it
    finally:
        await warehouse.command("SYSTEM START MERGES aitrading.bars")
    await store.insert_bars(warehouse, bar_columns(owner, symbol, [(60_000, "1", "3", "0.5", "2.5", "11")]))
    read = await store.read_bars(warehouse, owner, symbol, "1m", start_ms=0, end_ms=10**12, limit=10,
                                 newest_first=True)
    assert read == [(60_000, "1", "3", "0.5", "2.5", "11")]


async def test_resampling_and_gap_queries_agree_on_both_backends(warehouse: Warehouse) -> None:
    owner, symbol = str(uuid4()), f"W{uuid4().hex[:8]}"
    minutes = [m for m in range(30) if m not in (7, 8)]
    rows = [(m * 60_000, f"{10 + m}", f"{11 + m}", f"{9 + m}", f"{10.5 + m}", "1") for m in minutes]
    await store.insert_bars(warehouse, bar_columns(owner, symbol, rows))
    five = await store.read_resampled(warehouse, owner, symbol, "1m", seconds=300, start_ms=0,
                                      end_ms=30 * 60_000 - 1, limit=100, newest_first=False)
    assert five[0] == (0, "10", "15", "9", "14.5", "5")
    assert five[1] == (300_000, "15", "20", "14", "19.5", "3")  # minutes 5, 6 and 9
    steps = await store.bar_steps(warehouse, owner, symbol, "1m", step_ms=60_000, bucketed=False, start_ms=0,
                                  end_ms=10**12)
    assert steps == [(6 * 60_000, 9 * 60_000)]
    assert await store.bar_span(warehouse, owner, symbol, "1m", step_ms=300_000, bucketed=True, start_ms=0,
                                end_ms=10**12) == (0, 25 * 60_000, 6)


async def test_a_failing_statement_is_a_warehouse_error(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError):
        await warehouse.rows("SELECT * FROM aitrading.no_such_table")
    await warehouse.check()


async def test_chdb_refuses_a_second_folder_while_one_is_open(warehouse_dir: Path, tmp_path: Path) -> None:
    first = ChdbWarehouse(warehouse_dir / "database-service" / "warehouse")
    await first.start()
    try:
        with pytest.raises(WarehouseError, match="one warehouse folder per process"):
            await ChdbWarehouse(tmp_path / "other").start()
    finally:
        await first.stop()


async def test_the_app_runs_on_the_clickhouse_backend(make_settings: Callable[..., Settings],
                                                      warehouse_dir: Path,
                                                      user_headers: dict[str, str]) -> None:
    folder = (warehouse_dir / "database-service" / "warehouse").resolve()
    app = create_app(make_settings(clickhouse_url=f"chdb://{folder}"))
    async with running_app(app) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["warehouse"] == "ok"
        assert app.state.warehouse.backend == "clickhouse"
        response = await client.get("/api/v1/market/ohlcv", headers=user_headers,
                                    params={"symbol": "SPX", "timeframe": "1d", "limit": 2})
        assert [b["close"] for b in response.json()["bars"]] == ["2485.73999", "2506.850098"]
        symbol = f"W{uuid4().hex[:8]}"
        imported = await client.post("/api/v1/market/import", headers=user_headers, json={
            "symbol": symbol, "timeframe": "1h",
            "bars": [{"time": "2024-01-01T00:00:00Z", "open": 1, "high": 2, "low": 0.5, "close": 1.5,
                      "volume": 3},
                     {"time": "2024-01-01T01:00:00Z", "open": "1.5", "high": "2", "low": "1", "close": "2",
                      "volume": "4"}]})
        assert imported.status_code == 201, imported.text
        day = await client.get("/api/v1/market/ohlcv", headers=user_headers,
                               params={"symbol": symbol, "timeframe": "1d"})
        assert day.json()["bars"] == [{"time": "2024-01-01T00:00:00Z", "open": "1", "high": "2", "low": "0.5",
                                       "close": "2", "volume": "7"}]


async def test_ready_reports_the_warehouse_and_the_feed_consumer(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["warehouse"] == "ok"
    assert response.json()["checks"]["market-ingest"] == "ok"
