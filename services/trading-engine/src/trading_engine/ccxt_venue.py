"""CCXT exchanges as a venue: orders, their executions and balances on any exchange ccxt supports.

One `ccxt.async_support` client per venue account (rate limited by ccxt, the engine's timeout, sandbox
mode when the account asks for it, markets loaded once). Spot only: `defaultType` is spot and, for
Binance, only spot markets are listed and the wallet endpoints (`sapi`) are never called.

Choices (each documented where made):
- The exchange's client order id is `order.id.hex`, so an order sent before a crash is found again by it
  (`fetch` with no `venue_order_id`) and never placed twice.
- Market and limit orders only: stop and stop-limit orders are refused with a 422 before anything is
  sent, since ccxt has no uniform stop semantics across exchanges; `time_in_force=day` likewise.
- Executions are the exchange's own trades (their trade ids are the dedupe keys): the trades carried by
  the order (Binance's create answer), else `fetch_order_trades` / `fetch_my_trades` for the order. An
  exchange that reports no trades at all gets one synthetic execution per change of the order's
  cumulative `filled`, keyed `"<venue order id>:<filled>"`, priced so the order's average comes out as
  the exchange's average. While the trades seen add up to less than `filled` (trade history lagging the
  order), the report stays open (`partially_filled`/`accepted`) so it is fetched again, never closed with
  executions missing.
- Fees are counted in the quote currency: a fee in the quote currency as it is, a fee in the base
  currency (Binance without BNB) at the trade's price; a fee in a third currency (BNB) is not counted.
- Network failures and timeouts raise `VenueUnavailable` (outcome unknown; the engine reconciles).
  The exchange refusing an order (credentials, funds, an invalid order, an unknown market) is a
  `rejected` report with its reason; for balances it is a `VenueRefused` (422).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import ccxt
import ccxt.async_support as ccxt_async
import structlog

from aitrading.decimals import decimal_or_none
from aitrading.trading.orders import Order, OrderStatus, OrderType, TimeInForce
from trading_engine.venue_registry import Holding, VenueNotSupported, VenueRefused
from trading_engine.venues import Execution, VenueAccount, VenueReport, VenueUnavailable

_log = structlog.get_logger("trading_engine.ccxt_venue")

ZERO = Decimal(0)

# ccxt's unified order statuses → ours (open becomes accepted or partially_filled by what is filled).
_STATUSES = {"closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
             "rejected": OrderStatus.REJECTED, "expired": OrderStatus.EXPIRED}
_TIME_IN_FORCE = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}

# Per-exchange options that keep a client on spot trading and off endpoints spot trading does not need.
_EXCHANGE_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False},
}


def supported_order(order: Order) -> None:
    """Refuse, before anything is sent, what this venue does not place (422 naming the field)."""
    if order.type not in (OrderType.MARKET, OrderType.LIMIT):
        raise VenueNotSupported(
            f"{order.type.value} orders are not supported by this venue (ccxt): market and limit only",
            errors=[{"field": "type", "reason": "not supported by this venue: market or limit"}])
    if order.time_in_force not in _TIME_IN_FORCE:
        raise VenueNotSupported(
            f"time_in_force {order.time_in_force.value} is not supported by this venue (ccxt)",
            errors=[{"field": "time_in_force", "reason": "not supported by this venue: gtc, ioc or fok"}])


def client_order_id(order: Order) -> str:
    return order.id.hex


def rebase_urls(api: Any, base_url: str) -> Any:
    """An exchange's `urls['api']` with every URL's scheme and host replaced by `base_url`'s, paths kept
    (`https://api.binance.com/api/v3` → `<base_url>/api/v3`)."""
    if isinstance(api, str):
        parts = urlsplit(api)
        return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(api, dict):
        return {key: rebase_urls(value, base_url) for key, value in api.items()}
    return api


def _decimal(value: Any) -> Decimal | None:
    """ccxt's numbers (floats, or strings) as decimals: `49500.0` → `49500`, `0.001` → `0.001`."""
    number = decimal_or_none(value)
    if number is None:
        return None
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number


def _time(ms: Any) -> datetime:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms > 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return datetime.now(UTC)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def fee_in_quote(trade: Mapping[str, Any], base: str | None, quote: str | None) -> Decimal:
    """The trade's fees in the quote currency (see the module's notes)."""
    fees = trade.get("fees") or ([trade["fee"]] if trade.get("fee") else [])
    price = _decimal(trade.get("price")) or ZERO
    total = ZERO
    for fee in fees:
        cost, currency = _decimal(fee.get("cost")), fee.get("currency")
        if cost is None:
            continue
        if currency is None or currency == quote:
            total += cost
        elif currency == base:
            total += cost * price
    return total


