"""Valuation at market: live ticks from NATS, else the last stored close (the caller's own series count),
else the average price marked unpriced; equity = cash + Σ quantity · market price, exactly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from portfolio_manager.events import durable_names
from portfolio_manager.settings import Settings

from aitrading.events import EventBus
from aitrading.market.wire import ticks_event
from aitrading.streams import TRADING, subject_token
from aitrading.testing import durable_bound, eventually

pytestmark = pytest.mark.slow  # serves database-service (chDB) and data-bridge, consumes over NATS

LIVE = f"PMV{uuid4().hex[:8].upper()}"
STORED = f"PMW{uuid4().hex[:8].upper()}"
NONE = f"PMX{uuid4().hex[:8].upper()}"

NewUser = Callable[[], tuple[UUID, dict[str, str]]]


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # fills.SPX is shared with every other suite (and kept by the TRADING stream): this app's durables
    # start with what is published after they exist, not with the stream's whole history of SPX fills.
    return make_settings(fills_subjects=[f"fills.{subject_token(s)}" for s in (LIVE, STORED, NONE, "SPX")],
                         fills_deliver="new")


@pytest.fixture(scope="module", autouse=True)
async def durables_bound(settings: Settings, client: httpx.AsyncClient) -> None:
    for _, durable in durable_names(settings.durable_prefix, settings.fills_subjects):
        await durable_bound(settings.nats_url, TRADING.name, durable)


async def _portfolio(client: httpx.AsyncClient, headers: dict[str, str]) -> Any:
    response = await client.get("/api/v1/portfolio", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _holding(client: httpx.AsyncClient, headers: dict[str, str], symbols: int) -> Any:
    async def check() -> Any:
        body = await _portfolio(client, headers)
        return body if len(body["positions"]) == symbols else None

    return await eventually(check, timeout_s=20)


async def test_positions_are_valued_live_stored_or_at_cost_and_equity_adds_up(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, bus: EventBus,
        import_closes: Callable[..., Awaitable[None]],
        database_service: Callable[[], httpx.AsyncClient]) -> None:
    owner, headers = new_user()
    # STORED's history is this user's own import: only their token sees it.
    await import_closes(STORED, ["20", "21", "22.5"], headers)
    await bus.publish(ticks_event(LIVE, "test", [[1_900_000_000_000, "105.25", "1", "105.2", "105.3"]],
                                  source="data-bridge"))
    await publish_fill(owner=owner, symbol=LIVE, side="buy", quantity="10", price="100", fee="1")
    await publish_fill(owner=owner, symbol=STORED, side="sell", quantity="4", price="25")
    await publish_fill(owner=owner, symbol=NONE, side="buy", quantity="3", price="7.5")
    await publish_fill(owner=owner, symbol="SPX", side="buy", quantity="0.1", price="2000")
    body = await _holding(client, headers, 4)

    by_symbol = {p["symbol"]: p for p in body["positions"]}
    live, stored, unpriced, spx = by_symbol[LIVE], by_symbol[STORED], by_symbol[NONE], by_symbol["SPX"]
    assert (live["priced"], live["price_source"], live["market_price"]) == (True, "live", "105.25")
    assert live["price_time"] == "2030-03-17T17:46:40Z"
    assert Decimal(live["unrealized_pnl"]) == Decimal("52.5")
    assert (stored["priced"], stored["price_source"], Decimal(stored["market_price"])) == \
        (True, "bar", Decimal("22.5"))
    assert Decimal(stored["market_value"]) == Decimal(-90) and Decimal(stored["unrealized_pnl"]) == 10
    assert (unpriced["priced"], Decimal(unpriced["market_price"])) == (False, Decimal("7.5"))
    # SPX is priced by the last close of the bundled history.
    async with database_service() as dbs:
        response = await dbs.get("/api/v1/market/ohlcv", headers=headers,
                                 params={"symbol": "SPX", "timeframe": "1d", "limit": 1})
    [last_bar] = response.json()["bars"]
    assert last_bar["time"].startswith("2018-12-31")
    assert (spx["priced"], spx["price_source"], spx["market_price"]) == (True, "bar", last_bar["close"])

    cash = Decimal(body["cash"])
    assert cash == Decimal(100_000) - 1000 - 1 + 100 - Decimal("22.5") - 200
    market_value = sum(Decimal(p["quantity"]) * Decimal(p["market_price"]) for p in body["positions"])
    assert Decimal(body["equity"]) == cash + market_value
    assert Decimal(body["market_value"]) == market_value
    assert Decimal(body["unrealized_pnl"]) == sum(Decimal(p["unrealized_pnl"]) for p in body["positions"])
    assert Decimal(body["unrealized_pnl"]) == \
        sum((Decimal(p["market_price"]) - Decimal(p["average_price"])) * Decimal(p["quantity"])
            for p in body["positions"])
    # The accounting identity: equity = initial cash + realized - fees + unrealized.
    assert Decimal(body["equity"]) == Decimal(body["initial_cash"]) + Decimal(body["realized_pnl"]) \
        - Decimal(body["fees"]) + Decimal(body["unrealized_pnl"])

    # A new tick moves the valuation at once.
    await bus.publish(ticks_event(LIVE, "test", [[1_900_000_001_000, "99", "1", None, None]],
                                  source="data-bridge"))

    async def repriced() -> bool:
        body = await _portfolio(client, headers)
        return any(p["symbol"] == LIVE and p["market_price"] == "99" for p in body["positions"])

    await eventually(repriced, timeout_s=10)


async def test_another_users_private_series_does_not_price_my_position(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser,
        import_closes: Callable[..., Awaitable[None]]) -> None:
    symbol = STORED  # imported privately by the user of the test above (and by this one's neighbour)
    _, owner_headers = new_user()
    await import_closes(symbol, ["30", "31"], owner_headers)  # another private copy, another user
    viewer, viewer_headers = new_user()
    await publish_fill(owner=viewer, symbol=symbol, side="buy", quantity="1", price="12")
    body = await _holding(client, viewer_headers, 1)
    [position] = body["positions"]
    assert (position["priced"], Decimal(position["market_price"])) == (False, Decimal(12))


async def test_account_names_are_checked(client: httpx.AsyncClient, new_user: NewUser) -> None:
    _, headers = new_user()
    response = await client.get("/api/v1/positions", headers=headers, params={"account": ""})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "query.account"
    response = await client.get("/api/v1/positions", headers=headers, params={"account": "nope"})
    assert response.status_code == 404 and response.json()["errors"][0]["field"] == "account"
    response = await client.get("/api/v1/portfolio")
    assert response.status_code == 401
