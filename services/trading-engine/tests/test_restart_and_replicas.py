"""Everything lives in PostgreSQL: a restarted engine matches the resting orders it had, and two
replicas on one database see each other's orders and never fill one twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from uuid import UUID

from trading_engine.settings import Settings

from aitrading.testing import eventually

from .conftest import Headers, engine_app, remove_traces, set_price, unique_symbol


async def test_a_restarted_engine_matches_the_resting_orders_it_had(
        make_settings: Callable[..., Settings], new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    settings = make_settings(strategies_enabled=False)
    symbol = unique_symbol()
    _, headers = new_user()
    try:
        async with engine_app(settings, drop=False) as (app, client):
            await set_price(app, symbol, "100")
            placed = await client.post("/api/v1/orders", headers=headers, json={
                "symbol": symbol, "side": "buy", "type": "limit", "quantity": "2", "price": "99"})
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["id"]

        async with engine_app(settings, drop=False) as (app, client):
            assert app.state.flow.book.contains(UUID(order_id))   # loaded at start
            await set_price(app, symbol, "98")
            got = (await client.get(f"/api/v1/orders/{order_id}", headers=headers)).json()
            assert got["status"] == "filled" and Decimal(got["average_price"]) == Decimal(99)
    finally:
        await remove_traces(settings)


async def test_two_replicas_see_each_others_orders_and_fill_each_once(
        make_settings: Callable[..., Settings], new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    settings = make_settings(strategies_enabled=False)
    symbol = unique_symbol()
    _, headers = new_user()
    try:
        async with engine_app(settings, drop=False) as (a, client_a), \
                engine_app(settings, drop=False) as (b, client_b):
            await set_price(a, symbol, "100")
            await set_price(b, symbol, "100")
            ids = []
            for price in ("101", "101.5", "102"):
                placed = await client_a.post("/api/v1/orders", headers=headers, json={
                    "symbol": symbol, "side": "sell", "type": "limit", "quantity": "1", "price": price})
                assert placed.status_code == 201, placed.text
                ids.append(UUID(placed.json()["id"]))
            # Replica b learns of them from the database within its refresh interval.
            await eventually(lambda: all(b.state.flow.book.contains(i) for i in ids))

            # The same crossing quote reaches both replicas at once: each order fills exactly once.
            await asyncio.gather(set_price(a, symbol, "102"), set_price(b, symbol, "102"))

            fills = (await client_b.get("/api/v1/fills", headers=headers, params={"symbol": symbol})).json()
            assert sorted(f["order_id"] for f in fills) == sorted(str(i) for i in ids)
            for order_id in ids:
                got = (await client_b.get(f"/api/v1/orders/{order_id}", headers=headers)).json()
                assert got["status"] == "filled" and got["filled_quantity"] == "1"
    finally:
        await remove_traces(settings)
