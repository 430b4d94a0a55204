"""The MT5 agent (agents/mt5-agent) against a fake MetaTrader5 terminal and a real data-bridge.

Ticks go terminal → agent → /ws/mt5 → the MT5 feed → the pipeline → `md.tick.<SYMBOL>` on NATS;
orders go POST /internal/mt5/orders → the agent → the terminal's order_send and back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import sqlalchemy as sa
from data_bridge.main import create_app
from sqlalchemy.ext.asyncio import create_async_engine

from aitrading.db import to_async_url
from aitrading.testing import TokenIssuer, eventually, serve_app

AGENT_ROOT = Path(__file__).resolve().parents[3] / "agents" / "mt5-agent"
sys.path.insert(0, str(AGENT_ROOT))  # the agent is a standalone package, not a workspace member
sys.path.insert(0, str(AGENT_ROOT / "tests"))
from fake_metatrader5 import FakeMetaTrader5  # noqa: E402
from mt5_agent.agent import Agent, Refused, Terminal  # noqa: E402
from mt5_agent.protocol import OrderRequest, decimal_text, digits_of_step  # noqa: E402


def now_ms() -> int:
    return int(time.time() * 1000)


def new_terminal_symbol() -> str:
    return f"X{uuid4().hex[:7].upper()}"


def fast_agent(terminal: Terminal, url: str, token: str, symbols: list[str], **kw: Any) -> Agent:
    return Agent(terminal, url, token, symbols, agent_id=kw.pop("agent_id", "desk-1"), poll_ms=20,
                 backoff_initial_s=0.05, backoff_max_s=0.3, open_timeout_s=2, **kw)


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        agent.terminal.close()


async def start_mt5_feed(client: Any, symbols: list[str], **params: Any) -> str:
    response = await client.post("/api/v1/feeds", json={"kind": "mt5", "symbols": symbols, "params": params})
    assert response.status_code == 201, response.text
    feed_id = str(response.json()["id"])

    async def status() -> str:
        return str((await client.get(f"/api/v1/feeds/{feed_id}")).json()["status"])

    deadline = time.monotonic() + 10
    while await status() != "running":
        assert time.monotonic() < deadline, "the feed did not start"
        await asyncio.sleep(0.05)
    return feed_id


def subject_rows(events: list[Any]) -> list[list[Any]]:
    return [row for event in events for row in event.data["ticks"]]


# --- the whole path ---


async def test_ticks_flow_from_the_terminal_through_the_agent_to_nats(
        bridge: Any, listen: Any, token_issuer: TokenIssuer) -> None:
    symbol = new_terminal_symbol()
    fake = FakeMetaTrader5()
    fake.add_symbol(symbol, digits=5)
    start = now_ms()
    fake.push_tick(symbol, start - 50, 1.08490, 1.08494)
    admin = uuid4()
    async with bridge() as running_bridge, listen(f"md.tick.{symbol}") as listener:
        await start_mt5_feed(running_bridge.client, [symbol])
        agent = fast_agent(Terminal(fake), running_bridge.ws_url + "/ws/mt5",
                           token_issuer.token(sub=admin, roles=("user", "admin")), [symbol])
        async with running(agent):
            await asyncio.wait_for(agent.connected.wait(), 10)
            await eventually(lambda: agent.ticks_sent >= 1)  # it starts from the terminal's current tick
            fake.push_tick(symbol, start, 1.08501, 1.08503)
            fake.push_tick(symbol, start, 1.08502, 1.08504)  # same millisecond: both are sent
            fake.push_tick(symbol, start + 7, 1.08500, 1.08506, last=1.08505, volume=2.0, flags=8 | 6)
            events = await listener.wait_for(lambda ev: len(subject_rows(ev)) >= 4)
            listed = await running_bridge.client.get("/api/v1/feeds/mt5/agents",
                                                     headers={"Authorization": "Bearer " + token_issuer.token(
                                                         sub=admin, roles=("user", "admin"))})
    rows = subject_rows(events)
    assert [(r[0], Decimal(r[1]), Decimal(r[2])) for r in rows] == [
        (start - 50, Decimal("1.08492"), Decimal(0)),  # the mid: forex has no last price
        (start, Decimal("1.08502"), Decimal(0)),
        (start, Decimal("1.08503"), Decimal(0)),
        (start + 7, Decimal("1.08505"), Decimal("2.00")),  # a trade tick: its last price and volume
    ]
    assert (Decimal(rows[1][3]), Decimal(rows[1][4])) == (Decimal("1.08501"), Decimal("1.08503"))
    assert {e.data["venue"] for e in events} == {"mt5"}
    assert listed.status_code == 200
    (shown,) = listed.json()
    assert shown["id"] == "desk-1" and shown["symbols"] == [symbol]
    assert shown["terminal"]["login"] == fake.login and shown["ticks"] >= 4


async def test_an_order_reaches_the_terminal_and_its_result_comes_back(
        bridge: Any, token_issuer: TokenIssuer) -> None:
    symbol = new_terminal_symbol()
    fake = FakeMetaTrader5()
    fake.add_symbol(symbol, digits=5, volume_step=0.01, filling_mode=2)
    fake.push_tick(symbol, now_ms(), 1.25010, 1.25013)
    owner = uuid4()
    async with bridge() as running_bridge:
        agent = fast_agent(Terminal(fake), running_bridge.ws_url + "/ws/mt5", token_issuer.token(sub=owner),
                           [symbol])
        async with running(agent):
            await asyncio.wait_for(agent.connected.wait(), 10)
            service = {"Authorization": f"Bearer {token_issuer.service_token('trading-engine')}"}
            response = await running_bridge.client.post("/internal/mt5/orders", headers=service, json={
                "owner": str(owner), "order": {"symbol": symbol, "side": "buy", "volume": "0.10",
                                               "sl": "1.24000", "comment": "strategy 7"}})
            limit = await running_bridge.client.post("/internal/mt5/orders", headers=service, json={
                "owner": str(owner), "agent_id": "desk-1",
                "order": {"symbol": symbol, "side": "sell", "type": "limit", "volume": 1, "price": "1.26"}})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True and result["retcode"] == FakeMetaTrader5.TRADE_RETCODE_DONE
    assert result["deal"] > 0 and result["price"] == "1.25013" and result["volume"] == "0.10"
    market, pending = fake.requests
    assert market == {"symbol": symbol, "volume": 0.1, "deviation": 10, "magic": 0, "comment": "strategy 7",
                      "type_time": fake.ORDER_TIME_GTC, "action": fake.TRADE_ACTION_DEAL,
                      "type": fake.ORDER_TYPE_BUY, "price": 1.25013, "type_filling": fake.ORDER_FILLING_IOC,
                      "sl": 1.24}
    assert limit.status_code == 200 and limit.json()["ok"] is True
    assert (pending["action"], pending["type"], pending["price"], pending["type_filling"]) == (
        fake.TRADE_ACTION_PENDING, fake.ORDER_TYPE_SELL_LIMIT, 1.26, fake.ORDER_FILLING_RETURN)


async def test_a_bad_token_is_refused_and_the_agent_stops(bridge: Any, token_issuer: TokenIssuer) -> None:
    fake = FakeMetaTrader5()
    async with bridge() as running_bridge:
        for token in ("not-a-token", token_issuer.service_token("trading-engine")):
            agent = fast_agent(Terminal(fake), running_bridge.ws_url + "/ws/mt5", token, [])
            async with running(agent) as task:
                with pytest.raises(Refused, match=r"refused the token \((401|403)\)"):
                    await asyncio.wait_for(task, 10)
            assert agent.connections == 0
    assert not fake.initialized  # the terminal connection is closed on the way out


async def test_the_agent_reconnects_after_the_server_restarts_and_ticks_resume(
        make_settings: Any, listen: Any, token_issuer: TokenIssuer, database_url: str) -> None:
    from aitrading.embedded import free_port

    symbol = new_terminal_symbol()
    fake = FakeMetaTrader5()
    fake.add_symbol(symbol, digits=3)
    fake.push_tick(symbol, now_ms(), 150.101, 150.105)
    settings = make_settings()
    port = free_port()
    admin_token = token_issuer.token(roles=("user", "admin"))
    agent = fast_agent(Terminal(fake), f"ws://127.0.0.1:{port}/ws/mt5", admin_token, [symbol])
    try:
        async with listen(f"md.tick.{symbol}") as listener, running(agent):
            async with serve_app(create_app(settings), port=port) as url:
                import httpx

                async with httpx.AsyncClient(base_url=url,
                                             headers={"Authorization": f"Bearer {admin_token}"}) as client:
                    await start_mt5_feed(client, [symbol])
                await asyncio.wait_for(agent.connected.wait(), 10)
                fake.push_tick(symbol, now_ms(), 150.102, 150.106)
                await listener.wait_for(lambda ev: len(subject_rows(ev)) >= 1)
            # The server is gone: the agent keeps reading the terminal's history and waits to reconnect.
            await eventually(lambda: not agent.connected.is_set())
            down_at = now_ms()
            fake.push_tick(symbol, down_at, 150.111, 150.115)
            await asyncio.sleep(0.3)
            async with serve_app(create_app(settings), port=port):
                await eventually(lambda: agent.connections == 2, 15)
                fake.push_tick(symbol, down_at + 5, 150.121, 150.125)
                rows = subject_rows(await listener.wait_for(
                    lambda ev: Decimal("150.123") in {Decimal(r[1]) for r in subject_rows(ev)}, 15))
    finally:
        engine = create_async_engine(to_async_url(database_url))
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE'))
        await engine.dispose()
    # The tick that arrived while the server was down is delivered after the reconnect, in order.
    assert [Decimal(r[1]) for r in rows[-2:]] == [Decimal("150.113"), Decimal("150.123")]


# --- the agent's own parts ---


async def test_the_terminal_reads_each_tick_once_even_when_several_share_a_millisecond() -> None:
    fake = FakeMetaTrader5()
    fake.add_symbol("EURUSD", digits=5)
    fake.push_tick("EURUSD", 1_700_000_000_100, 1.1, 1.2)
    terminal = Terminal(fake)
    try:
        assert await terminal.call(terminal.open)
        assert await terminal.call(terminal.select, "EURUSD") is None
        assert await terminal.call(terminal.select, "NOPE") == "symbol_select failed: -4 Terminal: Not found"

        async def read() -> list[tuple[int, str | None]]:
            rows, moved, _ = await terminal.call(terminal.collect, ["EURUSD"])
            terminal.cursors.update(moved)
            return [(r["time_msc"], r["bid"]) for r in rows]

        assert await read() == [(1_700_000_000_100, "1.10000")]
        fake.push_tick("EURUSD", 1_700_000_000_100, 1.3, 1.4)
        fake.push_tick("EURUSD", 1_700_000_000_900, 1.5, 1.6)
        assert await read() == [(1_700_000_000_100, "1.30000"), (1_700_000_000_900, "1.50000")]
        assert await read() == []
        fake.push_tick("EURUSD", 1_700_000_000_900, 1.7, 1.8)
        assert await read() == [(1_700_000_000_900, "1.70000")]
    finally:
        terminal.close()


async def test_a_terminal_that_will_not_start_stops_the_agent() -> None:
    from mt5_agent.agent import TerminalError

    fake = FakeMetaTrader5()
    fake.refuse_initialize = True
    agent = fast_agent(Terminal(fake), "ws://127.0.0.1:9/ws/mt5", "token", ["EURUSD"])
    async with running(agent) as task:
        with pytest.raises(TerminalError, match="MetaTrader 5 did not initialize"):
            await asyncio.wait_for(task, 5)


def test_order_messages_are_checked_before_they_reach_the_terminal() -> None:
    order = OrderRequest.parse({"symbol": "EURUSD", "side": "buy", "type": "stop_limit", "volume": "0.5",
                                "price": "1.1", "stop_price": 1.2})
    assert (order.volume, order.price, order.stop_price) == (Decimal("0.5"), Decimal("1.1"), Decimal("1.2"))
    for bad, field in [({"symbol": "EURUSD", "side": "hold", "volume": 1}, "order.side"),
                       ({"symbol": "EURUSD", "side": "buy", "volume": 0}, "order.volume"),
                       ({"symbol": "EURUSD", "side": "buy", "volume": 1, "type": "limit"}, "order.price"),
                       ({"side": "buy", "volume": 1}, "order.symbol")]:
        with pytest.raises(ValueError, match=field):
            OrderRequest.parse(bad)


def test_terminal_numbers_travel_as_the_decimals_the_terminal_shows() -> None:
    assert decimal_text(1.0850299999999999, 5) == "1.08503"
    assert decimal_text(0.0, 5) is None
    assert digits_of_step(0.01) == 2 and digits_of_step(1.0) == 0 and digits_of_step(0.001) == 3

