"""`/ws/market?symbols=SPX,BTC-USDT`: live ticks and closed bars to WebSocket clients.

Fed by one core NATS subscription on `md.>` per instance (its own connection, so a burst to clients
never queues behind the service's publishing), so any replica serves every feed's symbols. A message
is parsed only when some client of this instance wants its symbol, and each outgoing JSON message is
encoded once for all its clients.

Each client has a bounded send queue: a client that cannot keep up is disconnected (close 1013, "too
slow") instead of slowing the others down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from typing import Any

import nats
import nats.errors
import orjson
import structlog
from fastapi import APIRouter, WebSocket
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from starlette.websockets import WebSocketDisconnect

from aitrading.errors import Invalid, Unavailable
from aitrading.market.bars import ms_to_datetime
from aitrading.market.wire import BARS, TICKS
from aitrading.metrics import ServiceMetrics
from aitrading.streams import subject_token
from data_bridge.normalization import canonical_symbol
from data_bridge.websocket_auth import authenticate, deny

router = APIRouter()
_log = structlog.get_logger("data_bridge.market_stream")

TRY_AGAIN_LATER = 1013  # RFC 6455: the server is overloaded — here, for this client
MAX_SYMBOLS = 100
CLOSE_WAIT_S = 10.0


def _iso(time_ms: int) -> str:
    return ms_to_datetime(time_ms).isoformat().replace("+00:00", "Z")


def tick_messages(data: dict[str, Any]) -> list[bytes]:
    """One `{"type": "tick"}` message per row of an `md.ticks` event's data."""
    symbol, venue, synthetic = data["symbol"], data.get("venue", ""), bool(data.get("synthetic", False))
    return [orjson.dumps({"type": "tick", "symbol": symbol, "venue": venue, "synthetic": synthetic,
                          "time": _iso(row[0]), "time_ms": row[0], "price": row[1], "size": row[2],
                          "bid": row[3], "ask": row[4]})
            for row in data["ticks"]]


def bar_messages(data: dict[str, Any]) -> list[bytes]:
    symbol, venue, synthetic = data["symbol"], data.get("venue", ""), bool(data.get("synthetic", False))
    timeframe = data["timeframe"]
    return [orjson.dumps({"type": "bar", "symbol": symbol, "venue": venue, "synthetic": synthetic,
                          "timeframe": timeframe, "time": _iso(row[0]), "time_ms": row[0], "open": row[1],
                          "high": row[2], "low": row[3], "close": row[4], "volume": row[5]})
            for row in data["bars"]]


class MarketClient:
    """One WebSocket client: its symbols (as subject tokens) and its queue, bounded in messages.

    Messages are queued in the batches they arrived in (one NATS event each), so a burst costs one
    queue operation, not one per tick.
    """

    def __init__(self, tokens: set[str], queue_size: int) -> None:
        self.tokens = tokens
        self.limit = queue_size
        self.queued = 0
        self.batches: deque[list[bytes]] = deque()
        self.ready = asyncio.Event()
        self.too_slow = asyncio.Event()

    def offer(self, messages: list[bytes]) -> None:
        if self.too_slow.is_set():
            return
        if self.queued + len(messages) > self.limit:
            self.too_slow.set()
            return
        self.batches.append(messages)
        self.queued += len(messages)
        self.ready.set()

    async def take(self) -> list[bytes]:
        """The oldest batch; its messages stay counted until `sent` says each went out."""
        while not self.batches:
            self.ready.clear()
            await self.ready.wait()
        return self.batches.popleft()

    def sent(self) -> None:
        self.queued -= 1


