"""MetaTrader 5 terminals as a venue, through the data-bridge agent channel.

An order goes to data-bridge's `POST /internal/mt5/orders` (with the engine's service token), which hands
it to the owner's agent (agents/mt5-agent) as an `order` message and answers with the agent's
`order_result`: MetaTrader's `order_send` result (retcode, deal, order ticket, volume, price).

What the agent protocol allows, and so what this venue does:
- submit: market, limit, stop and stop-limit orders; `ioc`/`fok` become the filling mode, `day` the
  order's time. Retcode 10009 (done) with a deal → filled, one execution keyed by the deal ticket (the
  deal price, else the quote of the result; MetaTrader reports no commission here, so the fee is 0);
  10009 without a deal or 10008 (placed) → accepted, a pending order; 10010 → partially_filled; any other
  retcode → rejected with its meaning. The agent not connected → rejected ("MT5 agent <id> is not
  connected"). No answer (data-bridge unreachable mid-request, the agent timing out or disconnecting
  before answering) → VenueUnavailable: the order may have reached the terminal.
- fetch: the protocol has no order query. What this process learnt (each answer is remembered) is
  reported again; an order the engine already recorded an answer for is reported as the engine knows it
  (nothing newer can be learnt); LookupError only for an order known never to have left (data-bridge
  refused the connection, no service token). An order whose send has an unknown outcome stays unknown
  (VenueUnavailable): sending it again could trade twice, so it is left for the trader to check in the
  terminal, where its comment is the first 31 characters of the order id.
- cancel: the protocol has no cancel. An order never sent is canceled here; a working order is reported
  back as still working, with the reason: remove it in the terminal.
- balances: the protocol does not report the account's balance: refused (VenueNotSupported).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import structlog

from aitrading.client import CircuitOpen, ServiceClient
from aitrading.decimals import decimal_or_none
from aitrading.errors import DomainError, Unavailable, UpstreamTimeout
from aitrading.service_tokens import ServiceTokens
from aitrading.trading.orders import Order, OrderStatus, OrderType, TimeInForce
from trading_engine.venue_registry import Holding, VenueNotSupported
from trading_engine.venues import Execution, VenueAccount, VenueReport, VenueUnavailable

_log = structlog.get_logger("trading_engine.mt5_venue")

ORDERS_PATH = "/internal/mt5/orders"
MAX_AGENT_WAIT_S = 120.0   # data-bridge's limit for one order's answer
MAX_COMMENT = 31           # MetaTrader truncates order comments beyond this
REMEMBERED = 100_000       # answers kept for fetch, oldest forgotten first

DONE, PLACED, DONE_PARTIAL = 10009, 10008, 10010
# MetaTrader 5's trade server return codes (MqlTradeResult.retcode).
RETCODES: dict[int, str] = {
    10004: "requote", 10006: "request rejected", 10007: "request canceled by the trader",
    10008: "order placed", 10009: "request completed", 10010: "only part of the request was completed",
    10011: "request processing error", 10012: "request canceled by timeout", 10013: "invalid request",
    10014: "invalid volume", 10015: "invalid price", 10016: "invalid stops", 10017: "trading is disabled",
    10018: "market is closed", 10019: "not enough money", 10020: "prices changed",
    10021: "no quotes to process the request", 10022: "invalid order expiration",
    10023: "order state changed", 10024: "too frequent requests", 10025: "no changes in request",
    10026: "autotrading disabled by the server", 10027: "autotrading disabled by the client terminal",
    10028: "request locked for processing", 10029: "order or position frozen",
    10030: "invalid order filling type", 10031: "no connection with the trade server",
    10032: "operation allowed only for live accounts", 10033: "pending orders limit reached",
    10034: "order and position volume limit for the symbol reached",
    10035: "incorrect or prohibited order type",
    10036: "position already closed", 10038: "close volume exceeds the position volume",
    10039: "a close order already exists for the position", 10040: "open positions limit reached",
    10041: "pending order activation rejected, order canceled", 10042: "only long positions are allowed",
    10043: "only short positions are allowed", 10044: "only position closing is allowed",
    10045: "position closing allowed only by FIFO rule", 10046: "opposite positions are prohibited",
}


class _NotSent:
    """An order known never to have reached data-bridge."""


class _Unknown:
    """An order sent without an answer: it may have reached the terminal."""


NOT_SENT, UNKNOWN = _NotSent(), _Unknown()
Outcome = VenueReport | _NotSent | _Unknown


def terminal_symbol(account: VenueAccount, symbol: str) -> str:
    """The terminal's name for a platform symbol: the account's mapping, else the symbol without its
    separators (`EUR/USD` → `EURUSD`)."""
    mapping = account.options.get("symbols") or {}
    mapped = mapping.get(symbol) if isinstance(mapping, dict) else None
    return str(mapped) if mapped else symbol.replace("/", "").replace("-", "")


def order_message(account: VenueAccount, order: Order) -> dict[str, Any]:
    """The agent protocol's `order` for a platform order."""
    message: dict[str, Any] = {"symbol": terminal_symbol(account, order.symbol), "side": order.side.value,
                               "type": order.type.value, "volume": str(order.quantity),
                               "comment": order.id.hex[:MAX_COMMENT]}
    if order.price is not None and order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        message["price"] = str(order.price)
    if order.stop_price is not None and order.type in (OrderType.STOP, OrderType.STOP_LIMIT):
        message["stop_price"] = str(order.stop_price)
    if order.time_in_force is TimeInForce.DAY:
        message["time_in_force"] = "day"
    elif order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
        message["filling"] = order.time_in_force.value
    return message


