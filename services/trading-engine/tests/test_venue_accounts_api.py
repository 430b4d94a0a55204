"""Venue accounts through the real trading-engine app: create, list, read, delete; credentials encrypted
at rest and never returned; balances from the exchange (the local Binance of exchange_server.py); and an
order on a venue account going to that exchange and coming back filled."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi import FastAPI
from trading_engine.credentials import Credentials
from trading_engine.settings import Settings

from aitrading.market.prices import PriceQuote
from aitrading.testing import eventually

sys.path.insert(0, str(Path(__file__).parent))  # the fake exchange beside this file
from exchange_server import FakeBinance, running_fake_binance

Headers = dict[str, str]
ACCOUNTS = "/api/v1/venues/accounts"
KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
async def binance() -> AsyncIterator[tuple[FakeBinance, str]]:
    async with running_fake_binance() as running:
        yield running


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings], binance: tuple[FakeBinance, str]) -> Settings:
    return make_settings(credentials_key=KEY, ccxt_urls={"binance": binance[1]}, strategies_enabled=False,
                         venue_timeout_s=3)


def new_key(state: FakeBinance, **balances: str) -> dict[str, str]:
    api_key, secret = f"key-{uuid4().hex}", f"secret-{uuid4().hex}"
    state.add_key(api_key, secret, **(balances or {"USDT": "100000", "BTC": "1"}))
    return {"apiKey": api_key, "secret": secret}


async def create(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    return await client.post(ACCOUNTS, headers=headers, json=body)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


async def test_an_account_is_created_listed_read_and_deleted_and_its_credentials_never_come_back(
        client: httpx.AsyncClient, app: FastAPI, binance: tuple[FakeBinance, str],
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    user, headers = new_user()
    credentials = new_key(binance[0])
    created = await create(client, headers, name="binance-main", kind="ccxt", exchange="binance",
                           credentials=credentials, sandbox=False)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "kind", "exchange", "sandbox", "key_hint", "symbols", "created_at"}
    assert (body["name"], body["kind"], body["exchange"], body["sandbox"], body["key_hint"]) == (
        "binance-main", "ccxt", "binance", False, credentials["apiKey"][-4:])
    assert body["created_at"].endswith("Z")
    assert credentials["secret"] not in created.text

    listed = await client.get(ACCOUNTS, headers=headers)
    assert listed.json() == [body]
    assert (await client.get(f"{ACCOUNTS}/{body['id']}", headers=headers)).json() == body

    async with app.state.db.sessionmaker() as session:
        row = (await session.execute(sa.text(
            "SELECT * FROM venue_accounts WHERE id = :id"), {"id": body["id"]})).mappings().one()
    raw = " ".join(str(value) for value in row.values())
    assert credentials["secret"] not in raw and credentials["apiKey"] not in raw
    assert row["owner_id"] == user
    assert Credentials.from_settings(app.state.settings).decrypt(row["credentials"]) == credentials

    assert (await client.delete(f"{ACCOUNTS}/{body['id']}", headers=headers)).status_code == 204
    problem(await client.get(f"{ACCOUNTS}/{body['id']}", headers=headers), 404)
    problem(await client.delete(f"{ACCOUNTS}/{body['id']}", headers=headers), 404)
    assert (await client.get(ACCOUNTS, headers=headers)).json() == []


async def test_names_are_unique_per_user_and_another_users_account_does_not_exist_for_you(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    (_, mine), (_, theirs) = new_user(), new_user()
    first = await create(client, mine, name="main", kind="ccxt", exchange="binance",
                         credentials=new_key(binance[0]))
    assert first.status_code == 201
    again = problem(await create(client, mine, name="main", kind="mt5", credentials={"agent_id": "dsk"}),
                    409)
    assert again["errors"] == [{"field": "name", "reason": "already used by another of your venue accounts"}]
    account_id = first.json()["id"]
    for method, path in [("GET", f"{ACCOUNTS}/{account_id}"), ("DELETE", f"{ACCOUNTS}/{account_id}"),
                         ("GET", f"{ACCOUNTS}/{account_id}/balances")]:
        problem(await client.request(method, path, headers=theirs), 404)
    assert (await client.get(ACCOUNTS, headers=theirs)).json() == []
    assert (await create(client, theirs, name="main", kind="mt5", credentials={"agent_id": "desk"})
            ).status_code == 201
    assert (await client.get(f"{ACCOUNTS}/{account_id}", headers=mine)).status_code == 200


async def test_a_bad_account_is_a_422_naming_the_field(
        client: httpx.AsyncClient, new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, headers = new_user()
    good = {"name": "x1", "kind": "ccxt", "exchange": "binance",
            "credentials": {"apiKey": "k", "secret": "s"}}
    for changes, field in [({"exchange": "no-such-exchange"}, "exchange"),
                           ({"credentials": {"apiKey": "k"}}, "credentials.secret"),
                           ({"name": "paper"}, "name"),
                           ({"kind": "stocks"}, "kind"),
                           ({"kind": "mt5", "exchange": None, "credentials": {"agent_id": "bad id"}},
                            "credentials.agent_id")]:
        body = problem(await create(client, headers, **{**good, **changes}), 422)
        assert field in [e["field"] for e in body["errors"]], body
    assert (await client.get(ACCOUNTS, headers=headers)).json() == []


async def test_without_a_credentials_key_nothing_is_stored(
        client: httpx.AsyncClient, app: FastAPI, new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, headers = new_user()
    configured = app.state.settings
    app.state.settings = configured.model_copy(update={"credentials_key": ""})
    try:
        refused = problem(await create(client, headers, name="main", kind="ccxt", exchange="binance",
                                       credentials={"apiKey": "k", "secret": "s"}), 503)
    finally:
        app.state.settings = configured
    assert "credentials_key is not configured" in refused["detail"]
    assert (await client.get(ACCOUNTS, headers=headers)).json() == []


async def test_balances_are_the_exchanges_and_mt5_reports_none(
        client: httpx.AsyncClient, binance: tuple[FakeBinance, str],
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, headers = new_user()
    exchange = await create(client, headers, name="spot", kind="ccxt", exchange="binance",
                            credentials=new_key(binance[0], USDT="2500.5", BTC="0.25"))
    balances = await client.get(f"{ACCOUNTS}/{exchange.json()['id']}/balances", headers=headers)
    assert balances.status_code == 200, balances.text
    assert balances.json() == {"account": "spot", "balances": [
        {"asset": "BTC", "free": "0.25", "total": "0.25"},
        {"asset": "USDT", "free": "2500.5", "total": "2500.5"}]}
    terminal = await create(client, headers, name="terminal", kind="mt5", credentials={"agent_id": "desk-9"},
                            symbols={"EUR/USD": "EURUSD.m"})
    assert terminal.json()["symbols"] == {"EUR/USD": "EURUSD.m"} and terminal.json()["key_hint"] is None
    refused = problem(await client.get(f"{ACCOUNTS}/{terminal.json()['id']}/balances", headers=headers), 422)
    assert "MT5 agents do not report account balances" in refused["detail"]


async def test_the_venues_available_are_listed(client: httpx.AsyncClient, user_headers: Headers) -> None:
    venues = (await client.get("/api/v1/venues", headers=user_headers)).json()
    assert venues["kinds"] == ["paper", "ccxt", "mt5"]
    assert {"binance", "kraken", "okx"} <= set(venues["exchanges"])


async def test_an_order_on_a_venue_account_trades_on_the_exchange_and_the_account_keeps_it(
        client: httpx.AsyncClient, app: FastAPI, binance: tuple[FakeBinance, str], admin_headers: Headers,
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    state, _ = binance
    user, headers = new_user()
    credentials = new_key(state)
    account = (await create(client, headers, name="live", kind="ccxt", exchange="binance",
                            credentials=credentials)).json()
    enabled = await client.put(f"/api/v1/risk/users/{user}", headers=admin_headers,
                               json={"live_enabled": True})
    assert enabled.status_code == 200, enabled.text
    await app.state.prices.update(PriceQuote("BTC/USDT", Decimal(50000), datetime.now(UTC), None, None))

    placed = await client.post("/api/v1/orders", headers=headers, json={
        "symbol": "BTC/USDT", "side": "buy", "type": "limit", "quantity": "0.01", "price": "49500",
        "account": "live"})
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["status"], order["account"]) == ("accepted", "live")
    [sent] = [o for o in state.orders.values() if o.client_order_id == UUID(order["id"]).hex]
    problem(await client.delete(f"{ACCOUNTS}/{account['id']}", headers=headers), 409)  # an open order

    state.set_price("BTCUSDT", "49400")  # the exchange fills it; the reconciler brings the fill in

    async def filled() -> dict[str, Any] | None:
        current = (await client.get(f"/api/v1/orders/{order['id']}", headers=headers)).json()
        return current if current["status"] == "filled" else None

    done = await eventually(filled, timeout_s=15)
    assert (done["filled_quantity"], done["average_price"]) == ("0.01", "49500")
    assert Decimal(done["fees"]) == Decimal("0.495")  # the exchange's commission, in USDT
    fills = (await client.get("/api/v1/fills", headers=headers, params={"order_id": order["id"]})).json()
    assert len(fills) == 1 and fills[0]["account"] == "live" and sent.status == "FILLED"
    assert (await client.delete(f"{ACCOUNTS}/{account['id']}", headers=headers)).status_code == 204
