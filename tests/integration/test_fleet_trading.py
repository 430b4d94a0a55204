"""Trading on paper through the gateway: orders, idempotency, cancels, risk, the kill switch, positions
and portfolio against the fills, isolation between users, and a deployed strategy on replayed bars."""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aitrading.trading.accounting import Portfolio
from aitrading.trading.orders import Side

pytestmark = pytest.mark.slow

SPX_LAST_CLOSE = Decimal("2506.85")  # 2018-12-31, the last bar of the bundled history


@pytest.fixture(scope="module")
def user(trading: Any) -> dict[str, str]:
    return trading.new_user("paper")


def market(symbol: str, side: str, quantity: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "type": "market", "quantity": quantity,
            "client_order_id": f"t-{uuid.uuid4().hex}", **extra}


def test_a_market_order_on_spx_fills_on_paper_near_the_last_close(
        gateway: httpx.Client, user: dict[str, str]) -> None:
    response = gateway.post("/api/v1/orders", json=market("SPX", "buy", "2"), headers=user)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "filled"
    assert order["filled_quantity"] == "2" or Decimal(order["filled_quantity"]) == 2
    price = Decimal(order["average_price"])
    assert SPX_LAST_CLOSE <= price <= SPX_LAST_CLOSE * Decimal("1.01"), "last close plus a little slippage"


def test_the_same_client_order_id_twice_gives_one_order(gateway: httpx.Client, user: dict[str, str],
                                                        trading: Any) -> None:
    body = market("SPX", "buy", "1")
    first = gateway.post("/api/v1/orders", json=body, headers=user)
    again = gateway.post("/api/v1/orders", json=body, headers=user)
    assert first.status_code == 201, first.text
    assert again.status_code in (200, 201), again.text
    assert again.json()["id"] == first.json()["id"]
    same = [o for o in trading.all_orders(user) if o["client_order_id"] == body["client_order_id"]]
    assert len(same) == 1
    fills = [f for f in trading.all_fills(user) if f["order_id"] == first.json()["id"]]
    assert sum(Decimal(f["quantity"]) for f in fills) == 1, "filled once, not twice"


def test_a_limit_order_rests_and_cancels(gateway: httpx.Client, user: dict[str, str]) -> None:
    below = (SPX_LAST_CLOSE * Decimal("0.95")).quantize(Decimal("0.01"))
    placed = gateway.post("/api/v1/orders", headers=user, json={
        "symbol": "SPX", "side": "buy", "type": "limit", "quantity": "1", "price": str(below)})
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "accepted"
    order_id = placed.json()["id"]
    canceled = gateway.delete(f"/api/v1/orders/{order_id}", headers=user)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert gateway.get(f"/api/v1/orders/{order_id}", headers=user).json()["status"] == "canceled"
    assert gateway.delete(f"/api/v1/orders/{order_id}", headers=user).status_code == 409


def test_positions_and_portfolio_match_the_fills(gateway: httpx.Client, trading: Any) -> None:
    user = trading.new_user("books")
    for side, quantity in (("buy", "3"), ("buy", "2"), ("sell", "4")):
        placed = gateway.post("/api/v1/orders", json=market("SPX", side, quantity), headers=user)
        assert placed.status_code == 201, placed.text
    assert trading.eventually(lambda: trading.positions_match_fills(user)), "positions never matched fills"
    fills = trading.all_fills(user)
    assert len(fills) == 3
    expected = Portfolio.starting_with(Decimal(100_000))
    for fill in sorted(fills, key=lambda f: f["time"]):
        expected.apply(fill["symbol"], Side(fill["side"]), Decimal(fill["quantity"]), Decimal(fill["price"]),
                       Decimal(fill["fee"]))
    portfolio = gateway.get("/api/v1/portfolio", headers=user).json()
    assert Decimal(portfolio["cash"]) == expected.cash
    assert Decimal(portfolio["realized_pnl"]) == expected.realized_pnl
    [position] = portfolio["positions"]
    assert position["symbol"] == "SPX" and Decimal(position["quantity"]) == 1
    assert Decimal(position["average_price"]) == expected.positions["SPX"].average_price
    valued = Decimal(portfolio["cash"]) + sum(Decimal(p["quantity"]) * Decimal(p["market_price"])
                                              for p in portfolio["positions"])
    assert Decimal(portfolio["equity"]) == valued
    positions = gateway.get("/api/v1/positions", headers=user).json()
    assert [(p["symbol"], Decimal(p["quantity"])) for p in positions] == [("SPX", Decimal(1))]


