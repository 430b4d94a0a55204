"""Gap reports over stored series, and retention (TTL) read by anyone and changed by admins only."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from database_service import store
from fastapi import FastAPI

Headers = dict[str, str]


async def gaps_of(client: httpx.AsyncClient, headers: Headers, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/market/gaps", headers=headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_gaps_report_each_run_of_missing_bars(client: httpx.AsyncClient, user_headers: Headers,
                                                    h: SimpleNamespace) -> None:
    symbol = h.unique_symbol("GAP")
    bars = h.walk_bars(h.START, timedelta(hours=1), 24)
    kept = [b for i, b in enumerate(bars) if i not in (5, 6, 7, 15)]
    response = await client.post("/api/v1/market/import", headers=user_headers,
                                 json={"symbol": symbol, "timeframe": "1h", "bars": kept})
    assert response.status_code == 201
    body = await gaps_of(client, user_headers, symbol=symbol, timeframe="1h")
    assert body["bars"] == 20 and body["first"] == bars[0]["time"]
    assert body["gaps"] == [
        {"from": bars[5]["time"], "to": bars[7]["time"], "missing_bars": 3},
        {"from": bars[15]["time"], "to": bars[15]["time"], "missing_bars": 1},
    ]
    # Derived 4h buckets: every bucket has bars, so nothing is missing.
    assert (await gaps_of(client, user_headers, symbol=symbol, timeframe="4h"))["gaps"] == []
    # Explicit bounds add the missing bars before the first and after the last stored one.
    bounded = await gaps_of(client, user_headers, symbol=symbol, timeframe="1h",
                            start=h.iso(h.START - timedelta(hours=2)),
                            end=h.iso(h.START + timedelta(hours=25)))
    assert bounded["gaps"][0] == {"from": h.iso(h.START - timedelta(hours=2)),
                                  "to": h.iso(h.START - timedelta(hours=1)), "missing_bars": 2}
    assert bounded["gaps"][-1] == {"from": h.iso(h.START + timedelta(hours=24)),
                                   "to": h.iso(h.START + timedelta(hours=25)), "missing_bars": 2}


async def test_daily_gaps_skip_weekends_but_not_missing_weekdays(client: httpx.AsyncClient,
                                                                 user_headers: Headers) -> None:
    body = await gaps_of(client, user_headers, symbol="SPX", timeframe="1d", start="2001-09-01",
                         end="2001-09-30")
    # The market closed after 9/11 from Tuesday the 11th to Friday the 14th; Sept 3 was Labor Day.
    assert {"from": "2001-09-03T00:00:00Z", "to": "2001-09-03T00:00:00Z", "missing_bars": 1} in body["gaps"]
    assert {"from": "2001-09-11T00:00:00Z", "to": "2001-09-14T00:00:00Z", "missing_bars": 4} in body["gaps"]
    assert len(body["gaps"]) == 2


async def test_retention_defaults_are_readable_by_users(client: httpx.AsyncClient,
                                                        user_headers: Headers) -> None:
    response = await client.get("/api/v1/market/retention", headers=user_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"ticks_days": 30, "bars_days": {"1m": 365, "5m": None, "15m": None, "1h": None,
                                                                "4h": None, "1d": None}}


async def test_retention_changes_need_an_admin_and_valid_values(client: httpx.AsyncClient, app: FastAPI,
                                                                user_headers: Headers,
                                                                admin_headers: Headers) -> None:
    url = "/api/v1/market/retention"
    refused = await client.put(url, headers=user_headers, json={"ticks_days": 1})
    assert refused.status_code == 403
    bad = await client.put(url, headers=admin_headers, json={"ticks_days": 0, "bars_days": {"2m": 5}})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"ticks_days", "bars_days.2m"}
    changed = await client.put(url, headers=admin_headers, json={"ticks_days": 7, "bars_days": {"5m": 90}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["ticks_days"] == 7 and changed.json()["bars_days"]["5m"] == 90
    assert changed.json()["bars_days"]["1m"] == 365  # left out: kept
    assert (await client.get(url, headers=user_headers)).json() == changed.json()
    warehouse = app.state.warehouse
    ddl = {name: (await warehouse.rows(
        "SELECT create_table_query FROM system.tables WHERE database = 'aitrading' AND name = {t:String}",
        {"t": name}))[0][0] for name in ("bars", "ticks")}
    assert "toIntervalDay(7)" in ddl["ticks"]
    assert "toIntervalDay(90)" in ddl["bars"] and "toIntervalDay(365)" in ddl["bars"]
    forever = await client.put(url, headers=admin_headers, json={"ticks_days": None})
    assert forever.json()["ticks_days"] is None
    assert not await store.has_ttl(warehouse, "ticks")
    restored = await client.put(url, headers=admin_headers,
                                json={"ticks_days": 30, "bars_days": {"5m": None}})
    assert restored.status_code == 200
