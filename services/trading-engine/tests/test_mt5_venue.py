"""The MT5 venue through the real data-bridge app (served in-process by the conftest) and an agent
connected over its WebSocket that answers `order` messages as MetaTrader's order_send would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import SecretStr
from trading_engine.mt5_venue import Mt5Venue, order_message, report_from_result, retcode_text
from trading_engine.venue_registry import VenueNotSupported
from trading_engine.venues import VenueAccount, VenueUnavailable
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aitrading.client import ServiceClient
from aitrading.service_tokens import ServiceTokens
from aitrading.testing import TokenIssuer
from aitrading.trading.orders import Order, OrderStatus, OrderType, Side, TimeInForce

D = Decimal
Responder = Callable[[dict[str, Any]], dict[str, Any] | None]


@pytest.fixture(scope="module")
def bridge_url(data_bridge_url: str) -> str:
    """The real data-bridge the suite runs (conftest): its /ws/mt5 and /internal/mt5/orders."""
    return data_bridge_url


def make_venue(token_issuer: TokenIssuer, bridge: str,
               timeout_s: float = 3.0) -> tuple[Mt5Venue, ServiceClient]:
    client = ServiceClient(overrides={"data-bridge": bridge, "user-service": token_issuer.url}, retries=0)
    tokens = ServiceTokens(client, "trading-engine", SecretStr(token_issuer.service_secret))
    return Mt5Venue(client, tokens, timeout_s=timeout_s), client


@pytest.fixture
async def venue(token_issuer: TokenIssuer, bridge_url: str) -> AsyncIterator[Mt5Venue]:
    venue, client = make_venue(token_issuer, bridge_url)
    yield venue
    await venue.close()
    await client.stop()


@dataclass
class ScriptedAgent:
    """An MT5 agent whose terminal answers each order with `respond(order)` (None: never answers)."""

    ws: ClientConnection
    respond: Responder
    orders: list[dict[str, Any]] = field(default_factory=list)
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if message.get("type") == "welcome":
                    self.welcomed.set()
                elif message.get("type") == "order":
                    self.orders.append(message["order"])
                    result = self.respond(message["order"])
                    if result is not None:
                        await self.ws.send(json.dumps({"type": "order_result",
                                                       "request_id": message["request_id"], **result}))


@asynccontextmanager
async def agent(bridge: str, token_issuer: TokenIssuer, owner: UUID, agent_id: str,
                respond: Responder) -> AsyncIterator[ScriptedAgent]:
    ws_url = "ws" + bridge[4:] + "/ws/mt5"
    headers = {"Authorization": f"Bearer {token_issuer.token(sub=owner)}"}
    async with connect(ws_url, additional_headers=headers) as ws:
        scripted = ScriptedAgent(ws, respond)
        task = asyncio.create_task(scripted.run())
        await ws.send(json.dumps({"type": "hello", "agent_id": agent_id, "symbols": [], "protocol": 1,
                                  "terminal": {"login": 5, "currency": "USD"}, "version": "t"}))
        await asyncio.wait_for(scripted.welcomed.wait(), 5)
        try:
            yield scripted
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def mt5_account(owner: UUID, agent_id: str, symbols: dict[str, str] | None = None) -> VenueAccount:
    return VenueAccount(id=uuid4(), owner=owner, kind="mt5", name="terminal", exchange=None,
                        credentials={"agent_id": agent_id},
                        options={"symbols": symbols or {}, "sandbox": False})


def order(kind: OrderType = OrderType.MARKET, quantity: str = "0.1", price: str | None = None,
          side: Side = Side.BUY, symbol: str = "EUR/USD", tif: TimeInForce = TimeInForce.GTC) -> Order:
    return Order(id=uuid4(), owner=uuid4(), symbol=symbol, side=side, type=kind, quantity=D(quantity),
                 created_at=datetime.now(UTC), price=D(price) if price else None, time_in_force=tif,
                 status=OrderStatus.SUBMITTED)


def filled(order: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "retcode": 10009, "deal": 4401, "order": 5501, "volume": order["volume"],
            "price": "1.08512", "bid": "1.08500", "ask": "1.08512", "comment": "Request executed",
            "retcode_external": 0}


async def test_a_market_order_is_filled_by_the_terminal_with_the_deal_as_its_execution(
        token_issuer: TokenIssuer, bridge_url: str, venue: Mt5Venue) -> None:
    owner = uuid4()
    async with agent(bridge_url, token_issuer, owner, "desk-1", filled) as terminal:
        buy = order(quantity="0.25")
        report = await venue.submit(mt5_account(owner, "desk-1", {"EUR/USD": "EURUSD.m"}), buy)
    assert terminal.orders == [{"symbol": "EURUSD.m", "side": "buy", "type": "market", "volume": "0.25",
                                "comment": buy.id.hex[:31], "deviation": 10, "magic": 0,
                                "time_in_force": "gtc"}]
    assert (report.status, report.venue_order_id, report.reason) == (OrderStatus.FILLED, "5501", None)
    [execution] = report.executions
    assert (execution.trade_id, execution.quantity, execution.price, execution.fee) == (
        "4401", D("0.25"), D("1.08512"), D(0))
    # The answer is remembered: the reconciler's fetch reports it again, a cancel finds it final.
    assert await venue.fetch(mt5_account(owner, "desk-1"), buy) == report
    assert (await venue.cancel(mt5_account(owner, "desk-1"), buy)).status is OrderStatus.FILLED


async def test_a_pending_order_is_accepted_and_cannot_be_canceled_through_the_agent(
        token_issuer: TokenIssuer, bridge_url: str, venue: Mt5Venue) -> None:
    owner = uuid4()

    def placed(o: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "retcode": 10009, "deal": 0, "order": 777, "volume": o["volume"], "price": None,
                "comment": "Request executed"}

    acct = mt5_account(owner, "desk-2")
    async with agent(bridge_url, token_issuer, owner, "desk-2", placed) as terminal:
        limit = order(OrderType.LIMIT, "1", "1.05", tif=TimeInForce.DAY)
        report = await venue.submit(acct, limit)
    assert terminal.orders[0]["type"] == "limit" and terminal.orders[0]["price"] == "1.05"
    assert terminal.orders[0]["time_in_force"] == "day"
    assert (report.status, report.venue_order_id, report.executions) == (OrderStatus.ACCEPTED, "777", [])
    limit.venue_order_id, limit.status = "777", OrderStatus.PENDING_CANCEL
    still = await venue.cancel(acct, limit)
    assert still.status is OrderStatus.ACCEPTED
    assert "remove order ticket 777 in the terminal" in (still.reason or "")


async def test_the_terminal_refusing_is_a_rejection_with_the_retcode_meaning(
        token_issuer: TokenIssuer, bridge_url: str, venue: Mt5Venue) -> None:
    owner = uuid4()

    def no_money(o: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "retcode": 10019, "deal": 0, "order": 0, "volume": None, "price": None,
                "comment": "No money"}

    async with agent(bridge_url, token_issuer, owner, "desk-3", no_money) as terminal:
        report = await venue.submit(mt5_account(owner, "desk-3"), order(tif=TimeInForce.IOC))
    assert terminal.orders[0]["filling"] == "ioc"
    assert report.status is OrderStatus.REJECTED
    assert report.reason == "MT5 10019: not enough money (No money)"


async def test_an_agent_that_is_not_connected_is_a_clear_refusal(
        token_issuer: TokenIssuer, bridge_url: str, venue: Mt5Venue) -> None:
    report = await venue.submit(mt5_account(uuid4(), "nowhere"), order())
    assert report.status is OrderStatus.REJECTED
    assert report.reason == "MT5 agent nowhere is not connected"


async def test_no_answer_from_the_terminal_leaves_the_outcome_unknown_never_resent(
        token_issuer: TokenIssuer, bridge_url: str) -> None:
    venue, client = make_venue(token_issuer, bridge_url, timeout_s=0.3)
    owner = uuid4()
    acct = mt5_account(owner, "desk-4")
    try:
        async with agent(bridge_url, token_issuer, owner, "desk-4", lambda _: None):
            silent = order()
            with pytest.raises(VenueUnavailable):
                await venue.submit(acct, silent)
            with pytest.raises(VenueUnavailable, match="unknown"):
                await venue.fetch(acct, silent)  # not a LookupError: that would send it again
            with pytest.raises(VenueUnavailable):
                await venue.cancel(acct, silent)
    finally:
        await venue.close()
        await client.stop()


async def test_data_bridge_unreachable_means_never_sent(token_issuer: TokenIssuer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    venue, client = make_venue(token_issuer, closed_url)
    acct, lost = mt5_account(uuid4(), "desk-5"), order()
    try:
        with pytest.raises(VenueUnavailable):
            await venue.submit(acct, lost)
        with pytest.raises(LookupError):  # known never to have left: the engine may send it again
            await venue.fetch(acct, lost)
        assert (await venue.cancel(acct, lost)).status is OrderStatus.CANCELED
    finally:
        await venue.close()
        await client.stop()


async def test_an_order_recorded_before_a_restart_is_reported_as_the_engine_knows_it(
        token_issuer: TokenIssuer, bridge_url: str, venue: Mt5Venue) -> None:
    working = order(OrderType.LIMIT, "1", "1.01")
    working.venue_order_id, working.status = "888", OrderStatus.ACCEPTED
    report = await venue.fetch(mt5_account(uuid4(), "desk-6"), working)
    assert (report.status, report.venue_order_id, report.executions) == (OrderStatus.ACCEPTED, "888", [])
    with pytest.raises(VenueUnavailable):  # sent by a previous process, no answer recorded: unknown
        await venue.fetch(mt5_account(uuid4(), "desk-6"), order())


async def test_balances_are_not_part_of_the_agent_protocol(venue: Mt5Venue) -> None:
    with pytest.raises(VenueNotSupported) as refused:
        await venue.balances(mt5_account(uuid4(), "desk-7"))
    assert refused.value.status == 422


# --- the pure parts ---------------------------------------------------------------------------------


def test_orders_map_to_the_agents_order_message() -> None:
    acct = mt5_account(uuid4(), "a")
    stop_limit = Order(id=uuid4(), owner=uuid4(), symbol="XAU-USD", side=Side.SELL, type=OrderType.STOP_LIMIT,
                       quantity=D("0.02"), created_at=datetime.now(UTC), price=D("2300.5"),
                       stop_price=D("2301"), time_in_force=TimeInForce.FOK)
    assert order_message(acct, stop_limit) == {
        "symbol": "XAUUSD", "side": "sell", "type": "stop_limit", "volume": "0.02", "price": "2300.5",
        "stop_price": "2301", "filling": "fok", "comment": stop_limit.id.hex[:31]}


def test_results_map_to_reports() -> None:
    now = datetime.now(UTC)
    sell = order(side=Side.SELL, quantity="1")
    partial = report_from_result(sell, {"retcode": 10010, "deal": 9, "order": 10, "volume": "0.4",
                                        "price": None, "bid": "1.2", "ask": "1.3"}, now)
    assert partial.status is OrderStatus.PARTIALLY_FILLED
    assert [(e.trade_id, e.quantity, e.price) for e in partial.executions] == [("9", D("0.4"), D("1.2"))]
    assert report_from_result(sell, {"retcode": 10008, "deal": 0, "order": 11}, now).status is \
        OrderStatus.ACCEPTED
    never = report_from_result(sell, {"ok": False, "error": "the terminal does not know the symbol X"}, now)
    assert (never.status, never.reason) == (OrderStatus.REJECTED, "the terminal does not know the symbol X")
    assert retcode_text(10018) == "MT5 10018: market is closed"
    assert retcode_text(12345) == "MT5 12345: unknown return code"