def test_halt_refuses_new_orders_naming_the_rule_but_cancels_still_work(
        gateway: httpx.Client, trading: Any) -> None:
    user = trading.new_user("halt")
    resting = gateway.post("/api/v1/orders", headers=user, json={
        "symbol": "SPX", "side": "buy", "type": "limit", "quantity": "1",
        "price": str((SPX_LAST_CLOSE * Decimal("0.95")).quantize(Decimal("0.01")))})
    assert resting.status_code == 201, resting.text
    assert gateway.post("/api/v1/risk/halt", headers=user, json={"reason": "fleet test"}).status_code == 200
    refused = gateway.post("/api/v1/orders", json=market("SPX", "buy", "1"), headers=user)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["rule"] == "trading_state"
    canceled = gateway.delete(f"/api/v1/orders/{resting.json()['id']}", headers=user)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert gateway.post("/api/v1/risk/resume", headers=user).status_code == 200
    resumed = gateway.post("/api/v1/orders", json=market("SPX", "buy", "1"), headers=user)
    assert resumed.status_code == 201, resumed.text


@pytest.mark.parametrize(("body", "field"), [
    ({"symbol": "SPX", "side": "buy", "type": "market", "quantity": "0"}, "quantity"),
    ({"symbol": "SPX", "side": "buy", "type": "limit", "quantity": "1", "price": "-5"}, "price"),
    ({"symbol": "NOSUCHSYMBOL", "side": "buy", "type": "market", "quantity": "1"}, None),
])
def test_bad_orders_are_refused_with_422(gateway: httpx.Client, user: dict[str, str],
                                         body: dict[str, Any], field: str | None) -> None:
    response = gateway.post("/api/v1/orders", json=body, headers=user)
    assert response.status_code == 422, response.text
    problem = response.json()
    if field is not None:
        assert any(field in e["field"] for e in problem["errors"]), problem
    else:
        assert "NOSUCHSYMBOL" in problem["detail"]


def test_another_user_cannot_see_or_cancel_my_order(gateway: httpx.Client, user: dict[str, str],
                                                    trading: Any) -> None:
    mine = gateway.post("/api/v1/orders", json=market("SPX", "buy", "1"), headers=user).json()
    stranger = trading.new_user("stranger")
    assert gateway.get(f"/api/v1/orders/{mine['id']}", headers=stranger).status_code == 404
    assert gateway.delete(f"/api/v1/orders/{mine['id']}", headers=stranger).status_code == 404
    assert trading.all_orders(stranger) == []


def test_a_deployed_sma_crossover_trades_on_replayed_bars(gateway: httpx.Client, admin: dict[str, str],
                                                          trading: Any) -> None:
    user = trading.new_user("strategist")
    alias = f"SPXS{uuid.uuid4().hex[:6].upper()}"
    deployed = gateway.post("/api/v1/strategies", headers=user, json={
        "strategy": "sma_crossover", "params": {"fast": 5, "slow": 20, "quantity": "1"},
        "symbol": alias, "timeframe": "1d", "mode": "paper"})
    assert deployed.status_code == 201, deployed.text
    deployment = deployed.json()
    feed = gateway.post("/api/v1/feeds", headers=admin, json={
        "kind": "replay", "symbols": ["SPX"],
        "params": {"publish_as": alias, "speed": 25, "start": "2018-01-01T00:00:00Z"}})
    assert feed.status_code == 201, feed.text

    def strategy_orders() -> list[dict[str, Any]]:
        orders = [o for o in trading.all_orders(user) if o.get("strategy_id") == deployment["id"]]
        return orders if len(orders) >= 2 else []

    orders = trading.eventually(strategy_orders, timeout_s=90, every_s=1.0)
    assert len(orders) >= 2, "sma_crossover(5, 20) crosses several times in 2018"
    assert {o["symbol"] for o in orders} == {alias}
    assert all(o["status"] == "filled" for o in orders)
    orders.sort(key=lambda o: o["created_at"])
    assert orders[0]["side"] == "buy", "long-only: the first trade from flat is a buy"
    assert all(a["side"] != b["side"] for a, b in itertools.pairwise(orders)), "in and out"
    state = gateway.get(f"/api/v1/strategies/{deployment['id']}", headers=user).json()
    assert state["last_bar_time"] is not None
    bad = gateway.post("/api/v1/strategies", headers=user, json={
        "strategy": "sma_crossover", "params": {"fast": 30, "slow": 10}, "symbol": alias, "timeframe": "1d",
        "mode": "paper"})
    assert bad.status_code == 422 and any(e["field"].startswith("params") for e in bad.json()["errors"])
