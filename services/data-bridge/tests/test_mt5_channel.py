"""data-bridge's side of MT5: /ws/mt5 spoken by hand, the MT5 feed's trust rules, the order route."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from data_bridge.mt5_agents import Mt5Order, TerminalTick
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from aitrading.errors import Invalid
from aitrading.testing import TokenIssuer


class HandAgent:
    """An agent spoken by hand: what it receives is kept, and it answers nothing on its own."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def pump(self) -> None:
        try:
            async for raw in self.ws:
                self.inbox.append(json.loads(raw))
                self.arrived.set()
        except ConnectionClosed:
            pass

    async def next(self, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for message in self.inbox:
                if message.get("type") == kind:
                    self.inbox.remove(message)
                    return message
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(deadline - time.monotonic(), 0.01))


@asynccontextmanager
async def hand_agent(ws_url: str, token: str, agent_id: str = "hand-1",
                     symbols: list[str] | None = None) -> AsyncIterator[HandAgent]:
    async with connect(ws_url + "/ws/mt5", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        agent = HandAgent(ws)
        pump = asyncio.create_task(agent.pump())
        try:
            await agent.send({"type": "hello", "agent_id": agent_id, "symbols": symbols or [],
                              "terminal": {"login": 1}, "protocol": 1, "version": "test"})
            yield agent
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


def tick_row(symbol: str, time_msc: int, bid: str, ask: str) -> dict[str, Any]:
    return {"symbol": symbol, "time_msc": time_msc, "bid": bid, "ask": ask, "last": None, "volume": "0",
            "flags": 6}


async def create_feed(client: Any, symbols: list[str], **params: Any) -> str:
    response = await client.post("/api/v1/feeds", json={"kind": "mt5", "symbols": symbols, "params": params})
    assert response.status_code == 201, response.text
    feed_id = str(response.json()["id"])
    deadline = time.monotonic() + 10
    while (await client.get(f"/api/v1/feeds/{feed_id}")).json()["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return feed_id


async def feed_ticks(client: Any, feed_id: str) -> int:
    return int((await client.get(f"/api/v1/feeds/{feed_id}")).json()["counters"]["ticks"])


async def wait_ticks(client: Any, feed_id: str, count: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await feed_ticks(client, feed_id) < count:
        assert time.monotonic() < deadline, f"feed {feed_id} did not reach {count} ticks"
        await asyncio.sleep(0.05)


def sym() -> str:
    return f"Y{uuid4().hex[:7].upper()}"


# --- who supplies a feed ---


async def test_a_feed_takes_admin_agents_by_default_and_named_owners_agents_when_asked(
        bridge: Any, token_issuer: TokenIssuer) -> None:
    s1, s2 = sym(), sym()
    user = uuid4()
    now = int(time.time() * 1000)
    async with bridge() as b:
        default_feed = await create_feed(b.client, [s1])
        owners_feed = await create_feed(b.client, [s2], owners=[str(user)])
        admin_token = token_issuer.token(roles=("user", "admin"))
        async with hand_agent(b.ws_url, token_issuer.token(sub=user), symbols=[s1, s2]) as users_agent, \
                hand_agent(b.ws_url, admin_token, "admin-desk", [s1, s2]) as admins_agent:
            assert (await users_agent.next("welcome"))["subscribe"] == [s2]
            assert (await admins_agent.next("welcome"))["subscribe"] == [s1]
            await users_agent.send({"type": "ticks", "ticks": [tick_row(s1, now, "1.1", "1.3"),
                                                               tick_row(s2, now, "2.1", "2.3")]})
            await admins_agent.send({"type": "ticks", "ticks": [tick_row(s1, now + 1, "1.2", "1.4"),
                                                                tick_row(s2, now + 1, "9.1", "9.3")]})
            await wait_ticks(b.client, default_feed, 1)
            await wait_ticks(b.client, owners_feed, 1)
            await asyncio.sleep(0.2)
            assert await feed_ticks(b.client, default_feed) == 1  # only the admin's tick of s1
            assert await feed_ticks(b.client, owners_feed) == 1  # only the user's tick of s2
            quote = (await b.client.get(f"/api/v1/quotes/{s2}")).json()
            assert Decimal(quote["last"]) == Decimal("2.2")


async def test_one_agent_supplies_a_symbol_while_it_is_connected(bridge: Any,
                                                                 token_issuer: TokenIssuer) -> None:
    s1 = sym()
    now = int(time.time() * 1000)
    async with bridge() as b:
        feed = await create_feed(b.client, [s1])
        token = token_issuer.token(roles=("user", "admin"))
        async with hand_agent(b.ws_url, token, "first", [s1]) as first:
            await first.next("welcome")
            await first.send({"type": "ticks", "ticks": [tick_row(s1, now, "1.0", "1.2")]})
            await wait_ticks(b.client, feed, 1)
            async with hand_agent(b.ws_url, token, "second", [s1]) as second:
                await second.next("welcome")
                await second.send({"type": "ticks", "ticks": [tick_row(s1, now + 1, "5.0", "5.2")]})
                await first.send({"type": "ticks", "ticks": [tick_row(s1, now + 2, "1.1", "1.3")]})
                await wait_ticks(b.client, feed, 2)
                await asyncio.sleep(0.2)
                assert await feed_ticks(b.client, feed) == 2  # the second terminal's tick was left out
            async with hand_agent(b.ws_url, token, "second", [s1]) as second:
                await second.next("welcome")
                await first.ws.close()
                await asyncio.sleep(0.2)  # the first agent is gone: the second one takes over
                await second.send({"type": "ticks", "ticks": [tick_row(s1, now + 3, "1.2", "1.4")]})
                await wait_ticks(b.client, feed, 3)


async def test_agents_are_told_the_symbols_feeds_start_and_stop_wanting(
        bridge: Any, token_issuer: TokenIssuer) -> None:
    s1, pair = sym(), f"{sym()[:4]}/USD"
    admin = token_issuer.token(uuid4(), roles=("user", "admin"))
    async with bridge() as b, hand_agent(b.ws_url, admin) as agent:
        assert (await agent.next("welcome"))["subscribe"] == []
        feed = await create_feed(b.client, [pair], terminal_symbols={pair: f"{s1}.m"})
        assert (await agent.next("subscribe"))["symbols"] == [f"{s1}.m"]
        await agent.send({"type": "symbols", "streaming": [f"{s1}.m"], "failed": {"OTHER": "not found"}})
        assert (await b.client.post(f"/api/v1/feeds/{feed}/stop")).status_code == 200
        assert (await agent.next("subscribe"))["symbols"] == []
        (listed,) = (await b.client.get("/api/v1/feeds/mt5/agents",
                                        headers={"Authorization": f"Bearer {admin}"})).json()
        assert listed["symbols"] == [f"{s1}.m"] and listed["failed_symbols"] == {"OTHER": "not found"}


async def test_a_hello_with_a_bad_agent_id_is_refused(bridge: Any, token_issuer: TokenIssuer) -> None:
    async with bridge() as b, hand_agent(b.ws_url, token_issuer.token(), "bad id with spaces") as agent:
        error = await agent.next("error")
        assert "agent id" in error["detail"]


async def test_the_socket_refuses_missing_credentials(bridge: Any) -> None:
    async with bridge() as b:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(b.ws_url + "/ws/mt5"):
                pass
        assert refused.value.response.status_code == 401


async def test_agents_are_listed_to_their_owner_only(bridge: Any, token_issuer: TokenIssuer) -> None:
    alice, bob = uuid4(), uuid4()
    async with bridge() as b, hand_agent(b.ws_url, token_issuer.token(sub=alice), "alice-pc") as agent:
        await agent.next("welcome")
        mine = await b.client.get("/api/v1/feeds/mt5/agents",
                                  headers={"Authorization": f"Bearer {token_issuer.token(sub=alice)}"})
        theirs = await b.client.get("/api/v1/feeds/mt5/agents",
                                    headers={"Authorization": f"Bearer {token_issuer.token(sub=bob)}"})
    assert [a["id"] for a in mine.json()] == ["alice-pc"]
    assert theirs.json() == []


# --- orders ---


async def test_orders_are_for_services_checked_and_routed_to_the_owners_agent(
        bridge: Any, token_issuer: TokenIssuer) -> None:
    owner = uuid4()
    service = {"Authorization": f"Bearer {token_issuer.service_token('trading-engine')}"}
    order = {"symbol": "EURUSD", "side": "buy", "volume": "0.1"}
    async with bridge() as b:
        as_user = await b.client.post("/internal/mt5/orders", json={"owner": str(owner), "order": order},
                                      headers={"Authorization": f"Bearer {token_issuer.token(sub=owner)}"})
        assert as_user.status_code == 403
        nobody = await b.client.post("/internal/mt5/orders", headers=service,
                                     json={"owner": str(owner), "order": order})
        assert nobody.status_code == 503 and "no MT5 agent" in nobody.json()["detail"]
        limit = {"symbol": "EURUSD", "side": "buy", "type": "limit"}
        bad = await b.client.post("/internal/mt5/orders", headers=service, json={
            "owner": str(owner), "order": {**limit, "volume": "-1"}})
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"order.volume"}
        no_price = await b.client.post("/internal/mt5/orders", headers=service, json={
            "owner": str(owner), "order": {**limit, "volume": "1"}})
        assert no_price.status_code == 422 and no_price.json()["errors"][0]["field"] == "order.price"
        async with hand_agent(b.ws_url, token_issuer.token(sub=owner), "silent") as agent:
            await agent.next("welcome")
            unknown = await b.client.post("/internal/mt5/orders", headers=service,
                                          json={"owner": str(owner), "agent_id": "other", "order": order})
            assert unknown.status_code == 404
            pending = asyncio.create_task(b.client.post("/internal/mt5/orders", headers=service, json={
                "owner": str(owner), "order": order, "timeout_s": 5}))
            sent = await agent.next("order")
            assert sent["order"] == {"symbol": "EURUSD", "side": "buy", "type": "market", "volume": "0.1",
                                     "deviation": 10, "magic": 0, "comment": "", "time_in_force": "gtc"}
            await agent.send({"type": "order_result", "request_id": sent["request_id"], "ok": True,
                              "retcode": 10009, "deal": 7, "order": 8, "price": "1.1"})
            answered = await pending
            assert answered.status_code == 200
            assert answered.json() == {"ok": True, "retcode": 10009, "deal": 7, "order": 8, "price": "1.1"}
            timed_out = await b.client.post("/internal/mt5/orders", headers=service, json={
                "owner": str(owner), "order": order, "timeout_s": 0.3})
            assert timed_out.status_code == 504
            assert "may still have reached the terminal" in timed_out.json()["detail"]


# --- parameters and conversions ---


async def test_feed_parameters_are_checked_naming_the_field(bridge: Any) -> None:
    async with bridge() as b:
        response = await b.client.post("/api/v1/feeds", json={
            "kind": "mt5", "symbols": ["EUR/USD"], "params": {"terminal_symbols": {"GBP/USD": "GBPUSD"}}})
        assert response.status_code == 422
        assert response.json()["errors"] == [{"field": "params.terminal_symbols.GBP/USD",
                                               "reason": "not one of the feed's symbols"}]
        owners = await b.client.post("/api/v1/feeds", json={
            "kind": "mt5", "symbols": ["EURUSD"], "params": {"owners": ["nope"]}})
        assert owners.status_code == 422 and owners.json()["errors"][0]["field"] == "params.owners.0"


def test_a_terminal_tick_is_priced_at_its_last_trade_else_its_mid() -> None:
    quote = TerminalTick("EURUSD", 1, Decimal("1.08501"), Decimal("1.08504"), None, Decimal("0"), 6)
    tick = quote.as_tick("EUR/USD")
    assert tick is not None and (tick.symbol, tick.price, tick.size) == ("EUR/USD", Decimal("1.085025"), 0)
    trade = TerminalTick("SPX", 2, Decimal("10"), Decimal("11"), Decimal("10.5"), Decimal("3"), 8 | 6)
    traded = trade.as_tick("SPX")
    assert traded is not None and (traded.price, traded.size) == (Decimal("10.5"), Decimal("3"))
    assert TerminalTick("X", 3, None, None, None, Decimal(0), 0).as_tick("X") is None


def test_orders_name_the_field_they_fail_on() -> None:
    with pytest.raises(Invalid) as caught:
        Mt5Order.parse({"symbol": "EURUSD", "side": "buy", "type": "stop", "volume": "1"})
    assert caught.value.errors == [{"field": "order.stop_price", "reason": "a stop order needs a stop price"}]
    assert Mt5Order.parse({"symbol": "X", "side": "sell", "volume": 2}).wire()["volume"] == "2"