def executions_from_trades(trades: list[Mapping[str, Any]], base: str | None,
                           quote: str | None) -> list[Execution] | None:
    """The trades as executions, or None when any lacks the id that makes it a dedupe key."""
    out: dict[str, Execution] = {}
    for trade in trades:
        trade_id = trade.get("id")
        quantity, price = _decimal(trade.get("amount")), _decimal(trade.get("price"))
        if trade_id is None or quantity is None or price is None:
            return None
        if quantity <= ZERO:
            continue
        liquidity = trade.get("takerOrMaker") if trade.get("takerOrMaker") in ("maker", "taker") else "taker"
        out[str(trade_id)] = Execution(
            trade_id=str(trade_id), quantity=quantity, price=price, fee=fee_in_quote(trade, base, quote),
            time=_time(trade.get("timestamp")), liquidity=str(liquidity))
    return list(out.values())


def synthetic_execution(order: Order, venue_order_id: str, filled: Decimal, average: Decimal | None,
                        fee_total: Decimal | None, when: Any) -> Execution | None:
    """One execution for what was filled since the engine's record of the order (see the module's notes)."""
    delta = filled - order.filled_quantity
    if delta <= ZERO:
        return None
    paid_before = (order.average_price or ZERO) * order.filled_quantity
    if average is not None and average > ZERO:
        price = (average * filled - paid_before) / delta
    else:
        price = order.price or ZERO
    if price <= ZERO:
        return None  # no price known for the new part: wait for the exchange to report one
    fee = max(fee_total - order.fees, ZERO) if fee_total is not None else ZERO
    return Execution(trade_id=f"{venue_order_id}:{filled.normalize():f}", quantity=delta, price=price,
                     fee=fee, time=_time(when))


def report_status(raw_status: Any, filled: Decimal, amount: Decimal | None) -> tuple[OrderStatus, str | None]:
    """ccxt's status of an order and its fill → ours, and a reason when the exchange closed it early."""
    status = _STATUSES.get(str(raw_status)) if raw_status is not None else None
    if status is OrderStatus.FILLED and amount is not None and filled < amount:
        return OrderStatus.CANCELED, f"closed by the exchange with {filled} of {amount} filled"
    if status is None:  # open (or an in-between state such as canceling): still working
        return (OrderStatus.PARTIALLY_FILLED if filled > ZERO else OrderStatus.ACCEPTED), None
    return status, None


@dataclass
class _Client:
    exchange: Any
    fingerprint: str
    lock: asyncio.Lock
    ready: bool = False


