"""POST /api/v1/portfolio/rebalance: orders from the account as it stands to target weights, given or
allocated; each order the exact body POST /api/v1/orders takes; nothing submitted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from portfolio_manager.settings import Settings

from aitrading.streams import subject_token
from aitrading.testing import eventually

pytestmark = pytest.mark.slow  # serves database-service (chDB) and data-bridge, consumes over NATS

HELD = f"PMR{uuid4().hex[:8].upper()}"
DROPPED = f"PMD{uuid4().hex[:8].upper()}"
NEW = f"PMN{uuid4().hex[:8].upper()}"

NewUser = Callable[[], tuple[UUID, dict[str, str]]]
Import = Callable[..., Awaitable[None]]


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(fills_subjects=[f"fills.{subject_token(s)}" for s in (HELD, DROPPED)])


async def _rebalance(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/api/v1/portfolio/rebalance", headers=headers, json=body)


async def _account_with_holdings(client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser,
                                 import_closes: Import) -> tuple[dict[str, str], dict[str, Any]]:
    """A user holding 100 HELD (now at 50) and 20 DROPPED (now at 10), with prices for NEW (at 4)."""
    owner, headers = new_user()
    for symbol, closes in ((HELD, ["48", "50"]), (DROPPED, ["11", "10"]), (NEW, ["3.5", "4"])):
        await import_closes(symbol, closes, headers)
    await publish_fill(owner=owner, symbol=HELD, side="buy", quantity="100", price="40", fee="2")
    await publish_fill(owner=owner, symbol=DROPPED, side="buy", quantity="20", price="12")

    async def both() -> Any:
        response = await client.get("/api/v1/portfolio", headers=headers)
        body = response.json()
        return body if len(body["positions"]) == 2 else None

    return headers, await eventually(both, timeout_s=20)


async def test_orders_take_the_account_to_the_target_weights(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, import_closes: Import) -> None:
    headers, portfolio = await _account_with_holdings(client, publish_fill, new_user, import_closes)
    cash = Decimal(100_000) - 4000 - 2 - 240
    equity = cash + 100 * 50 + 20 * 10
    assert Decimal(portfolio["equity"]) == equity

    response = await _rebalance(client, headers, weights={HELD: 0.1, NEW: "0.25"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (Decimal(body["equity"]), Decimal(body["cash"])) == (equity, cash)
    orders = {o["symbol"]: o for o in body["orders"]}
    step = Decimal("0.0001")

    def wanted(weight: str, price: int) -> Decimal:
        return (Decimal(weight) * equity / price).quantize(step, rounding=ROUND_DOWN)

    # Sells first: all of DROPPED (not in the target); then the buys (by symbol): NEW, HELD topped up.
    assert [o["symbol"] for o in body["orders"]] == [DROPPED, NEW, HELD]
    assert (orders[DROPPED]["side"], Decimal(orders[DROPPED]["quantity"])) == ("sell", 20)
    assert orders[HELD]["side"] == "buy"
    assert Decimal(orders[HELD]["quantity"]) == \
        (Decimal("0.1") * equity / 50 - 100).quantize(step, ROUND_DOWN)
    assert Decimal(orders[NEW]["quantity"]) == wanted("0.25", 4)
    assert (Decimal(orders[HELD]["price_used"]), Decimal(orders[NEW]["price_used"])) == (50, 4)
    assert Decimal(orders[HELD]["current_weight"]) == Decimal(5000) / equity
    assert (orders[HELD]["target_weight"], orders[DROPPED]["target_weight"]) == ("0.1", "0")
    for order in body["orders"]:
        assert order["order"] == {"symbol": order["symbol"], "side": order["side"], "type": "market",
                                  "quantity": order["quantity"]}
    spent = sum(Decimal(o["notional"]) * (1 if o["side"] == "buy" else -1) for o in body["orders"])
    assert Decimal(body["cash_after"]) == cash - spent
    # Nothing was traded: the account is as it was.
    after = (await client.get("/api/v1/portfolio", headers=headers)).json()
    assert after["cash"] == portfolio["cash"] and after["positions"] == portfolio["positions"]


async def test_small_orders_are_skipped_and_allocation_weights_can_be_used(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, import_closes: Import) -> None:
    headers, portfolio = await _account_with_holdings(client, publish_fill, new_user, import_closes)
    equity = Decimal(portfolio["equity"])
    # HELD moves by 500 and DROPPED by about 8 (19.18 units wanted of 20): both below 1000.
    target = (Decimal(5000) + 500) / equity
    response = await _rebalance(client, headers, weights={HELD: str(target), DROPPED: "0.0019"},
                                min_trade_value=1000)
    body = response.json()
    assert response.status_code == 200, response.text
    skipped = {s["symbol"]: s for s in body["skipped"]}
    assert skipped[HELD]["reason"] == "below min_trade_value" and skipped[HELD]["side"] == "buy"
    assert Decimal(skipped[HELD]["notional"]) <= 500
    assert skipped[DROPPED]["reason"] == "below min_trade_value" and skipped[DROPPED]["side"] == "sell"
    assert body["orders"] == []

    allocated = await _rebalance(client, headers, allocation={"symbols": ["SPX", "NDX"],
                                                              "method": "risk_parity"})
    assert allocated.status_code == 200, allocated.text
    body = allocated.json()
    assert body["allocation"]["method"] == "risk_parity"
    assert body["target_weights"] == body["allocation"]["weights"]
    sides = {o["symbol"]: o["side"] for o in body["orders"]}
    assert sides == {HELD: "sell", DROPPED: "sell", "SPX": "buy", "NDX": "buy"}
    spx = next(o for o in body["orders"] if o["symbol"] == "SPX")
    expected = Decimal(body["allocation"]["weights"]["SPX"]) * equity / Decimal(spx["price_used"])
    assert Decimal(spx["quantity"]) == expected.quantize(Decimal("0.0001"), ROUND_DOWN)


async def test_a_venue_accounts_orders_name_the_account(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, import_closes: Import) -> None:
    owner, headers = new_user()
    await import_closes(HELD, ["50"], headers)
    await publish_fill(owner=owner, symbol=HELD, side="buy", quantity="1", price="40", account="venue-r")

    async def held() -> Any:
        response = await client.get("/api/v1/positions", headers=headers, params={"account": "venue-r"})
        return response.json() if response.status_code == 200 and response.json() else None

    await eventually(held, timeout_s=20)
    response = await _rebalance(client, headers, account="venue-r", weights={HELD: "0.5"})
    assert response.status_code == 200, response.text
    body = response.json()
    # Cash -40 (a venue account starts at 0), 1 unit at 50: equity 10; half of it is 0.1 unit.
    assert (body["account"], Decimal(body["equity"])) == ("venue-r", 10)
    [order] = body["orders"]
    assert order["order"] == {"symbol": HELD, "side": "sell", "type": "market", "quantity": "0.9",
                              "account": "venue-r"}


async def test_refusals_name_the_field(client: httpx.AsyncClient, new_user: NewUser) -> None:
    _, headers = new_user()
    unknown = f"PMU{uuid4().hex[:8].upper()}"
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "weights"),
        ({"weights": {"SPX": 0.5}, "allocation": {"symbols": ["SPX", "NDX"], "method": "min_variance"}},
         "weights"),
        ({"weights": {"SPX": 0.7, "NDX": 0.6}}, "weights"),
        ({"weights": {"SPX": "NaN"}}, "weights.SPX"),
        ({"weights": {unknown: 0.5}}, f"weights.{unknown}"),
        ({"weights": {"SPX": 0.5}, "quantity_step": 0}, "quantity_step"),
        ({"weights": {"SPX": 0.5}, "min_trade_value": -1}, "min_trade_value"),
        ({"allocation": {"symbols": ["SPX"], "method": "min_variance"}}, "allocation.symbols"),
    ]
    for body, field in cases:
        response = await _rebalance(client, headers, **body)
        assert response.status_code == 422, (body, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert any(f == field or f.endswith(f".{field}") for f in fields), (body, fields)
    missing = await _rebalance(client, headers, account="no-such", weights={"SPX": 0.5})
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "account"


async def test_a_new_paper_account_is_invested_from_its_starting_cash(
        client: httpx.AsyncClient, new_user: NewUser) -> None:
    _, headers = new_user()
    response = await _rebalance(client, headers, weights={"SPX": 0.6, "NDX": 0.4}, quantity_step=1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert Decimal(body["equity"]) == 100_000
    for order in body["orders"]:
        weight = Decimal(body["target_weights"][order["symbol"]])
        assert order["side"] == "buy"
        wanted = weight * 100_000 / Decimal(order["price_used"])
        assert Decimal(order["quantity"]) == wanted.to_integral_value(ROUND_DOWN)
