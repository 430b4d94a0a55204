"""Orders on an external venue account, end to end: the engine's order path against a local server
speaking Binance's spot REST API (tests/exchange_server.py) through the CCXT venue — fills and fees as
the exchange reports them, resting orders reconciled, cancels, refusals, and nothing lost or doubled
when the venue does not answer or the engine never sent a committed order."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from trading_engine.settings import Settings

from aitrading.testing import eventually
from aitrading.trading.orders import OrderIntent, OrderType, Side

from .conftest import Headers, assert_problem, set_price

sys.path.insert(0, str(Path(__file__).parent))  # the fake exchange beside this file
from exchange_server import FakeBinance, running_fake_binance

ORDERS = "/api/v1/orders"
SYMBOL = "BTC/USDT"


@pytest.fixture(scope="module")
async def binance() -> AsyncIterator[tuple[FakeBinance, str]]:
    async with running_fake_binance() as running:
        yield running


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings], binance: tuple[FakeBinance, str]) -> Settings:
    return make_settings(credentials_key=Fernet.generate_key().decode(), ccxt_urls={"binance": binance[1]},
                         venue_timeout_s=1.0, venue_retry_after_s=2.5, reconcile_interval_s=0.3)


@pytest.fixture
async def trader(client: httpx.AsyncClient, app: FastAPI, binance: tuple[FakeBinance, str],
                 admin_headers: Headers,
                 new_user: Callable[[], tuple[UUID, Headers]]) -> tuple[UUID, Headers, str]:
    """A user allowed to trade live, with a Binance account named "binance-main": (id, headers, api key)."""
    state, _ = binance
    state.delay_s = 0
    user, headers = new_user()
    enabled = await client.put(f"/api/v1/risk/users/{user}", headers=admin_headers,
                               json={"live_enabled": True})
    assert enabled.status_code == 200, enabled.text
    key, secret = f"key-{uuid4().hex}", f"secret-{uuid4().hex}"
    state.add_key(key, secret, USDT="100000", BTC="1")
    created = await client.post("/api/v1/venues/accounts", headers=headers, json={
        "name": "binance-main", "kind": "ccxt", "exchange": "binance",
        "credentials": {"apiKey": key, "secret": secret}})
    assert created.status_code == 201, created.text
    state.set_price("BTCUSDT", "50000")
    await set_price(app, SYMBOL, "50000")
    return user, headers, key


async def place(client: httpx.AsyncClient, headers: Headers, **order: Any) -> httpx.Response:
    body = {"symbol": SYMBOL, "account": "binance-main", **order}
    return await client.post(ORDERS, headers=headers, json=body)


def exchange_orders(state: FakeBinance, order_id: str) -> list[Any]:
    return [o for o in state.orders.values() if o.client_order_id == UUID(order_id).hex]


async def test_a_live_market_order_fills_with_the_exchanges_trade_and_fee(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str], trader: tuple[UUID, Headers, str],
        listen: Any) -> None:
    state, _ = binance
    user, headers, _ = trader
    async with listen("fills.BTC-USDT") as fills:
        response = await place(client, headers, side="buy", type="market", quantity="0.02")
        assert response.status_code == 201, response.text
        order = response.json()
        await fills.wait_for(lambda events: any(e.data["order_id"] == order["id"] for e in events))

    assert (order["status"], order["filled_quantity"], order["account"]) == ("filled", "0.02", "binance-main")
    assert Decimal(order["average_price"]) == Decimal(50000)
    [placed] = exchange_orders(state, order["id"])
    trade = next(t for t in state.trades if t.order_id == placed.order_id)
    assert Decimal(order["fees"]) == trade.commission
    [fill] = (await client.get("/api/v1/fills", headers=headers, params={"order_id": order["id"]})).json()
    assert (fill["account"], fill["quantity"]) == ("binance-main", "0.02")
    assert Decimal(fill["price"]) == Decimal(50000)
    event = next(e for e in fills.events if e.data["order_id"] == order["id"])
    assert (event.data["account"], event.data["owner_id"]) == ("binance-main", str(user))


async def test_a_resting_live_limit_is_reconciled_when_the_exchange_fills_it(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        trader: tuple[UUID, Headers, str]) -> None:
    state, _ = binance
    _, headers, _ = trader
    order = (await place(client, headers, side="buy", type="limit", quantity="0.01", price="49000")).json()
    assert order["status"] == "accepted", order
    [placed] = exchange_orders(state, order["id"])
    assert placed.status == "NEW"

    state.set_price("BTCUSDT", "48900")   # the exchange fills the resting order

    async def filled() -> dict[str, Any] | None:
        got: dict[str, Any] = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
        return got if got["status"] == "filled" else None

    done = await eventually(filled)
    assert Decimal(done["average_price"]) == Decimal(49000)
    fills = (await client.get("/api/v1/fills", headers=headers, params={"order_id": order["id"]})).json()
    assert [(f["quantity"], f["liquidity"]) for f in fills] == [("0.01", "maker")]


async def test_a_live_order_is_canceled_at_the_exchange(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        trader: tuple[UUID, Headers, str]) -> None:
    state, _ = binance
    _, headers, _ = trader
    order = (await place(client, headers, side="sell", type="limit", quantity="0.5", price="52000")).json()
    canceled = await client.delete(f"{ORDERS}/{order['id']}", headers=headers)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert exchange_orders(state, order["id"])[0].status == "CANCELED"
    assert_problem(await client.delete(f"{ORDERS}/{order['id']}", headers=headers), 409)


async def test_an_unanswered_cancel_stays_pending_until_the_exchange_confirms_it(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        trader: tuple[UUID, Headers, str]) -> None:
    state, _ = binance
    _, headers, _ = trader
    order = (await place(client, headers, side="buy", type="limit", quantity="0.2", price="48000")).json()
    state.delay_s = 1.5
    pending = await client.delete(f"{ORDERS}/{order['id']}", headers=headers)
    state.delay_s = 0
    assert pending.status_code == 200, pending.text
    assert pending.json()["status"] == "pending_cancel"

    async def canceled() -> bool:
        got = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
        return bool(got["status"] == "canceled")

    await eventually(canceled)
    assert exchange_orders(state, order["id"])[0].status == "CANCELED"


async def test_an_unanswered_send_is_reconciled_without_a_second_order(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        trader: tuple[UUID, Headers, str]) -> None:
    state, _ = binance
    _, headers, _ = trader
    state.delay_s = 1.5   # longer than the venue timeout: the engine hears nothing, the exchange still trades
    response = await place(client, headers, side="buy", type="market", quantity="0.03")
    state.delay_s = 0
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "submitted"   # the outcome is unknown: neither filled nor rejected

    async def filled() -> bool:
        got = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
        return bool(got["status"] == "filled")

    await eventually(filled)
    assert len(exchange_orders(state, order["id"])) == 1
    fills = (await client.get("/api/v1/fills", headers=headers, params={"order_id": order["id"]})).json()
    assert len(fills) == 1


async def test_an_order_committed_but_never_sent_is_sent_by_the_reconciler(
        app: FastAPI, client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        trader: tuple[UUID, Headers, str]) -> None:
    """What a crash between commit and send leaves: a submitted order the venue never saw."""
    state, _ = binance
    user, headers, _ = trader
    intent = OrderIntent(symbol=SYMBOL, side=Side.BUY, type=OrderType.MARKET, quantity=Decimal("0.04"))
    async with app.state.db.sessionmaker() as session, session.begin():
        placement = await app.state.flow.place(session, user, intent, account="binance-main")
    assert placement.order.status.value == "submitted" and placement.needs_venue
    order_id = str(placement.order.id)

    async def filled() -> bool:
        got = (await client.get(f"{ORDERS}/{order_id}", headers=headers)).json()
        return bool(got["status"] == "filled")

    await eventually(filled)
    assert len(exchange_orders(state, order_id)) == 1


async def test_exchange_refusals_reject_the_order_with_the_reason(
        client: httpx.AsyncClient, trader: tuple[UUID, Headers, str]) -> None:
    _, headers, _ = trader
    poor = await place(client, headers, side="buy", type="market", quantity="1.5")   # 75,000 USDT of 100,000
    assert poor.status_code == 201
    again = await place(client, headers, side="buy", type="market", quantity="1.5")  # not enough left
    assert again.status_code == 201, again.text
    assert again.json()["status"] == "rejected" and "insufficient" in again.json()["reason"].lower()

    refused = await place(client, headers, side="buy", type="stop", quantity="0.01", stop_price="51000")
    body = assert_problem(refused, 422)
    stored = (await client.get(f"{ORDERS}/{body['order_id']}", headers=headers)).json()
    assert stored["status"] == "rejected" and stored["reason"] == body["detail"]


async def test_live_orders_need_permission_and_an_existing_account(
        client: httpx.AsyncClient, app: FastAPI, trader: tuple[UUID, Headers, str],
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, headers, _ = trader
    unknown = await place(client, headers, side="buy", type="market", quantity="0.01", account="nope")
    assert_problem(unknown, 404)
    _, stranger = new_user()
    assert_problem(await place(client, stranger, side="buy", type="market", quantity="0.01"), 403)