class CcxtVenue:
    kind = "ccxt"

    def __init__(self, *, timeout_s: float = 10.0, urls: Mapping[str, str] | None = None) -> None:
        self.timeout_s = timeout_s
        self.urls = dict(urls or {})
        self._clients: dict[UUID, _Client] = {}

    # --- the Venue protocol ---

    async def submit(self, account: VenueAccount, order: Order) -> VenueReport:
        supported_order(order)
        params: dict[str, Any] = {"clientOrderId": client_order_id(order)}
        if order.type is OrderType.LIMIT:
            params["timeInForce"] = _TIME_IN_FORCE[order.time_in_force]
        price = float(order.price) if order.type is OrderType.LIMIT and order.price is not None else None
        try:
            exchange = await self._ready(account)
            symbol = self._symbol(exchange, order.symbol)
            raw = await exchange.create_order(symbol, order.type.value, order.side.value,
                                              float(order.quantity), price, params)
        except ccxt.NetworkError as exc:
            raise VenueUnavailable(f"{account.exchange} did not answer: {_reason(exc)}") from exc
        except ccxt.InvalidOrder as exc:
            # A duplicate client order id means the first submission arrived: report that one.
            existing = await self._existing(account, order)
            if existing is not None:
                return existing
            return VenueReport(OrderStatus.REJECTED, None, reason=_reason(exc))
        except ccxt.BaseError as exc:
            return VenueReport(OrderStatus.REJECTED, None, reason=_reason(exc))
        return await self._report(account, exchange, symbol, raw, order)

    async def cancel(self, account: VenueAccount, order: Order) -> VenueReport:
        try:
            exchange = await self._ready(account)
            symbol = self._symbol(exchange, order.symbol)
            if order.venue_order_id is not None:
                raw = await exchange.cancel_order(order.venue_order_id, symbol)
            else:
                cid = client_order_id(order)
                raw = await exchange.cancel_order(cid, symbol, {"clientOrderId": cid})
        except ccxt.OrderNotFound:
            # Already final (filled, canceled) or never arrived: the exchange's view says which.
            return await self.fetch(account, order)
        except ccxt.NetworkError as exc:
            raise VenueUnavailable(f"{account.exchange} did not answer: {_reason(exc)}") from exc
        except ccxt.BaseError as exc:
            # Refused: the order stands as the exchange has it, with the refusal as the reason.
            report = await self.fetch(account, order)
            if report.status.is_final:
                return report
            return replace(report, reason=f"{account.exchange} refused the cancel: {_reason(exc)}")
        if raw.get("filled") is None or raw.get("status") is None:
            return await self.fetch(account, order)  # an exchange that answers a cancel with an ack only
        return await self._report(account, exchange, symbol, raw, order)

    async def fetch(self, account: VenueAccount, order: Order) -> VenueReport:
        try:
            exchange = await self._ready(account)
            symbol = self._symbol(exchange, order.symbol)
            if order.venue_order_id is not None:
                raw = await exchange.fetch_order(order.venue_order_id, symbol)
            else:
                raw = await self._by_client_id(exchange, symbol, client_order_id(order))
        except ccxt.OrderNotFound as exc:
            known_as = order.venue_order_id or client_order_id(order)
            raise LookupError(f"{account.exchange} has no order {known_as}") from exc
        except ccxt.BadSymbol as exc:
            raise LookupError(f"{account.exchange} has no market for {order.symbol}") from exc
        except ccxt.NetworkError as exc:
            raise VenueUnavailable(f"{account.exchange} did not answer: {_reason(exc)}") from exc
        except ccxt.BaseError as exc:
            raise VenueRefused(
                f"{account.exchange} refused to report order {order.id}: {_reason(exc)}") from exc
        if raw is None:
            raise LookupError(
                f"{account.exchange} has no order with client order id {client_order_id(order)}")
        return await self._report(account, exchange, symbol, raw, order)

    async def balances(self, account: VenueAccount) -> dict[str, Decimal]:
        return {holding.asset: holding.free for holding in await self.holdings(account)}

    async def holdings(self, account: VenueAccount) -> list[Holding]:
        """Every asset the account holds (total not zero): free and total, as the exchange reports them."""
        try:
            exchange = await self._ready(account)
            raw = await exchange.fetch_balance()
        except ccxt.NetworkError as exc:
            raise VenueUnavailable(f"{account.exchange} did not answer: {_reason(exc)}") from exc
        except ccxt.BaseError as exc:
            raise VenueRefused(f"{account.exchange} refused the balance request: {_reason(exc)}") from exc
        free, total = raw.get("free") or {}, raw.get("total") or {}
        out = []
        for asset in sorted(set(free) | set(total)):
            asset_total = _decimal(total.get(asset)) or ZERO
            asset_free = _decimal(free.get(asset)) or ZERO
            if asset_total != ZERO or asset_free != ZERO:
                out.append(Holding(asset, asset_free, asset_total))
        return out

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await self._close_client(client)

    # --- clients ---

    async def _ready(self, account: VenueAccount) -> Any:
        """The account's client with its markets loaded (once per client)."""
        if account.kind != "ccxt" or not account.exchange:
            raise ValueError(f"venue account {account.name} is not a ccxt account")
        fingerprint = hashlib.sha256(json.dumps([account.exchange, account.credentials, account.options],
                                                sort_keys=True, default=str).encode()).hexdigest()
        client = self._clients.get(account.id)
        if client is None or client.fingerprint != fingerprint:
            replaced = client
            client = _Client(self._new_exchange(account), fingerprint, asyncio.Lock())
            self._clients[account.id] = client
            if replaced is not None:
                await self._close_client(replaced)
        if not client.ready:
            async with client.lock:
                if not client.ready:
                    await client.exchange.load_markets()
                    client.ready = True
        return client.exchange

    def _new_exchange(self, account: VenueAccount) -> Any:
        exchange_id = str(account.exchange)
        exchange_class = getattr(ccxt_async, exchange_id, None)
        if exchange_class is None or exchange_id not in ccxt.exchanges:
            raise ccxt.ExchangeError(f"{exchange_id} is not an exchange ccxt supports")
        credentials = {k: v for k, v in account.credentials.items()
                       if k in ("apiKey", "secret", "password", "uid") and v}
        options = {"defaultType": "spot", **_EXCHANGE_OPTIONS.get(exchange_id, {})}
        exchange = exchange_class({**credentials, "enableRateLimit": True,
                                   "timeout": int(self.timeout_s * 1000), "options": options})
        if account.options.get("sandbox"):
            exchange.set_sandbox_mode(True)
        base_url = self.urls.get(exchange_id)
        if base_url:
            exchange.urls["api"] = rebase_urls(exchange.urls["api"], base_url)
        return exchange

    @staticmethod
    async def _close_client(client: _Client) -> None:
        try:
            await client.exchange.close()
        except Exception as exc:  # closing a session that already failed: nothing left to release
            _log.info("closing an exchange client failed", error=repr(exc))

    # --- orders ---

    @staticmethod
    def _symbol(exchange: Any, symbol: str) -> str:
        """The exchange's unified symbol for ours (`BTC/USDT`, or its subject form `BTC-USDT`)."""
        markets = exchange.markets or {}
        for candidate in (symbol, symbol.replace("-", "/"), symbol.upper().replace("-", "/")):
            if candidate in markets:
                return candidate
        raise ccxt.BadSymbol(f"{exchange.id} has no market {symbol}")

    @staticmethod
    async def _by_client_id(exchange: Any, symbol: str, cid: str) -> dict[str, Any] | None:
        """The order with this client order id: asked for directly where the exchange can (Binance's
        origClientOrderId), else looked for among the symbol's orders."""
        try:
            found: dict[str, Any] = await exchange.fetch_order(cid, symbol, {"clientOrderId": cid})
            return found
        except (ccxt.NotSupported, ccxt.ArgumentsRequired):
            pass
        candidates: list[dict[str, Any]] = []
        if exchange.has.get("fetchOrders"):
            candidates = await exchange.fetch_orders(symbol)
        else:
            if exchange.has.get("fetchOpenOrders"):
                candidates += await exchange.fetch_open_orders(symbol)
            if exchange.has.get("fetchClosedOrders"):
                candidates += await exchange.fetch_closed_orders(symbol)
        return next((o for o in candidates if o.get("clientOrderId") == cid), None)

    async def _existing(self, account: VenueAccount, order: Order) -> VenueReport | None:
        with contextlib.suppress(LookupError, VenueUnavailable, VenueRefused, ccxt.BaseError):
            return await self.fetch(account, order)
        return None

    async def _report(self, account: VenueAccount, exchange: Any, symbol: str, raw: dict[str, Any],
                      order: Order) -> VenueReport:
        venue_order_id = str(raw["id"]) if raw.get("id") is not None else order.venue_order_id
        filled = _decimal(raw.get("filled")) or ZERO
        amount = _decimal(raw.get("amount")) or order.quantity
        status, reason = report_status(raw.get("status"), filled, amount)
        executions: list[Execution] = []
        if filled > order.filled_quantity:  # something new was filled: its trades
            try:
                executions, seen = await self._executions(exchange, symbol, raw, order, venue_order_id,
                                                          filled)
            except ccxt.NetworkError as exc:
                raise VenueUnavailable(f"{account.exchange} did not answer: {_reason(exc)}") from exc
            if seen < filled and status in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED):
                # The trade history lags the order: keep it open until every trade is seen.
                status = OrderStatus.PARTIALLY_FILLED if seen > ZERO else OrderStatus.ACCEPTED
                reason = None
        if status is OrderStatus.REJECTED and reason is None:
            reason = str((raw.get("info") or {}).get("msg") or "rejected by the exchange")
        return VenueReport(status=status, venue_order_id=venue_order_id, executions=executions, reason=reason)

    async def _executions(self, exchange: Any, symbol: str, raw: dict[str, Any], order: Order,
                          venue_order_id: str | None, filled: Decimal) -> tuple[list[Execution], Decimal]:
        """The order's executions and the quantity they account for."""
        market = exchange.markets.get(symbol) or {}
        base, quote = market.get("base"), market.get("quote")
        trades = list(raw.get("trades") or [])
        if not trades and venue_order_id is not None:
            try:
                if exchange.has.get("fetchOrderTrades"):
                    trades = await exchange.fetch_order_trades(venue_order_id, symbol)
                elif exchange.has.get("fetchMyTrades"):
                    mine = await exchange.fetch_my_trades(symbol, None, None, {"orderId": venue_order_id})
                    trades = [t for t in mine if str(t.get("order")) == venue_order_id]
            except (ccxt.NotSupported, ccxt.ArgumentsRequired, ccxt.BadRequest) as exc:
                _log.info("trades of an order not available; using its fill", exchange=exchange.id,
                          error=repr(exc))
                trades = []
        executions = executions_from_trades(trades, base, quote) if trades else None
        if executions is not None:
            return executions, sum((e.quantity for e in executions), ZERO)
        if venue_order_id is None:
            return [], order.filled_quantity
        fee = raw.get("fee") or {}
        fee_total = fee_in_quote({"fees": [fee], "price": raw.get("average")}, base, quote) if fee else None
        synthetic = synthetic_execution(order, venue_order_id, filled, _decimal(raw.get("average")),
                                        fee_total, raw.get("lastTradeTimestamp") or raw.get("timestamp"))
        if synthetic is None:
            return [], order.filled_quantity
        return [synthetic], filled