def _decimal(value: Any) -> Decimal | None:
    """A positive number from the terminal's answer, else None."""
    number = decimal_or_none(value)
    return number if number is not None and number > 0 else None


def _ticket(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def retcode_text(retcode: int) -> str:
    return f"MT5 {retcode}: {RETCODES.get(retcode, 'unknown return code')}"


def report_from_result(order: Order, result: dict[str, Any], now: datetime) -> VenueReport:
    """An `order_result` as a venue report (see the module's notes)."""
    retcode = result.get("retcode")
    deal, ticket = _ticket(result.get("deal")), _ticket(result.get("order"))
    venue_order_id = str(ticket or deal) if ticket or deal else None
    comment = result.get("comment")
    if not isinstance(retcode, int) or isinstance(retcode, bool):
        reason = result.get("error") or "the MT5 agent answered without a return code"
        return VenueReport(OrderStatus.REJECTED, None, reason=str(reason)[:500])
    if retcode in (DONE, DONE_PARTIAL) and deal:
        volume = _decimal(result.get("volume")) or order.quantity
        price = _decimal(result.get("price")) or _decimal(
            result.get("ask") if order.side.value == "buy" else result.get("bid"))
        if price is None:  # a deal with no price anywhere: report it working, never a fill at a guess
            return VenueReport(OrderStatus.ACCEPTED, venue_order_id,
                               reason=f"{retcode_text(retcode)} without a deal price")
        execution = Execution(trade_id=str(deal), quantity=min(volume, order.quantity), price=price,
                              fee=Decimal(0), time=now)
        complete = retcode == DONE and volume >= order.quantity
        status = OrderStatus.FILLED if complete else OrderStatus.PARTIALLY_FILLED
        return VenueReport(status, venue_order_id, [execution])
    if retcode in (DONE, PLACED, DONE_PARTIAL):
        return VenueReport(OrderStatus.ACCEPTED, venue_order_id)
    reason = retcode_text(retcode) + (f" ({comment})" if isinstance(comment, str) and comment else "")
    return VenueReport(OrderStatus.REJECTED, venue_order_id, reason=reason)


def _never_sent(exc: BaseException) -> bool:
    """The request to data-bridge certainly did not leave (no connection was made)."""
    return isinstance(exc, CircuitOpen) or \
        isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)


