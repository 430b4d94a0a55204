"""A local stand-in for Binance's spot REST API, as ccxt's binance client uses it for trading.

Public: `GET /api/v3/ping`, `/api/v3/time`, `/api/v3/exchangeInfo` (the markets put in, with Binance's
filters). Signed (`X-MBX-APIKEY` header, `timestamp` within `recvWindow`, `signature` = HMAC-SHA256 with
the key's secret over the query string / form body exactly as sent, as Binance checks it):
`POST /api/v3/order` (MARKET fills at once at the market's price, with `fills`; LIMIT rests as NEW and
fills when `set_price` crosses it, or partly with `fill`), `GET /api/v3/order` (by `orderId` or
`origClientOrderId`; -2013 "Order does not exist." with HTTP 400), `DELETE /api/v3/order`,
`GET /api/v3/account` (balances: free and locked), `GET /api/v3/myTrades`.

Balances move with fills: a buy pays price times quantity plus the commission; funds of a resting LIMIT are
locked. The commission is `fee_rate` of the trade, charged in the quote asset, or in what was received
(base asset on a buy) when `commission_in_received` is set, as Binance does without BNB.
Errors carry Binance's bodies (`{"code": -2010, "msg": ...}`). `delay_s` makes every answer late (timeouts);
every request is logged in `requests` (method, path, params) for assertions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from aitrading.testing import serve_app

ZERO = Decimal(0)


@dataclass
class FakeOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str            # BUY / SELL
    type: str            # MARKET / LIMIT
    quantity: Decimal
    price: Decimal       # the limit price; 0 for MARKET
    time_in_force: str
    created_ms: int
    status: str = "NEW"
    executed: Decimal = ZERO
    quote_spent: Decimal = ZERO
    updated_ms: int = 0


@dataclass
class FakeTrade:
    trade_id: int
    order_id: int
    symbol: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool


@dataclass
class FakeBinance:
    keys: dict[str, str] = field(default_factory=dict)                     # apiKey → secret
    markets: dict[str, tuple[str, str]] = field(default_factory=dict)      # BTCUSDT → (BTC, USDT)
    prices: dict[str, Decimal] = field(default_factory=dict)               # last price per market
    balances: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # apiKey → asset → free
    locked: dict[str, dict[str, Decimal]] = field(default_factory=dict)    # apiKey → asset → locked
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    owners: dict[int, str] = field(default_factory=dict)                   # orderId → apiKey
    trades: list[FakeTrade] = field(default_factory=list)
    fee_rate: Decimal = Decimal("0.001")
    commission_in_received: bool = False
    delay_s: float = 0.0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000_001))
    _trade_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5_000_001))

    # --- set-up by tests ---

    def add_market(self, base: str, quote: str, price: str) -> str:
        market_id = base + quote
        self.markets[market_id] = (base, quote)
        self.prices[market_id] = Decimal(price)
        return market_id

    def add_key(self, api_key: str, secret: str, **balances: str) -> None:
        self.keys[api_key] = secret
        self.balances[api_key] = {asset: Decimal(amount) for asset, amount in balances.items()}
        self.locked[api_key] = {}

    def set_price(self, market_id: str, price: str) -> None:
        """Move the market: resting LIMIT orders the new price crosses fill completely at their price."""
        self.prices[market_id] = Decimal(price)
        for order in list(self.orders.values()):
            if order.symbol != market_id or order.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            crossed = (self.prices[market_id] <= order.price if order.side == "BUY"
                       else self.prices[market_id] >= order.price)
            if crossed:
                self.fill(order.order_id, order.quantity - order.executed)

    def fill(self, order_id: int, qty: str | Decimal) -> None:
        """Fill `qty` of a resting LIMIT order at its limit price, as a maker."""
        order = self.orders[order_id]
        self._trade(order, Decimal(qty), order.price, maker=True)

    def calls(self, method: str, path: str) -> list[dict[str, str]]:
        return [params for m, p, params in self.requests if (m, p) == (method, path)]

    # --- the exchange ---

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def _free(self, key: str, asset: str) -> Decimal:
        return self.balances[key].get(asset, ZERO)

    def _move(self, key: str, asset: str, amount: Decimal) -> None:
        self.balances[key][asset] = self._free(key, asset) + amount

    def _lock(self, key: str, asset: str, amount: Decimal) -> None:
        self._move(key, asset, -amount)
        self.locked[key][asset] = self.locked[key].get(asset, ZERO) + amount

    def _unlock(self, key: str, asset: str, amount: Decimal) -> None:
        self.locked[key][asset] = self.locked[key].get(asset, ZERO) - amount
        self._move(key, asset, amount)

    def _trade(self, order: FakeOrder, qty: Decimal, price: Decimal, *, maker: bool) -> FakeTrade:
        key = self.owners[order.order_id]
        base, quote = self.markets[order.symbol]
        cost = qty * price
        buy = order.side == "BUY"
        if order.type == "LIMIT":  # the part filled leaves the locked funds
            self._unlock(key, quote if buy else base, qty * order.price if buy else qty)
        received_asset, received = (base, qty) if buy else (quote, cost)
        if self.commission_in_received:
            commission, commission_asset = received * self.fee_rate, received_asset
        else:
            commission, commission_asset = cost * self.fee_rate, quote
        if buy:
            self._move(key, quote, -cost)
            self._move(key, base, qty)
        else:
            self._move(key, base, -qty)
            self._move(key, quote, cost)
        self._move(key, commission_asset, -commission)
        now = self.now_ms()
        trade = FakeTrade(next(self._trade_ids), order.order_id, order.symbol, price, qty, commission,
                          commission_asset, now, buy, maker)
        self.trades.append(trade)
        order.executed += qty
        order.quote_spent += cost
        order.updated_ms = now
        order.status = "FILLED" if order.executed == order.quantity else "PARTIALLY_FILLED"
        return trade

    def place(self, key: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        symbol = params.get("symbol", "")
        if symbol not in self.markets:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        client_id = params.get("newClientOrderId") or f"x-{next(self._ids)}"
        if any(o.client_order_id == client_id and self.owners[o.order_id] == key
               and o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders.values()):
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        kind, side = params.get("type", ""), params.get("side", "")
        if kind not in ("MARKET", "LIMIT"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        if side not in ("BUY", "SELL"):
            return 400, {"code": -1117, "msg": "Invalid side."}
        try:
            quantity = Decimal(params["quantity"])
            price = Decimal(params["price"]) if kind == "LIMIT" else ZERO
        except (KeyError, ArithmeticError):
            return 400, {"code": -1102, "msg": "Mandatory parameter 'quantity' was not sent, was empty/null, "
                                               "or malformed."}
        if kind == "LIMIT" and "timeInForce" not in params:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'timeInForce' was not sent, was "
                                               "empty/null, or malformed."}
        base, quote = self.markets[symbol]
        market_price = self.prices[symbol]
        need_asset, need = ((quote, quantity * (price or market_price) * (1 + self.fee_rate))
                            if side == "BUY" else (base, quantity))
        if self._free(key, need_asset) < need:
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        now = self.now_ms()
        order = FakeOrder(next(self._ids), client_id, symbol, side, kind, quantity, price,
                          params.get("timeInForce", "GTC"), now, updated_ms=now)
        self.orders[order.order_id] = order
        self.owners[order.order_id] = key
        fills: list[FakeTrade] = []
        if kind == "MARKET":
            fills.append(self._trade(order, quantity, market_price, maker=False))
        else:
            self._lock(key, quote if side == "BUY" else base, quantity * price if side == "BUY" else quantity)
            crossed = market_price <= price if side == "BUY" else market_price >= price
            if crossed:  # a marketable limit takes at its limit price
                fills.append(self._trade(order, quantity, price, maker=False))
        body = {**self.order_json(order), "transactTime": now,
                "fills": [{"price": str(t.price), "qty": str(t.qty), "commission": str(t.commission),
                           "commissionAsset": t.commission_asset, "tradeId": t.trade_id} for t in fills]}
        for key_name in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty", "origQuoteOrderQty"):
            body.pop(key_name, None)
        return 200, body

    def find(self, key: str, params: dict[str, str]) -> FakeOrder | None:
        symbol = params.get("symbol")
        if "orderId" in params:
            order = self.orders.get(int(params["orderId"]))
        elif "origClientOrderId" in params:
            order = next((o for o in reversed(self.orders.values())
                          if o.client_order_id == params["origClientOrderId"]), None)
        else:
            return None
        if order is None or order.symbol != symbol or self.owners[order.order_id] != key:
            return None
        return order

    def cancel(self, key: str, order: FakeOrder) -> bool:
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            return False
        base, quote = self.markets[order.symbol]
        rest = order.quantity - order.executed
        self._unlock(key, quote if order.side == "BUY" else base,
                     rest * order.price if order.side == "BUY" else rest)
        order.status = "CANCELED"
        order.updated_ms = self.now_ms()
        return True

    def order_json(self, order: FakeOrder) -> dict[str, Any]:
        return {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
                "clientOrderId": order.client_order_id, "price": f"{order.price:.8f}",
                "origQty": f"{order.quantity:.8f}", "executedQty": f"{order.executed:.8f}",
                "cummulativeQuoteQty": f"{order.quote_spent:.8f}", "status": order.status,
                "timeInForce": order.time_in_force, "type": order.type, "side": order.side,
                "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": order.created_ms,
                "updateTime": order.updated_ms, "isWorking": True, "workingTime": order.created_ms,
                "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "EXPIRE_MAKER"}


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


def _error(status: int, code: int, msg: str) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg}, status_code=status)


def create_fake_binance(state: FakeBinance) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def log_and_delay(request: Request, call_next: Any) -> Response:
        body = (await request.body()).decode()
        params = {**dict(parse_qsl(request.url.query)), **dict(parse_qsl(body))}
        state.requests.append((request.method, request.url.path, params))
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        response: Response = await call_next(request)
        return response

    async def signed(request: Request) -> tuple[str, dict[str, str]] | JSONResponse:
        """The caller's API key and parameters, or Binance's refusal."""
        key = request.headers.get("X-MBX-APIKEY", "")
        if key not in state.keys:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        in_query = request.method in ("GET", "DELETE")
        payload = request.url.query if in_query else (await request.body()).decode()
        signed_part, _, signature = payload.rpartition("&signature=")
        expected = hmac.new(state.keys[key].encode(), signed_part.encode(), hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(signature, expected):
            return _error(401, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(signed_part))
        try:
            timestamp, window = int(params["timestamp"]), int(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            return _error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or "
                                      "malformed.")
        if abs(state.now_ms() - timestamp) > window:
            return _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return key, params

    @app.get("/api/v3/ping")
    async def ping() -> dict[str, Any]:
        return {}

    @app.get("/api/v3/time")
    async def server_time() -> dict[str, int]:
        return {"serverTime": state.now_ms()}

    @app.get("/api/v3/exchangeInfo")
    async def exchange_info() -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": state.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "symbols": [_market(m, b, q) for m, (b, q) in state.markets.items()]}

    @app.post("/api/v3/order", response_model=None)
    async def new_order(request: Request) -> JSONResponse:
        caller = await signed(request)
        if isinstance(caller, JSONResponse):
            return caller
        status, body = state.place(*caller)
        return JSONResponse(body, status_code=status)

    @app.get("/api/v3/order", response_model=None)
    async def query_order(request: Request) -> JSONResponse:
        caller = await signed(request)
        if isinstance(caller, JSONResponse):
            return caller
        order = state.find(*caller)
        if order is None:
            return _error(400, -2013, "Order does not exist.")
        return JSONResponse(state.order_json(order))

    @app.delete("/api/v3/order", response_model=None)
    async def cancel_order(request: Request) -> JSONResponse:
        caller = await signed(request)
        if isinstance(caller, JSONResponse):
            return caller
        key, params = caller
        order = state.find(key, params)
        if order is None or not state.cancel(key, order):
            return _error(400, -2011, "Unknown order sent.")
        body = {**state.order_json(order), "origClientOrderId": order.client_order_id,
                "clientOrderId": params.get("newClientOrderId", f"cancel-{order.order_id}"),
                "transactTime": state.now_ms()}
        return JSONResponse(body)

    @app.get("/api/v3/account", response_model=None)
    async def account(request: Request) -> JSONResponse:
        caller = await signed(request)
        if isinstance(caller, JSONResponse):
            return caller
        key = caller[0]
        assets = sorted(set(state.balances[key]) | set(state.locked[key]))
        return JSONResponse({
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": state.now_ms(),
            "accountType": "SPOT", "permissions": ["SPOT"], "uid": 354937868,
            "balances": [{"asset": a, "free": f"{state.balances[key].get(a, ZERO):.8f}",
                          "locked": f"{state.locked[key].get(a, ZERO):.8f}"} for a in assets]})

    @app.get("/api/v3/myTrades", response_model=None)
    async def my_trades(request: Request) -> JSONResponse | list[dict[str, Any]]:
        caller = await signed(request)
        if isinstance(caller, JSONResponse):
            return caller
        key, params = caller
        symbol = params.get("symbol")
        if symbol not in state.markets:
            return _error(400, -1121, "Invalid symbol.")
        order_id = int(params["orderId"]) if "orderId" in params else None
        rows = [t for t in state.trades if t.symbol == symbol and state.owners[t.order_id] == key
                and (order_id is None or t.order_id == order_id)]
        return [{"symbol": t.symbol, "id": t.trade_id, "orderId": t.order_id, "orderListId": -1,
                 "price": f"{t.price:.8f}", "qty": f"{t.qty:.8f}", "quoteQty": f"{t.price * t.qty:.8f}",
                 "commission": f"{t.commission:.8f}", "commissionAsset": t.commission_asset,
                 "time": t.time_ms, "isBuyer": t.is_buyer, "isMaker": t.is_maker, "isBestMatch": True}
                for t in rows]

    return app


@asynccontextmanager
async def running_fake_binance() -> AsyncIterator[tuple[FakeBinance, str]]:
    """A fake Binance on a real socket, with BTC/USDT at 50000: (its state, its base URL)."""
    state = FakeBinance()
    state.add_market("BTC", "USDT", "50000")
    async with serve_app(create_fake_binance(state)) as url:
        yield state, url
