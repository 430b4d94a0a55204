"""A local stand-in for Binance's public spot REST API, close enough for ccxt's binance client.

It serves what ccxt calls for markets, time, trades (aggTrades), the 24h ticker and klines, with the
same JSON shapes and query semantics (startTime/endTime/limit, oldest first), from data the test puts in.
`fail_next(status, n)` makes the next n market-data requests answer with that HTTP status, as Binance
does under load (429 with its -1003 body, 503 as plain text). Every request is logged for assertions.
It also speaks Binance's market streams (`/ws/<n>`: SUBSCRIBE to `<symbol>@trade`, then trade events)
for ccxt.pro: `push_trade` sends a trade to the subscribers, `drop_streams` cuts every connection.
Point ccxt at it with the `urls` override: `urls_for(base_url)`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocketDisconnect

MINUTE_MS = 60_000
_MARKET_DATA = frozenset({"/api/v3/aggTrades", "/api/v3/ticker/24hr", "/api/v3/klines"})


def urls_for(base_url: str) -> dict[str, str]:
    """The ccxt binance `urls['api']` entries to point at this server (spot, and the futures market lists)."""
    return {"public": f"{base_url}/api/v3", "fapiPublic": f"{base_url}/fapi/v1",
            "dapiPublic": f"{base_url}/dapi/v1"}


def stream_urls_for(base_url: str) -> dict[str, str | dict[str, str]]:
    """Also the websocket entry ccxt.pro uses for spot streams."""
    return {**urls_for(base_url), "ws": {"spot": "ws" + base_url[4:] + "/ws"}}


@dataclass
class FakeTrade:
    id: int
    time_ms: int
    price: str
    qty: str
    buyer_maker: bool = False


@dataclass
class FakeBinance:
    symbols: dict[str, tuple[str, str]] = field(default_factory=dict)  # BTCUSDT → (BTC, USDT)
    trades: dict[str, list[FakeTrade]] = field(default_factory=dict)
    klines: dict[str, list[list[Any]]] = field(default_factory=dict)  # 1m klines as Binance sends them
    tickers: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    clock_offset_ms: int = 0
    streams: dict[WebSocket, set[str]] = field(default_factory=dict)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def add_market(self, base: str, quote: str) -> str:
        market_id = base + quote
        self.symbols[market_id] = (base, quote)
        self.trades.setdefault(market_id, [])
        self.klines.setdefault(market_id, [])
        return market_id

    def add_trades(self, market_id: str, rows: list[tuple[int, str, str]]) -> None:
        """Append trades (time_ms, price, qty) with consecutive aggregate ids."""
        book = self.trades[market_id]
        next_id = book[-1].id + 1 if book else 1000
        for offset, (time_ms, price, qty) in enumerate(rows):
            book.append(FakeTrade(next_id + offset, time_ms, price, qty, buyer_maker=offset % 2 == 1))

    def set_klines(self, market_id: str, start_ms: int, rows: list[tuple[str, str, str, str, str]]) -> None:
        """1m klines from `start_ms`, one per minute: (open, high, low, close, volume)."""
        self.klines[market_id] = [
            [start_ms + i * MINUTE_MS, o, h, low, c, v, start_ms + (i + 1) * MINUTE_MS - 1,
             str(Decimal(c) * Decimal(v)), 10, "0", "0", "0"]
            for i, (o, h, low, c, v) in enumerate(rows)]

    async def push_trade(self, market_id: str, time_ms: int, price: str, qty: str) -> None:
        """Record a trade and send it to every connection subscribed to its trade stream."""
        self.add_trades(market_id, [(time_ms, price, qty)])
        trade = self.trades[market_id][-1]
        event = {"e": "trade", "E": time_ms + 1, "s": market_id, "t": trade.id, "p": price, "q": qty,
                 "T": time_ms, "m": trade.buyer_maker, "M": True}
        for websocket, names in list(self.streams.items()):
            if f"{market_id.lower()}@trade" in names:
                await websocket.send_json(event)

    async def drop_streams(self) -> None:
        self.subscribed.clear()
        for websocket in list(self.streams):
            self.streams.pop(websocket, None)
            with suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1011)

    def fail_next(self, status: int, count: int = 1) -> None:
        self.failures.extend([status] * count)

    def calls(self, path: str) -> list[dict[str, str]]:
        return [params for p, params in self.requests if p == path]


def _market(market_id: str, base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": market_id, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
             "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def create_fake_binance(state: FakeBinance) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def log_and_fail(request: Request, call_next: Any) -> Response:
        state.requests.append((request.url.path, dict(request.query_params)))
        if state.failures and request.url.path in _MARKET_DATA:
            status = state.failures.pop(0)
            if status == 429:
                body = {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 requests "
                                              "per minute."}
                return JSONResponse(body, status_code=429, headers={"Retry-After": "1"})
            return PlainTextResponse("Service Unavailable.", status_code=status)
        response: Response = await call_next(request)
        return response

    def unknown_symbol() -> JSONResponse:
        return JSONResponse({"code": -1121, "msg": "Invalid symbol."}, status_code=400)

    @app.get("/api/v3/exchangeInfo")
    async def exchange_info() -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": state.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "symbols": [_market(m, b, q) for m, (b, q) in state.symbols.items()]}

    @app.get("/fapi/v1/exchangeInfo")
    @app.get("/dapi/v1/exchangeInfo")
    async def futures_info() -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": state.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "assets": [], "symbols": []}

    @app.get("/api/v3/time")
    async def server_time() -> dict[str, int]:
        return {"serverTime": state.now_ms()}

    @app.get("/api/v3/aggTrades", response_model=None)
    async def agg_trades(symbol: str, startTime: int | None = None, endTime: int | None = None,  # noqa: N803
                         limit: int = 500) -> list[dict[str, Any]] | JSONResponse:
        if symbol not in state.trades:
            return unknown_symbol()
        book = state.trades[symbol]
        if startTime is not None:
            end = endTime if endTime is not None else startTime + 3_600_000
            chosen = [t for t in book if startTime <= t.time_ms <= end][:limit]
        else:
            chosen = book[-limit:]
        return [{"a": t.id, "p": t.price, "q": t.qty, "f": t.id * 3, "l": t.id * 3 + 2, "T": t.time_ms,
                 "m": t.buyer_maker, "M": True} for t in chosen]

    @app.get("/api/v3/ticker/24hr", response_model=None)
    async def ticker_24hr(symbol: str) -> dict[str, Any] | JSONResponse:
        if symbol not in state.symbols:
            return unknown_symbol()
        quote = state.tickers.get(symbol, {"last": "100.00", "bid": "99.99", "ask": "100.01"})
        now = state.now_ms()
        return {"symbol": symbol, "priceChange": "0.00000000", "priceChangePercent": "0.000",
                "weightedAvgPrice": quote["last"], "prevClosePrice": quote["last"],
                "lastPrice": quote["last"],
                "lastQty": "0.01000000", "bidPrice": quote["bid"], "bidQty": "1.00000000",
                "askPrice": quote["ask"], "askQty": "1.00000000", "openPrice": quote["last"],
                "highPrice": quote["last"], "lowPrice": quote["last"], "volume": "10.00000000",
                "quoteVolume": "1000.00000000", "openTime": now - 86_400_000, "closeTime": now,
                "firstId": 1, "lastId": 10, "count": 10}

    @app.get("/api/v3/klines", response_model=None)
    async def klines(symbol: str, interval: str, startTime: int | None = None,  # noqa: N803
                     endTime: int | None = None, limit: int = 500) -> list[list[Any]] | JSONResponse:  # noqa: N803
        if symbol not in state.klines:
            return unknown_symbol()
        if interval != "1m":
            return JSONResponse({"code": -1120, "msg": "Invalid interval."}, status_code=400)
        rows = state.klines[symbol]
        if startTime is not None:
            rows = [k for k in rows if k[0] >= startTime]
        if endTime is not None:
            rows = [k for k in rows if k[0] <= endTime]
        return rows[:limit] if startTime is not None else rows[-limit:]

    @app.websocket("/ws/{stream}")
    async def market_streams(websocket: WebSocket, stream: str) -> None:
        await websocket.accept()
        names: set[str] = set()
        state.streams[websocket] = names
        try:
            while True:
                request = await websocket.receive_json()
                if request.get("method") == "SUBSCRIBE":
                    names.update(request.get("params", []))
                    await websocket.send_json({"result": None, "id": request.get("id")})
                    state.subscribed.set()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            state.streams.pop(websocket, None)

    return app
