"""Pre-trade risk through the API: the kill switch (halt, reduce, resume), every limit refusing with its
rule, the user's limits, and the admin's per-user controls."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
from fastapi import FastAPI

from .conftest import Headers, assert_problem, set_price, unique_symbol

ORDERS = "/api/v1/orders"
LIMITS = "/api/v1/risk/limits"


async def place(client: httpx.AsyncClient, headers: Headers, **order: Any) -> httpx.Response:
    return await client.post(ORDERS, headers=headers, json=order)


async def market(client: httpx.AsyncClient, headers: Headers, symbol: str, side: str,
                 quantity: str) -> httpx.Response:
    return await place(client, headers, symbol=symbol, side=side, type="market", quantity=quantity)


async def priced(app: FastAPI, price: str = "100") -> str:
    symbol = unique_symbol()
    await set_price(app, symbol, price)
    return symbol


async def test_halt_refuses_new_orders_lets_cancels_through_and_resume_trades_again(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers, listen: Any) -> None:
    symbol = await priced(app)
    resting = (await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                           price="95")).json()

    async with listen("risk.state") as states:
        halted = await client.post("/api/v1/risk/halt", headers=user_headers, json={"reason": "lunch"})
        assert halted.status_code == 200, halted.text
        assert (halted.json()["state"], halted.json()["reason"]) == ("halted", "lunch")
        owner = halted.json()["owner_id"]
        await states.wait_for(lambda events: any(e.data["owner_id"] == owner for e in events))
    event = next(e for e in states.events if e.data["owner_id"] == owner)
    assert (event.type, event.data["state"], event.data["reason"]) == ("risk.state", "halted", "lunch")

    refused = assert_problem(await market(client, user_headers, symbol, "buy", "1"), 422,
                             rule="trading_state")
    assert "halted" in refused["detail"]
    denied = (await client.get(f"{ORDERS}/{refused['order_id']}", headers=user_headers)).json()
    assert denied["status"] == "denied" and "trading_state" in denied["reason"]
    canceled = await client.delete(f"{ORDERS}/{resting['id']}", headers=user_headers)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"

    resumed = await client.post("/api/v1/risk/resume", headers=user_headers)
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    assert (await market(client, user_headers, symbol, "buy", "1")).status_code == 201


async def test_a_retry_of_a_denied_order_is_denied_again_without_a_second_check(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = await priced(app)
    await client.post("/api/v1/risk/halt", headers=user_headers)
    order = {"symbol": symbol, "side": "buy", "type": "market", "quantity": "1",
             "client_order_id": "retry-me"}
    first = assert_problem(await place(client, user_headers, **order), 422, rule="trading_state")
    await client.post("/api/v1/risk/resume", headers=user_headers)
    again = assert_problem(await place(client, user_headers, **order), 422, rule="trading_state")
    assert again["order_id"] == first["order_id"] and again["detail"] == first["detail"]


async def test_reducing_accepts_only_orders_that_shrink_a_position(client: httpx.AsyncClient, app: FastAPI,
                                                                  user_headers: Headers) -> None:
    symbol = await priced(app)
    assert (await market(client, user_headers, symbol, "buy", "2")).status_code == 201
    reducing = await client.post("/api/v1/risk/reduce", headers=user_headers, json={"reason": "wind down"})
    assert reducing.json()["state"] == "reducing"

    assert_problem(await market(client, user_headers, symbol, "buy", "1"), 422, rule="trading_state")
    # Selling 3 would flip the position to short: that does not reduce it.
    assert_problem(await market(client, user_headers, symbol, "sell", "3"), 422, rule="trading_state")
    assert (await market(client, user_headers, symbol, "sell", "1")).status_code == 201
    assert (await market(client, user_headers, symbol, "sell", "1")).status_code == 201
    assert_problem(await market(client, user_headers, symbol, "sell", "1"), 422, rule="trading_state")  # flat


async def put_limits(client: httpx.AsyncClient, headers: Headers, **limits: Any) -> dict[str, Any]:
    response = await client.put(LIMITS, headers=headers, json=limits)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_max_order_notional(client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = await priced(app)
    await put_limits(client, user_headers, max_order_notional="500")
    assert_problem(await market(client, user_headers, symbol, "buy", "6"), 422, rule="max_order_notional")
    assert (await market(client, user_headers, symbol, "buy", "4")).status_code == 201


async def test_max_position_by_quantity_and_by_value(client: httpx.AsyncClient, app: FastAPI,
                                                     new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    symbol = await priced(app)
    _, headers = new_user()
    await put_limits(client, headers, max_position_quantity="5")
    assert (await market(client, headers, symbol, "buy", "4")).status_code == 201
    assert_problem(await market(client, headers, symbol, "buy", "2"), 422, rule="max_position")
    assert (await market(client, headers, symbol, "sell", "4")).status_code == 201  # reducing is always fine

    _, other = new_user()
    await put_limits(client, other, max_position_notional="1000")
    assert_problem(await market(client, other, symbol, "buy", "11"), 422, rule="max_position")


async def test_max_gross_exposure(client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    first, second = await priced(app), await priced(app)
    await put_limits(client, user_headers, max_gross_exposure="1500")
    assert (await market(client, user_headers, first, "buy", "10")).status_code == 201
    assert_problem(await market(client, user_headers, second, "buy", "6"), 422, rule="max_gross_exposure")


async def test_price_band_refuses_a_fat_finger(client: httpx.AsyncClient, app: FastAPI,
                                               user_headers: Headers) -> None:
    symbol = await priced(app)   # default band: 10 % around the last price
    fat = await place(client, user_headers, symbol=symbol, side="sell", type="limit", quantity="1",
                      price="150")
    body = assert_problem(fat, 422, rule="price_band")
    assert "150" in body["detail"]
    assert (await place(client, user_headers, symbol=symbol, side="sell", type="limit", quantity="1",
                        price="105")).status_code == 201


async def test_order_rate(client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = await priced(app)
    await put_limits(client, user_headers, max_orders_per_window=2, order_window_s=60)
    assert (await market(client, user_headers, symbol, "buy", "1")).status_code == 201
    assert (await market(client, user_headers, symbol, "buy", "1")).status_code == 201
    assert_problem(await market(client, user_headers, symbol, "buy", "1"), 422, rule="order_rate")
    # Denied orders do not count: raising the limit by one lets exactly one more through.
    await put_limits(client, user_headers, max_orders_per_window=3, order_window_s=60)
    assert (await market(client, user_headers, symbol, "buy", "1")).status_code == 201
    assert_problem(await market(client, user_headers, symbol, "buy", "1"), 422, rule="order_rate")


async def test_max_open_orders(client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = await priced(app)
    await put_limits(client, user_headers, max_open_orders=1)
    first = await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                        price="95")
    assert first.status_code == 201
    assert_problem(await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                               price="94"), 422, rule="max_open_orders")
    await client.delete(f"{ORDERS}/{first.json()['id']}", headers=user_headers)
    assert (await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                        price="94")).status_code == 201


async def test_daily_loss_stops_new_risk_but_not_reductions(client: httpx.AsyncClient, app: FastAPI,
                                                            user_headers: Headers) -> None:
    symbol = await priced(app)
    await put_limits(client, user_headers, daily_loss_limit="50")
    assert (await market(client, user_headers, symbol, "buy", "10")).status_code == 201
    await set_price(app, symbol, "94")   # about -60 unrealized, plus the fee
    body = assert_problem(await market(client, user_headers, symbol, "buy", "1"), 422, rule="daily_loss")
    assert "P&L" in body["detail"]
    assert (await market(client, user_headers, symbol, "sell", "5")).status_code == 201


async def test_allowed_symbols_and_instrument_precision(client: httpx.AsyncClient, app: FastAPI,
                                                        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    allowed, other = await priced(app), await priced(app)
    _, headers = new_user()
    await put_limits(client, headers, allowed_symbols=[allowed],
                     instruments={allowed: {"quantity_step": "0.5", "price_tick": "0.25",
                                            "min_quantity": "1"}})
    assert_problem(await market(client, headers, other, "buy", "1"), 422, rule="instrument")
    assert_problem(await market(client, headers, allowed, "buy", "1.2"), 422, rule="quantity_precision")
    assert_problem(await market(client, headers, allowed, "buy", "0.5"), 422, rule="quantity_precision")
    assert_problem(await place(client, headers, symbol=allowed, side="buy", type="limit", quantity="1",
                               price="99.1"), 422, rule="price_precision")
    assert (await place(client, headers, symbol=allowed, side="buy", type="limit", quantity="1.5",
                        price="99.25")).status_code == 201


async def test_limits_default_then_replaced_by_a_put(client: httpx.AsyncClient,
                                                     user_headers: Headers) -> None:
    defaults = (await client.get(LIMITS, headers=user_headers)).json()
    assert defaults["defaults"] is True
    assert (defaults["max_order_notional"], defaults["max_open_orders"], defaults["price_band_pct"]) == (
        "1000000", 200, "10")
    assert (defaults["state"], defaults["live_enabled"]) == ("active", False)
    assert defaults["allowed_symbols"] is None

    updated = await put_limits(client, user_headers, max_order_notional="2500.5", price_band_pct=None,
                               state="active", live_enabled=False)

    assert updated["defaults"] is False
    assert updated["max_order_notional"] == "2500.5"
    assert updated["price_band_pct"] is None                 # null: not enforced
    assert updated["max_open_orders"] == 200                 # left out: the default
    assert (await client.get(LIMITS, headers=user_headers)).json() == updated


async def test_bad_limits_are_422_naming_the_field(client: httpx.AsyncClient, user_headers: Headers) -> None:
    for body, field in [({"max_order_notional": "-1"}, "max_order_notional"),
                        ({"max_open_orders": 0}, "max_open_orders"),
                        ({"order_window_s": None}, "order_window_s"),
                        ({"daily_loss_limit": "lots"}, "daily_loss_limit"),
                        ({"allowed_symbols": ["bad symbol"]}, "allowed_symbols.0"),
                        ({"state": "halted"}, "state"),
                        ({"live_enabled": True}, "live_enabled")]:
        assert_problem(await client.put(LIMITS, headers=user_headers, json=body), 422, field=field)
    assert (await client.get(LIMITS, headers=user_headers)).json()["defaults"] is True


async def test_admin_controls_a_users_state_and_live_switch(
        client: httpx.AsyncClient, app: FastAPI, admin_headers: Headers,
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    user, headers = new_user()
    symbol = await priced(app)
    assert_problem(await client.put(f"/api/v1/risk/users/{user}", headers=headers,
                                    json={"live_enabled": True}), 403)
    assert_problem(await place(client, headers, symbol=symbol, side="buy", type="market", quantity="1",
                               account="my-exchange"), 403)

    enabled = await client.put(f"/api/v1/risk/users/{user}", headers=admin_headers,
                               json={"live_enabled": True})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["live_enabled"] is True and enabled.json()["owner_id"] == str(user)
    assert (await client.get(LIMITS, headers=headers)).json()["live_enabled"] is True

    halted = await client.put(f"/api/v1/risk/users/{user}", headers=admin_headers,
                              json={"state": "halted", "reason": "margin call"})
    assert (halted.json()["state"], halted.json()["reason"]) == ("halted", "margin call")
    assert_problem(await market(client, headers, symbol, "buy", "1"), 422, rule="trading_state")
    state = (await client.get("/api/v1/risk/state", headers=headers)).json()
    assert (state["state"], state["live_enabled"]) == ("halted", True)


async def test_positions_and_pnl_count_per_account_from_the_engines_own_fills(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    """A round trip realizes its P&L: a loss made today counts against the daily limit after the position
    is closed."""
    symbol = await priced(app)
    await put_limits(client, user_headers, daily_loss_limit="30")
    assert (await market(client, user_headers, symbol, "buy", "10")).status_code == 201
    await set_price(app, symbol, "97")
    assert (await market(client, user_headers, symbol, "sell", "10")).status_code == 201  # about -30 realized
    fills = (await client.get("/api/v1/fills", headers=user_headers, params={"symbol": symbol})).json()
    realized = sum((Decimal(f["price"]) * Decimal(f["quantity"]) * (1 if f["side"] == "sell" else -1)
                    - Decimal(f["fee"]) for f in fills), Decimal(0))
    assert realized < Decimal(-30)
    assert_problem(await market(client, user_headers, symbol, "buy", "1"), 422, rule="daily_loss")
