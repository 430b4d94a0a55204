"""Crashes while orders flow: SIGKILL trading-engine (and, separately, portfolio-manager) mid-stream,
restart it, and show that no order is lost, none is doubled, and positions equal the fills.

The client does what any careful client does: every order carries a client_order_id, and a request
that got no answer (connection refused, 502/503/504 from the gateway) is sent again with the same id.
"""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aitrading.fleet.launcher import Fleet

pytestmark = pytest.mark.slow

ORDERS = 60


def _flow(trading: Any, user: dict[str, str], ids: list[str], answers: dict[str, httpx.Response],
          started: threading.Event) -> None:
    for i, client_id in enumerate(ids):
        if i == 5:
            started.set()
        side = "buy" if i % 3 != 2 else "sell"
        order = {"symbol": "SPX", "side": side, "type": "market", "quantity": "1",
                 "client_order_id": client_id}
        answers[client_id] = trading.place_until_answered(user, order)


def _crash_while_orders_flow(fleet: Fleet, trading: Any, victim: str) -> tuple[dict[str, str], list[str]]:
    user = trading.new_user(f"crash-{victim}")
    ids = [f"crash-{uuid.uuid4().hex}" for _ in range(ORDERS)]
    answers: dict[str, httpx.Response] = {}
    started = threading.Event()
    client = threading.Thread(target=_flow, args=(trading, user, ids, answers, started), daemon=True)
    client.start()
    assert started.wait(60), "orders did not start flowing"
    fleet.processes[victim].kill()
    fleet.start_service(victim)
    client.join(180)
    assert not client.is_alive(), "the client never got an answer for every order"
    assert all(r.status_code in (200, 201) for r in answers.values()), \
        [r.text for r in answers.values() if r.status_code not in (200, 201)][:3]
    return user, ids


def _no_order_lost_or_doubled(trading: Any, user: dict[str, str], ids: list[str]) -> None:
    orders = trading.all_orders(user)
    by_client = {}
    for order in orders:
        assert order["client_order_id"] not in by_client, f"{order['client_order_id']} placed twice"
        by_client[order["client_order_id"]] = order
    assert set(by_client) == set(ids), "every order sent exists once, and nothing else"
    assert all(o["status"] == "filled" for o in orders)
    fills = trading.all_fills(user)
    per_order: dict[str, Decimal] = {}
    for fill in fills:
        per_order[fill["order_id"]] = per_order.get(fill["order_id"], Decimal(0)) + Decimal(fill["quantity"])
    assert per_order == {o["id"]: Decimal(o["quantity"]) for o in orders}, "each order filled exactly once"


def test_killing_the_trading_engine_mid_flow_loses_and_doubles_nothing(fleet: Fleet, trading: Any) -> None:
    unanswered = trading.unanswered
    user, ids = _crash_while_orders_flow(fleet, trading, "trading-engine")
    assert trading.unanswered > unanswered, "the crash should have left requests unanswered, to be sent again"
    _no_order_lost_or_doubled(trading, user, ids)
    assert trading.eventually(lambda: trading.positions_match_fills(user), timeout_s=60, every_s=1.0), \
        "portfolio-manager's positions never matched the engine's fills"


def test_killing_the_portfolio_manager_mid_flow_keeps_positions_equal_to_fills(
        fleet: Fleet, trading: Any) -> None:
    user, ids = _crash_while_orders_flow(fleet, trading, "portfolio-manager")
    _no_order_lost_or_doubled(trading, user, ids)
    assert trading.eventually(lambda: trading.positions_match_fills(user), timeout_s=60, every_s=1.0), \
        "after the restart, positions never caught up with the fills"
    expected_net = sum(1 if i % 3 != 2 else -1 for i in range(ORDERS))
    positions = trading.get("/api/v1/positions", user).json()
    assert [Decimal(p["quantity"]) for p in positions if p["symbol"] == "SPX"] == [Decimal(expected_net)]
