"""Orders on the paper account through the API: fills at the latest price with slippage and fee,
idempotency by client_order_id, resting orders, cancels, validation, isolation between users, events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
from fastapi import FastAPI

from aitrading.testing import eventually

from .conftest import Headers, assert_problem, set_price, unique_symbol

ORDERS = "/api/v1/orders"
SLIP = Decimal(1) / Decimal(10_000)          # 1 bp, the default paper slippage
TAKER, MAKER = Decimal("0.001"), Decimal("0.0005")


async def place(client: httpx.AsyncClient, headers: Headers, **order: Any) -> httpx.Response:
    return await client.post(ORDERS, headers=headers, json=order)


async def spx_last_close(database_service: Callable[[], httpx.AsyncClient], headers: Headers) -> Decimal:
    async with database_service() as dbs:
        response = await dbs.get("/api/v1/market/ohlcv", headers=headers,
                                 params={"symbol": "SPX", "timeframe": "1d", "limit": 1})
    assert response.status_code == 200, response.text
    return Decimal(response.json()["bars"][-1]["close"])


async def test_market_order_on_spx_fills_at_the_last_stored_close_plus_slippage_with_the_fee(
        client: httpx.AsyncClient, user_headers: Headers,
        database_service: Callable[[], httpx.AsyncClient]) -> None:
    close = await spx_last_close(database_service, user_headers)

    response = await place(client, user_headers, symbol="SPX", side="buy", type="market", quantity="2")

    assert response.status_code == 201, response.text
    order = response.json()
    price = close * (1 + SLIP)
    assert order["status"] == "filled" and order["filled_quantity"] == "2"
    assert Decimal(order["average_price"]) == price
    assert Decimal(order["fees"]) == price * 2 * TAKER
    assert order["account"] == "paper" and order["reason"] is None and order["strategy_id"] is None
    assert order["created_at"].endswith("Z") and order["updated_at"].endswith("Z")
    fills = (await client.get("/api/v1/fills", headers=user_headers, params={"order_id": order["id"]})).json()
    assert len(fills) == 1
    assert (fills[0]["side"], fills[0]["quantity"], fills[0]["liquidity"]) == ("buy", "2", "taker")
    assert Decimal(fills[0]["price"]) == price and Decimal(fills[0]["fee"]) == price * 2 * TAKER


async def test_a_sell_gets_the_close_minus_slippage(client: httpx.AsyncClient, user_headers: Headers,
                                                   database_service: Callable[[], httpx.AsyncClient]) -> None:
    close = await spx_last_close(database_service, user_headers)
    response = await place(client, user_headers, symbol="SPX", side="sell", type="market", quantity=1.5)
    assert response.status_code == 201, response.text
    assert Decimal(response.json()["average_price"]) == close * (1 - SLIP)
    assert response.json()["quantity"] == "1.5"


async def test_second_order_with_same_client_order_id_returns_the_first(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    order = {"symbol": symbol, "side": "buy", "type": "market", "quantity": "1", "client_order_id": "mine-1"}

    first = await place(client, user_headers, **order)
    again = await place(client, user_headers, **order)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    listed = (await client.get(ORDERS, headers=user_headers, params={"symbol": symbol})).json()
    assert [o["id"] for o in listed] == [first.json()["id"]]
    fills = (await client.get("/api/v1/fills", headers=user_headers, params={"symbol": symbol})).json()
    assert len(fills) == 1


async def test_two_concurrent_orders_with_one_client_order_id_make_one_order(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "50")
    order = {"symbol": symbol, "side": "buy", "type": "market", "quantity": "3", "client_order_id": "race"}

    responses = await asyncio.gather(*(place(client, user_headers, **order) for _ in range(4)))

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (await client.get(ORDERS, headers=user_headers, params={"symbol": symbol})).json()
    assert len(listed) == 1
    fills = (await client.get("/api/v1/fills", headers=user_headers, params={"symbol": symbol})).json()
    assert len(fills) == 1


async def test_the_same_client_order_id_of_another_user_is_another_order(
        client: httpx.AsyncClient, app: FastAPI, new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "10")
    order = {"symbol": symbol, "side": "buy", "type": "market", "quantity": "1", "client_order_id": "shared"}
    a = await place(client, new_user()[1], **order)
    b = await place(client, new_user()[1], **order)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_limit_order_rests_and_cancels(client: httpx.AsyncClient, app: FastAPI,
                                             user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")

    placed = await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                         price="95")

    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["status"], order["filled_quantity"], order["average_price"]) == ("accepted", "0", None)
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=user_headers)).json()["status"] == "accepted"
    canceled = await client.delete(f"{ORDERS}/{order['id']}", headers=user_headers)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled" and canceled.json()["reason"] == "canceled by the user"
    again = await client.delete(f"{ORDERS}/{order['id']}", headers=user_headers)
    body = assert_problem(again, 409)
    assert "canceled" in body["detail"] and body["order_status"] == "canceled"
    # A canceled order no longer rests: a crossing price does not fill it.
    await set_price(app, symbol, "90")
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=user_headers)).json()["status"] == "canceled"


async def test_a_filled_order_cannot_be_canceled(client: httpx.AsyncClient, app: FastAPI,
                                                 user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "20")
    order = (await place(client, user_headers, symbol=symbol, side="sell", type="market",
                         quantity="1")).json()
    body = assert_problem(await client.delete(f"{ORDERS}/{order['id']}", headers=user_headers), 409)
    assert body["order_status"] == "filled"


async def test_resting_limit_fills_as_maker_when_a_quote_crosses_it(client: httpx.AsyncClient, app: FastAPI,
                                                                    user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    order = (await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="4",
                         price="99")).json()
    assert order["status"] == "accepted"
    await eventually(lambda: app.state.flow.book.contains(UUID(order["id"])))

    await set_price(app, symbol, "99.5")   # above the limit: nothing
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=user_headers)).json()["status"] == "accepted"
    await set_price(app, symbol, "98.5")   # crosses it

    filled = (await client.get(f"{ORDERS}/{order['id']}", headers=user_headers)).json()
    assert filled["status"] == "filled" and filled["filled_quantity"] == "4"
    assert Decimal(filled["average_price"]) == Decimal(99)
    assert Decimal(filled["fees"]) == Decimal(99) * 4 * MAKER
    fills = (await client.get("/api/v1/fills", headers=user_headers, params={"order_id": order["id"]})).json()
    assert [(f["liquidity"], f["price"]) for f in fills] == [("maker", "99")]
    assert not app.state.flow.book.contains(UUID(order["id"]))


async def test_a_marketable_limit_fills_at_once_as_taker_never_worse_than_its_limit(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100", bid="99.9", ask="100.1")
    order = (await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                         price="100.1")).json()
    assert order["status"] == "filled"
    assert Decimal(order["average_price"]) == Decimal("100.1")  # ask + 1 bp capped at the limit


async def test_buy_stop_waits_for_its_trigger_then_fills_as_a_market_order(
        client: httpx.AsyncClient, app: FastAPI, user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    order = (await place(client, user_headers, symbol=symbol, side="buy", type="stop", quantity="1",
                         stop_price="105")).json()
    assert order["status"] == "accepted"
    await eventually(lambda: app.state.flow.book.contains(UUID(order["id"])))
    await set_price(app, symbol, "104")
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=user_headers)).json()["status"] == "accepted"
    await set_price(app, symbol, "106")
    filled = (await client.get(f"{ORDERS}/{order['id']}", headers=user_headers)).json()
    assert filled["status"] == "filled"
    assert Decimal(filled["average_price"]) == Decimal(106) * (1 + SLIP)


async def test_ioc_and_fok_that_cannot_fill_on_arrival_are_canceled(client: httpx.AsyncClient, app: FastAPI,
                                                                    user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    for tif in ("ioc", "fok"):
        order = (await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                             price="98", time_in_force=tif)).json()
        assert order["status"] == "canceled" and order["reason"] == f"{tif}: not filled on arrival"


async def test_day_orders_expire_once_their_utc_day_is_over(client: httpx.AsyncClient, app: FastAPI,
                                                            user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    day = (await place(client, user_headers, symbol=symbol, side="sell", type="limit", quantity="1",
                       price="105", time_in_force="day")).json()
    gtc = (await place(client, user_headers, symbol=symbol, side="sell", type="limit", quantity="1",
                       price="105")).json()

    assert await app.state.paper_venue.expire_day_orders(datetime.now(UTC)) == 0
    expired = await app.state.paper_venue.expire_day_orders(datetime.now(UTC) + timedelta(days=1))

    assert expired >= 1
    got = (await client.get(f"{ORDERS}/{day['id']}", headers=user_headers)).json()
    assert got["status"] == "expired" and "day" in got["reason"]
    assert (await client.get(f"{ORDERS}/{gtc['id']}", headers=user_headers)).json()["status"] == "accepted"


async def test_invalid_orders_are_422_naming_the_field(client: httpx.AsyncClient, app: FastAPI,
                                                       user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    base = {"symbol": symbol, "side": "buy", "type": "market", "quantity": "1"}
    cases = [
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"type": "limit"}, "price"),
        ({"type": "limit", "price": "-5"}, "price"),
        ({"type": "stop"}, "stop_price"),
        ({"price": "100"}, "price"),
        ({"side": "long"}, "side"),
        ({"type": "iceberg"}, "type"),
        ({"quantity": "a lot"}, "quantity"),
        ({"symbol": "no spaces please"}, "symbol"),
        ({"time_in_force": "forever"}, "time_in_force"),
        ({"client_order_id": "x" * 200}, "client_order_id"),
    ]
    for change, field in cases:
        assert_problem(await place(client, user_headers, **{**base, **change}), 422, field=field)
    listed = (await client.get(ORDERS, headers=user_headers, params={"symbol": symbol})).json()
    assert listed == []  # nothing malformed is stored


async def test_an_unknown_symbol_is_refused_for_having_no_price(client: httpx.AsyncClient,
                                                                user_headers: Headers) -> None:
    symbol = unique_symbol("NOPRICE")
    response = await place(client, user_headers, symbol=symbol, side="buy", type="market", quantity="1")
    body = assert_problem(response, 422, rule="no_price")
    stored = (await client.get(f"{ORDERS}/{body['order_id']}", headers=user_headers)).json()
    assert stored["status"] == "denied" and "no_price" in stored["reason"]


async def test_another_users_order_is_not_found(client: httpx.AsyncClient, app: FastAPI,
                                                new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    _, alice = new_user()
    _, bob = new_user()
    order = (await place(client, alice, symbol=symbol, side="buy", type="limit", quantity="1",
                         price="99")).json()

    assert_problem(await client.get(f"{ORDERS}/{order['id']}", headers=bob), 404)
    assert_problem(await client.delete(f"{ORDERS}/{order['id']}", headers=bob), 404)
    assert (await client.get(ORDERS, headers=bob)).json() == []
    assert (await client.get("/api/v1/fills", headers=bob, params={"order_id": order["id"]})).json() == []
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=alice)).json()["status"] == "accepted"
    assert_problem(await client.get(f"{ORDERS}/{uuid4()}", headers=alice), 404)


async def test_orders_need_a_signed_in_user(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(ORDERS), 401)
    assert_problem(await place(client, {}, symbol="SPX", side="buy", type="market", quantity="1"), 401)


async def test_listing_filters_by_status_and_symbol(client: httpx.AsyncClient, app: FastAPI,
                                                   user_headers: Headers) -> None:
    symbol = unique_symbol()
    await set_price(app, symbol, "100")
    filled = (await place(client, user_headers, symbol=symbol, side="buy", type="market",
                          quantity="1")).json()
    resting = (await place(client, user_headers, symbol=symbol, side="buy", type="limit", quantity="1",
                           price="95")).json()
    listed = (await client.get(ORDERS, headers=user_headers, params={"symbol": symbol})).json()
    assert [o["id"] for o in listed] == [resting["id"], filled["id"]]  # newest first
    only = (await client.get(ORDERS, headers=user_headers,
                             params={"status": "accepted", "symbol": symbol})).json()
    assert [o["id"] for o in only] == [resting["id"]]
    bad_status = await client.get(ORDERS, headers=user_headers, params={"status": "done"})
    assert_problem(bad_status, 422, field="query.status")
    bad_limit = await client.get(ORDERS, headers=user_headers, params={"limit": 0})
    assert_problem(bad_limit, 422, field="query.limit")


async def test_fills_and_order_changes_reach_nats(client: httpx.AsyncClient, app: FastAPI, listen: Any,
                                                  new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    symbol = unique_symbol()
    user, headers = new_user()
    await set_price(app, symbol, "250")
    async with listen(f"fills.{symbol}") as fills, listen(f"orders.*.{symbol}") as changes:
        order = (await place(client, headers, symbol=symbol, side="buy", type="market", quantity="2",
                             client_order_id="evt-1")).json()
        await fills.wait_for(lambda events: len(events) >= 1)
        await changes.wait_for(lambda events: len(events) >= 3)

    fill = fills.events[0]
    assert fill.type == "fill" and fill.subject == f"fills.{symbol}"
    data = fill.data
    assert set(data) == {"id", "order_id", "owner_id", "account", "symbol", "side", "quantity", "price",
                         "fee", "liquidity", "time", "strategy_id"}
    assert (data["order_id"], data["owner_id"], data["account"]) == (order["id"], str(user), "paper")
    assert (data["symbol"], data["side"]) == (symbol, "buy")
    assert (data["quantity"], data["liquidity"]) == ("2", "taker")
    assert Decimal(data["price"]) == Decimal(250) * (1 + SLIP) and data["time"].endswith("Z")
    assert data["id"] != str(fill.id)  # the event is a new object; the fill keeps its own id
    assert [e.type for e in changes.events] == ["order.submitted", "order.accepted", "order.filled"]
    assert [e.subject for e in changes.events] == [f"orders.{s}.{symbol}" for s in ("submitted", "accepted",
                                                                                    "filled")]
    last = changes.events[-1].data
    assert last["id"] == order["id"] and last["owner_id"] == str(user) and last["client_order_id"] == "evt-1"
    assert last["fees"] == order["fees"] and last["status"] == "filled"
