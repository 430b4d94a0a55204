"""`/ws/ingest`: ticks pushed in over a WebSocket by admins and services, many per message.

A message is `{"symbol": "BTC/USDT", "venue": "binance", "ticks": [[time_ms, price, size, bid, ask],
...]}` (strings or numbers). It goes through the same normalization → quality → aggregation →
publishing as any feed; the connection is a transient feed (kind "ingest") listed in GET /feeds while
it is open. Messages are not answered (fire and forget): the server sends `{"type": "stats",
"accepted": n, "dropped": m}` (totals of the connection) every `ingest_stats_interval_s` when they
changed, and `{"type": "error", "reason": ...}` for a message it could not use at all.

This is the throughput path: one orjson parse per message and one synchronous pass over its rows,
no await per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from aitrading.errors import Invalid
from data_bridge.feed_manager import INGEST, FeedManager
from data_bridge.feeds import FeedContext
from data_bridge.normalization import canonical_symbol
from data_bridge.pipeline import Pipeline
from data_bridge.publishing import Publisher
from data_bridge.settings import Settings
from data_bridge.websocket_auth import admin_or_service, authenticate

router = APIRouter()
_log = structlog.get_logger("data_bridge.ingest")

MAX_VENUE_LENGTH = 64
MAX_LISTED_SYMBOLS = 1000  # symbols shown on the connection's feed entry


class IngestConnection:
    def __init__(self, websocket: WebSocket, pipeline: Pipeline, context: FeedContext) -> None:
        self.websocket = websocket
        self.pipeline = pipeline
        self.context = context
        self.accepted = 0
        self.dropped = 0
        self._reported = (0, 0)
        self._send_lock = asyncio.Lock()
        self._symbols: set[str] = set()

    def handle(self, raw: bytes | str) -> str | None:
        """Process one message; the reason it was refused as a whole, or None."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "the message is not JSON"
        if type(message) is not dict:
            return "a message is an object {symbol, venue, ticks}"
        ticks = message.get("ticks")
        if type(ticks) is not list:
            return "ticks must be a list of [time_ms, price, size, bid, ask] rows"
        try:
            symbol = canonical_symbol(message.get("symbol"))
        except Invalid as exc:
            return exc.detail
        venue = message.get("venue") or self.context.venue
        if type(venue) is not str or len(venue) > MAX_VENUE_LENGTH:
            return f"venue must be a string of at most {MAX_VENUE_LENGTH} characters"
        if venue != self.context.venue:
            self.context.venue = venue
        if symbol not in self._symbols and len(self._symbols) < MAX_LISTED_SYMBOLS:
            self._symbols.add(symbol)
            self.context.symbols.append(symbol)
        result = self.pipeline.ingest(self.context, symbol, venue, ticks)
        self.accepted += result.accepted
        self.dropped += result.dropped
        return None

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(orjson.dumps(message).decode())

    async def report(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            counts = (self.accepted, self.dropped)
            if counts != self._reported:
                self._reported = counts
                await self.send({"type": "stats", "accepted": counts[0], "dropped": counts[1]})


@router.websocket("/ws/ingest")
async def ingest(websocket: WebSocket) -> None:
    principal = await authenticate(websocket, admin_or_service,
                                   "pushing ticks needs an admin or service token")
    if principal is None:
        return
    app = websocket.app
    settings: Settings = app.state.settings
    manager: FeedManager = app.state.feeds
    await websocket.accept()
    context = manager.open_transient(venue=INGEST)
    connection = IngestConnection(websocket, app.state.pipeline, context)
    publisher: Publisher = app.state.publisher
    reporter = asyncio.create_task(connection.report(settings.ingest_stats_interval_s), name="ingest-stats")
    log = _log.bind(feed=str(context.id), caller=str(principal.id))
    log.info("ingest connection opened")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("bytes") or message.get("text")
            if raw is None:
                continue
            refused = connection.handle(raw)
            if refused is not None:
                context.counters.error(refused)
                await connection.send({"type": "error", "reason": refused})
            # One yield per message lets the publisher run between messages already buffered; when
            # NATS falls behind, `room` stops reading, and TCP slows the client down.
            await asyncio.sleep(0)
            await publisher.room()
    except WebSocketDisconnect:
        pass
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await reporter
        manager.close_transient(context)
        log.info("ingest connection closed", accepted=connection.accepted, dropped=connection.dropped)