class Mt5Venue:
    kind = "mt5"

    def __init__(self, client: ServiceClient, tokens: ServiceTokens, *, timeout_s: float = 10.0) -> None:
        self.client = client
        self.tokens = tokens
        self.agent_wait_s = min(timeout_s, MAX_AGENT_WAIT_S)
        self._outcomes: OrderedDict[UUID, Outcome] = OrderedDict()

    # --- the Venue protocol ---

    async def submit(self, account: VenueAccount, order: Order) -> VenueReport:
        agent_id = str(account.credentials.get("agent_id") or "") or None
        body = {"owner": str(account.owner), "agent_id": agent_id, "order": order_message(account, order),
                "timeout_s": self.agent_wait_s}
        try:
            token = await self.tokens.token()
        except DomainError as exc:
            self._remember(order.id, NOT_SENT)
            raise VenueUnavailable(f"no service token for data-bridge: {exc.detail}") from exc
        self._remember(order.id, UNKNOWN)
        try:
            response = await self.client.request("data-bridge", "POST", ORDERS_PATH, json=body, token=token,
                                                 timeout_s=self.agent_wait_s + 5)
        except (Unavailable, UpstreamTimeout) as exc:
            if _never_sent(exc):
                self._remember(order.id, NOT_SENT)
            raise VenueUnavailable(exc.detail) from exc
        report = self._answer(order, agent_id, response)
        self._remember(order.id, report)
        return report

    async def cancel(self, account: VenueAccount, order: Order) -> VenueReport:
        known = self._outcomes.get(order.id)
        if known is NOT_SENT:
            return VenueReport(OrderStatus.CANCELED, None, reason="canceled before it reached the terminal")
        if isinstance(known, VenueReport) and known.status.is_final:
            return known
        ticket = order.venue_order_id or (known.venue_order_id if isinstance(known, VenueReport) else None)
        if ticket is None:
            raise VenueUnavailable(f"whether order {order.id} reached the MT5 terminal is unknown; the agent "
                                   "protocol can neither look orders up nor cancel them: check the terminal")
        still = OrderStatus.PARTIALLY_FILLED if order.filled_quantity > 0 else OrderStatus.ACCEPTED
        reason = f"MT5 agents cannot cancel orders: remove order ticket {ticket} in the terminal"
        return VenueReport(still, ticket, reason=reason)

    async def fetch(self, account: VenueAccount, order: Order) -> VenueReport:
        known = self._outcomes.get(order.id)
        if isinstance(known, VenueReport):
            return known
        if known is NOT_SENT:
            raise LookupError(f"order {order.id} never reached data-bridge")
        if order.venue_order_id is not None:
            # The engine recorded the terminal's answer; the protocol has nothing newer to tell.
            return VenueReport(order.status, order.venue_order_id)
        raise VenueUnavailable(f"whether order {order.id} reached the MT5 terminal is unknown: the agent "
                               "protocol cannot look orders up; check the terminal for comment "
                               f"{order.id.hex[:MAX_COMMENT]}")

    async def balances(self, account: VenueAccount) -> dict[str, Decimal]:
        return {holding.asset: holding.free for holding in await self.holdings(account)}

    async def holdings(self, account: VenueAccount) -> list[Holding]:
        raise VenueNotSupported("MT5 agents do not report account balances (the agent protocol has no such "
                                "message): see the terminal")

    async def close(self) -> None:
        self._outcomes.clear()

    # --- helpers ---

    def _answer(self, order: Order, agent_id: str | None, response: httpx.Response) -> VenueReport:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
        status = response.status_code
        if status == 200 and isinstance(body, dict):
            return report_from_result(order, body, datetime.now(UTC))
        if status == 404:
            return VenueReport(OrderStatus.REJECTED, None, reason=f"MT5 agent {agent_id} is not connected")
        if status in (401, 403, 422):
            # Refused before reaching any agent: the order message or the engine's credentials.
            reason = f"data-bridge refused the order: {detail or status}"
            return VenueReport(OrderStatus.REJECTED, None, reason=reason)
        # 503 (the agent went away or data-bridge is stopping while the order was out), 504 (no answer in
        # time), anything else: the order may have reached the terminal.
        _log.warning("MT5 order outcome unknown", order_id=str(order.id), status=status, detail=detail)
        raise VenueUnavailable(f"MT5 order {order.id}: data-bridge answered {status}: "
                               f"{detail or 'no detail'}")

    def _remember(self, order_id: UUID, outcome: Outcome) -> None:
        self._outcomes[order_id] = outcome
        self._outcomes.move_to_end(order_id)
        while len(self._outcomes) > REMEMBERED:
            self._outcomes.popitem(last=False)
