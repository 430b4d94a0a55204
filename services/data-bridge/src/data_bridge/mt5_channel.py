"""`/ws/mt5`, where MT5 agents connect; the internal order route; the caller's list of agents.

An agent authenticates with its owner's token (`Authorization: Bearer` or `?token=`; through the
gateway an API key works too, exchanged there), says `hello` and is registered in `Mt5Agents`; its
`ticks` go to the MT5 feeds that trust it, its `order_result`s answer the orders sent to it. The
message shapes are agents/mt5-agent/mt5_agent/protocol.py's (documented in the agent's README).
The server pings every `PING_INTERVAL_S`; an agent that said nothing for `SILENCE_LIMIT_S` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any
from uuid import UUID

import orjson
import structlog
from fastapi import APIRouter, Depends, WebSocket
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from aitrading.auth import CurrentUser, Principal
from aitrading.errors import DomainError, Forbidden
from aitrading.service import from_state
from data_bridge.mt5_agents import (
    MAX_ORDER_TIMEOUT_S,
    MAX_SYMBOLS,
    ORDER_TIMEOUT_S,
    Mt5Agent,
    Mt5Agents,
    parse_ticks,
)
from data_bridge.websocket_auth import authenticate

router = APIRouter()
_log = structlog.get_logger("data_bridge.mt5_channel")

Agents = Annotated[Mt5Agents, Depends(from_state("mt5_agents"))]

PING_INTERVAL_S = 20.0
SILENCE_LIMIT_S = 90.0
HELLO_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
PROTOCOL_ERROR, GOING_AWAY = 1008, 1001


class SocketLink:
    """An agent's WebSocket as the registry sees it: JSON out, one writer at a time."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self.websocket.send_text(orjson.dumps(message).decode())

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state != WebSocketState.DISCONNECTED:
            await self.websocket.close(code=code, reason=reason[:120])


def _user_only(principal: Principal) -> bool:
    return not principal.is_service


@router.websocket("/ws/mt5")
async def mt5_socket(websocket: WebSocket) -> None:
    principal = await authenticate(websocket, _user_only,
                                   "an MT5 agent connects with its owner's token or API key, not a service's")
    if principal is None:
        return
    agents: Mt5Agents | None = websocket.app.state.mt5_agents
    await websocket.accept()
    link = SocketLink(websocket)
    if agents is None:
        await link.close(GOING_AWAY, "this data-bridge has no MT5 agent registry")
        return
    try:
        agent = await _hello(websocket, link, agents, principal)
    except (WebSocketDisconnect, TimeoutError):
        return
    except (DomainError, ValueError) as exc:
        with contextlib.suppress(Exception):
            await link.send({"type": "error", "detail": str(exc)})
            await link.close(PROTOCOL_ERROR, str(exc))
        return
    log = _log.bind(agent=agent.id, owner=str(agent.owner))
    log.info("MT5 agent connected", symbols=agent.symbols)
    pinger = asyncio.create_task(_ping(link, agent), name=f"mt5-ping:{agent.id}")
    try:
        await _receive(websocket, link, agents, agent)
    except WebSocketDisconnect:
        pass
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        agents.disconnect(agent)
        log.info("MT5 agent disconnected", ticks=agent.ticks, orders=agent.orders)