class MarketFanout:
    name = "market-fanout"

    def __init__(self, nats_url: str, *, connection_name: str, metrics: ServiceMetrics) -> None:
        self.nats_url = nats_url
        self.connection_name = connection_name
        self._nc: NatsClient | None = None
        self._clients: dict[str, set[MarketClient]] = defaultdict(set)
        self.clients = metrics.gauge("data_bridge_market_clients", "Connected /ws/market clients")
        self.slow = metrics.counter("data_bridge_market_slow_clients_total",
                                    "/ws/market clients disconnected for not keeping up")

    async def start(self) -> None:
        self._nc = await nats.connect(self.nats_url, name=self.connection_name, max_reconnect_attempts=-1,
                                      reconnect_time_wait=1)
        await self._nc.subscribe("md.>", cb=self._deliver)

    async def stop(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.drain()
            await nc.close()

    async def check(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise Unavailable("the market fan-out is not connected to NATS")

    def join(self, client: MarketClient) -> None:
        for token in client.tokens:
            self._clients[token].add(client)
        self.clients.inc()

    def leave(self, client: MarketClient) -> None:
        for token in client.tokens:
            members = self._clients.get(token)
            if members is not None:
                members.discard(client)
                if not members:
                    del self._clients[token]
        self.clients.dec()

    async def _deliver(self, msg: Msg) -> None:
        # md.tick.<TOKEN> | md.bar.<timeframe>.<TOKEN>: decide from the subject before parsing anything.
        parts = msg.subject.split(".")
        if len(parts) == 3 and parts[1] == "tick":
            token = parts[2]
        elif len(parts) == 4 and parts[1] == "bar":
            token = parts[3]
        else:
            return
        members = self._clients.get(token)
        if not members:
            return
        try:
            envelope = orjson.loads(msg.data)
            kind, data = envelope["type"], envelope["data"]
            if kind == TICKS:
                messages = tick_messages(data)
            elif kind == BARS:
                messages = bar_messages(data)
            else:
                return
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            _log.warning("unreadable market event skipped", nats_subject=msg.subject, error=repr(exc))
            return
        for client in list(members):
            client.offer(messages)


def _tokens(raw: str | None) -> set[str]:
    names = [name for name in (raw or "").split(",") if name.strip()]
    if not names:
        raise Invalid("name the symbols: /ws/market?symbols=SPX,BTC-USDT",
                      errors=[{"field": "symbols", "reason": "at least one symbol"}])
    if len(names) > MAX_SYMBOLS:
        raise Invalid(f"at most {MAX_SYMBOLS} symbols per connection",
                      errors=[{"field": "symbols", "reason": f"more than {MAX_SYMBOLS}"}])
    return {subject_token(canonical_symbol(name, field="symbols")) for name in names}


@router.websocket("/ws/market")
async def market(websocket: WebSocket) -> None:
    principal = await authenticate(websocket)
    if principal is None:
        return
    try:
        tokens = _tokens(websocket.query_params.get("symbols"))
    except Invalid as exc:
        await deny(websocket, exc)
        return
    fanout: MarketFanout = websocket.app.state.market_fanout
    client = MarketClient(tokens, websocket.app.state.settings.market_queue_size)
    await websocket.accept()
    fanout.join(client)
    writer = asyncio.create_task(_write(websocket, client), name="market-writer")
    reader = asyncio.create_task(_read(websocket), name="market-reader")
    slow = asyncio.create_task(client.too_slow.wait(), name="market-slow")
    try:
        await asyncio.wait({writer, reader, slow}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        fanout.leave(client)
        for task in (writer, reader, slow):
            task.cancel()
        for task in (writer, reader, slow):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                await task
    if client.too_slow.is_set():
        fanout.slow.inc()
        _log.info("market client too slow; disconnected", caller=str(principal.id))
        # The close frame queues behind what the client has not read; if it never reads, give up
        # waiting and let the server drop the connection.
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect, TimeoutError):
            await asyncio.wait_for(websocket.close(code=TRY_AGAIN_LATER, reason="too slow"), CLOSE_WAIT_S)


async def _write(websocket: WebSocket, client: MarketClient) -> None:
    while True:
        for message in await client.take():
            await websocket.send_text(message.decode())
            client.sent()


async def _read(websocket: WebSocket) -> None:
    """Clients send nothing meaningful; reading notices the disconnect."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