async def _hello(websocket: WebSocket, link: SocketLink, agents: Mt5Agents, principal: Principal) -> Mt5Agent:
    raw = await asyncio.wait_for(websocket.receive_text(), HELLO_TIMEOUT_S)
    message = orjson.loads(raw)
    if not isinstance(message, dict) or message.get("type") != "hello":
        raise ValueError("the first message of an agent is its hello")
    agent_id, terminal = message.get("agent_id"), message.get("terminal")
    symbols = message.get("symbols") or []
    if (not isinstance(symbols, list) or len(symbols) > MAX_SYMBOLS
            or not all(isinstance(s, str) for s in symbols)):
        raise ValueError(f"hello.symbols: a list of at most {MAX_SYMBOLS} terminal symbol names")
    version = message.get("version")
    agent = Mt5Agent(id=agent_id if isinstance(agent_id, str) else "", owner=principal.id,
                     owner_is_admin=principal.is_admin, link=link, symbols=list(dict.fromkeys(symbols)),
                     terminal=terminal if isinstance(terminal, dict) else {},
                     version=version if isinstance(version, str) else None)
    await agents.connect(agent)
    await link.send({"type": "welcome", "agent_id": agent.id, "owner": str(agent.owner),
                     "subscribe": agents.wanted_by(agent)})
    return agent


async def _receive(websocket: WebSocket, link: SocketLink, agents: Mt5Agents, agent: Mt5Agent) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text") or message.get("bytes")
        if raw is None:
            continue
        agent.seen()
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("a message is a JSON object with a type")
            await _handle(link, agents, agent, body)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            await link.send({"type": "error", "detail": str(exc)})


async def _handle(link: SocketLink, agents: Mt5Agents, agent: Mt5Agent, body: dict[str, Any]) -> None:
    kind = body.get("type")
    if kind == "ticks":
        ticks, unusable = parse_ticks(body.get("ticks"))
        if ticks:
            await agents.deliver(agent, ticks)
        if unusable:
            await link.send({"type": "error", "detail": f"{unusable} tick rows were not usable"})
    elif kind == "order_result":
        result = {k: v for k, v in body.items() if k not in ("type", "request_id")}
        agents.resolve(agent, body.get("request_id"), result)
    elif kind == "symbols":
        streaming, failed = body.get("streaming"), body.get("failed")
        if isinstance(streaming, list):
            agent.symbols = [s for s in streaming if isinstance(s, str)][:MAX_SYMBOLS]
        agent.failed_symbols = {str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {}
    elif kind == "ping":
        await link.send({"type": "pong", "id": body.get("id")})
    elif kind == "pong":
        pass  # last_seen is already updated
    else:
        raise ValueError(f"unknown message type {kind!r}")


async def _ping(link: SocketLink, agent: Mt5Agent) -> None:
    sequence = 0
    while True:
        await asyncio.sleep(PING_INTERVAL_S)
        silent_s = agent.seen_age_s()
        if silent_s > SILENCE_LIMIT_S:
            await link.close(GOING_AWAY, f"no message for {silent_s:.0f} s")
            return
        sequence += 1
        try:
            await link.send({"type": "ping", "id": sequence})
        except Exception:  # the receive loop notices the dead socket and ends the connection
            return


# --- HTTP: the caller's agents, and orders from other services ---------------------------------------


class OrderIn(BaseModel):
    owner: UUID = Field(description="the user whose agent places the order")
    agent_id: str | None = Field(None, description="one of the owner's agents; default: longest connected")
    order: dict[str, Any] = Field(description="symbol (terminal name), side, type, volume, price?, "
                                              "stop_price?, sl?, tp?, deviation?, magic?, comment?, "
                                              "filling?, time_in_force?, position? (the agent protocol)")
    timeout_s: float = Field(ORDER_TIMEOUT_S, gt=0, le=MAX_ORDER_TIMEOUT_S)


@router.get("/api/v1/feeds/mt5/agents", tags=["feeds"])
async def my_agents(user: CurrentUser, agents: Agents) -> list[dict[str, Any]]:
    return [agent.as_json() for agent in agents.agents_of(user.id)]


@router.post("/internal/mt5/orders", tags=["internal"])
async def send_order(body: OrderIn, caller: CurrentUser, agents: Agents) -> dict[str, Any]:
    if not caller.is_service:
        raise Forbidden("only services send orders to MT5 agents; users trade through the trading engine")
    return await agents.send_order(body.owner, body.agent_id, body.order, body.timeout_s)
