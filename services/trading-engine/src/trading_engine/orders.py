"""The order path: place (risk, then the paper venue or an external one), cancel, record fills; what
follows on external venues is in external_orders. Every change to an order or a fill enqueues its events
in the same transaction.

Placing an order, for one user at a time (the user's risk-account row is locked first, across replicas):
1. the intent is validated (422 naming the field); an earlier order with the same client_order_id is
   returned as it is — no second risk check, no second fill;
2. the account is "paper" or one of the user's venue accounts (404 if none; 403 unless an admin enabled
   live trading for the user);
3. pre-trade risk judges it against the account (positions, open orders, today's P&L) at the latest
   prices; a refusal is stored as a `denied` order with the reason, and returned as a 422 naming the rule;
4. paper: submitted → accepted and matched at once against the latest quote in the same transaction;
   what does not fill rests in the paper book (ioc/fok: canceled). External: stored `submitted` and
   committed before the venue is called (ExternalOrders.send); the venue's report is applied in a new
   transaction, and the reconciler picks up whatever was left unanswered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import Database
from aitrading.errors import Conflict, Forbidden, NotFound, Unavailable
from aitrading.market.prices import LatestPrices, PriceQuote
from aitrading.trading.accounting import Position
from aitrading.trading.fills import FillModel, Quote, after_attempt
from aitrading.trading.orders import Fill, OrderIntent, OrderStatus
from aitrading.trading.risk import OrderRefused
from trading_engine import events, risk_accounts, store
from trading_engine.account_orders import PAPER, AccountOrder, order_from_row
from trading_engine.commit_hooks import after_commit
from trading_engine.external_orders import ExternalOrders
from trading_engine.paper_book import PaperBook
from trading_engine.settings import Settings
from trading_engine.venue_accounts import account_named
from trading_engine.venues import Venue

_log = structlog.get_logger(__name__)
_REFUSAL = re.compile(r"^refused by ([a-z_]+): (.*)$", re.DOTALL)


def paper_fill_model(settings: Settings) -> FillModel:
    return FillModel(slippage_bps=settings.paper_slippage_bps, maker_fee_rate=settings.paper_maker_fee_rate,
                     taker_fee_rate=settings.paper_taker_fee_rate)


def _now() -> datetime:
    return datetime.now(UTC)


def refusal_of(order: AccountOrder) -> OrderRefused | None:
    """The risk refusal a denied order was stored with, to answer a retry the same way."""
    if order.status is not OrderStatus.DENIED:
        return None
    found = _REFUSAL.match(order.reason or "")
    rule, detail = (found.group(1), found.group(2)) if found else ("unknown", order.reason or "denied")
    refused = OrderRefused(rule, detail)
    refused.extra["order_id"] = str(order.id)
    return refused


@dataclass(frozen=True)
class Placement:
    order: AccountOrder
    created: bool                        # False: the order placed earlier with the same client_order_id
    refusal: OrderRefused | None = None  # set when risk denied it (then stored as `denied`)
    needs_venue: bool = False            # an external order stored as submitted, not sent yet


class OrderFlow:
    """The order path of one app: prices, the paper fill model and book, the external venues."""

    def __init__(self, settings: Settings, database: Database, prices: LatestPrices,
                 venues: Mapping[str, Venue]) -> None:
        self.settings = settings
        self.database = database
        self.prices = prices
        self.venues = venues
        self.fill_model = paper_fill_model(settings)
        self.book = PaperBook()
        # While an instance sends an external order or asks about it, others leave it alone this long.
        self.lease = timedelta(seconds=settings.venue_timeout_s * 3 + 5)
        self.on_external: Callable[[], None] = lambda: None  # wakes the reconciler (main wires it)
        self.external = ExternalOrders(settings, database, venues, self.record_fill)

    # --- placing -----------------------------------------------------------------------------------

    async def place(self, session: AsyncSession, owner: UUID, intent: OrderIntent, *, account: str = PAPER,
                    strategy_id: UUID | None = None, token: str | None = None,
                    send_now: bool = False) -> Placement:
        """Risk-check and book one order in the caller's transaction (see the module docstring).

        An external order is left `submitted`: with `send_now` the caller commits and sends it
        (ExternalOrders.send), otherwise the reconciler sends it once the transaction commits.
        """
        intent.validate()
        now = _now()
        risk = await risk_accounts.lock(session, owner, self.settings)
        if intent.client_order_id is not None:
            existing = await store.order_by_client_id(session, owner, intent.client_order_id)
            if existing is not None:
                earlier = order_from_row(existing)
                return Placement(earlier, created=False, refusal=refusal_of(earlier))
        venue_kind = PAPER
        if account != PAPER:
            if not risk.live_enabled:
                raise Forbidden("live trading is not enabled for you: an admin enables it per user; "
                                "paper trading needs no permission (account 'paper')")
            venue_account = await account_named(session, owner, account, self.settings)
            if venue_account.kind not in self.venues:
                raise Unavailable(f"no {venue_account.kind} venue is available in this deployment")
            venue_kind = venue_account.kind
        quote = await self.prices.latest(intent.symbol, token=token)
        known = {intent.symbol: quote.last} if quote is not None else {}
        view = await risk_accounts.account_view(session, owner, account, self.prices, known=known,
                                                token=token, now=now)
        engine = await risk_accounts.engine_for(session, risk, now)
        order = AccountOrder.for_intent(intent, owner=owner, account=account, venue=venue_kind, now=now,
                                        strategy_id=strategy_id)
        try:
            engine.check(intent, view, now)
        except OrderRefused as refused:
            order.transition(OrderStatus.DENIED, now=now, reason=refused.detail)
            return await self._insert(session, order, refusal=refused)
        order.transition(OrderStatus.SUBMITTED, now=now)
        if venue_kind != PAPER:
            placed = await self._insert(session, order, claimed_until=now + self.lease if send_now else None)
            if placed.created:
                if not send_now:
                    after_commit(session, self.on_external)
                return replace(placed, needs_venue=True)
            return placed
        placed = await self._insert(session, order)
        if not placed.created:
            return placed
        order.transition(OrderStatus.ACCEPTED, now=now)
        await events.order_changed(session, order)
        if quote is None:  # a price arrived between the two looks: risk valued the order with it
            quote = PriceQuote(intent.symbol, view.prices[intent.symbol], now)
        await self._match_arrival(session, order, quote, now)
        await store.update_order(session, order)
        return placed

    async def _insert(self, session: AsyncSession, order: AccountOrder, *,
                      refusal: OrderRefused | None = None,
                      claimed_until: datetime | None = None) -> Placement:
        if not await store.insert_order(session, order, claimed_until=claimed_until):
            # Only without the owner's lock could this happen; the unique key still answers it right.
            assert order.client_order_id is not None
            existing = await store.order_by_client_id(session, order.owner, order.client_order_id)
            if existing is None:
                raise Conflict("an order with this client_order_id is being placed; retry",
                               errors=[{"field": "client_order_id", "reason": "in use"}])
            earlier = order_from_row(existing)
            return Placement(earlier, created=False, refusal=refusal_of(earlier))
        await events.order_changed(session, order)
        if refusal is not None:
            refusal.extra["order_id"] = str(order.id)
        return Placement(order, created=True, refusal=refusal)

    async def _match_arrival(self, session: AsyncSession, order: AccountOrder, quote: PriceQuote,
                             now: datetime) -> None:
        """A new paper order against the latest quote: fill what crosses, cancel ioc/fok leftovers, rest
        the rest."""
        fill = self.fill_model.on_quote(order, _quote(quote, now), resting=False)
        if fill is not None:
            await self.record_fill(session, order, fill)
        leftover = after_attempt(order)
        if leftover is not None:
            order.transition(leftover, now=now,
                             reason=f"{order.time_in_force.value}: not filled on arrival")
            await events.order_changed(session, order)
        if order.is_open:
            resting = order.copy()
            after_commit(session, lambda: self.book.add(resting))

    async def place_and_send(self, session: AsyncSession, owner: UUID, intent: OrderIntent, *,
                             account: str, token: str | None) -> Placement:
        """The API's placement, committed before it answers: a refusal is committed (the denial is kept)
        and raised; an external order is committed, then sent, and returned as the venue answered.

        The transaction boundary of the request: it commits here rather than after the response (when the
        session dependency would), so what the answer says is stored before the caller can act on it."""
        placement = await self.place(session, owner, intent, account=account, token=token, send_now=True)
        await session.commit()
        if placement.refusal is not None:
            raise placement.refusal
        if placement.needs_venue:
            return replace(placement, order=await self.external.send(placement.order))
        return placement

    # --- fills -------------------------------------------------------------------------------------

    async def record_fill(self, session: AsyncSession, order: AccountOrder, fill: Fill, *,
                          venue_trade_id: str | None = None) -> None:
        """Take an execution into the order, the account's position and the strategy's position, record
        it and enqueue `fills.*` and the order's new status. The caller holds the owner's lock."""
        held = await store.position_for_update(session, order.owner, order.account, order.symbol)
        position = Position(order.symbol) if held is None else Position(
            order.symbol, held.quantity, held.average_price, held.realized_pnl, held.fees)
        realized = position.apply(fill.side, fill.quantity, fill.price, fill.fee)
        await store.save_position(session, order.owner, order.account, order.symbol,
                                  quantity=position.quantity, average_price=position.average_price,
                                  realized_pnl=position.realized_pnl, fees=position.fees, now=fill.time)
        order.apply_fill(fill)
        await store.insert_fill(session, fill, account=order.account, realized_pnl=realized,
                                venue_trade_id=venue_trade_id)
        if order.strategy_id is not None:
            await store.add_deployment_position(session, order.strategy_id, fill.signed_quantity)
        await events.fill_recorded(session, fill, order.account)
        await events.order_changed(session, order)

    async def fill_resting(self, order_id: UUID, owner: UUID, quote: PriceQuote) -> AccountOrder | None:
        """Try a resting paper order against a new quote in its own transaction; the order as it stands
        after (None when it is gone). The order is re-read under the owner's lock and written only if it
        is still what was read, so two instances never fill it twice."""
        async with self.database.sessionmaker() as session, session.begin():
            await risk_accounts.lock(session, owner, self.settings)
            row = await store.order_for_update(session, order_id)
            if row is None:
                return None
            order = order_from_row(row)
            if not (order.is_paper and order.is_open):
                return order
            was_triggered = order.triggered
            now = _now()
            fill = self.fill_model.on_quote(order, _quote(quote, now), resting=True)
            if fill is None and order.triggered == was_triggered:
                return order
            if fill is not None:
                await self.record_fill(session, order, fill)
            if not await store.update_order(session, order, expected_filled=row.filled_quantity):
                raise RuntimeError(f"order {order_id} changed under its owner's lock")
            return order

    # --- cancel ------------------------------------------------------------------------------------

    async def cancel(self, session: AsyncSession, owner: UUID, order_id: UUID) -> AccountOrder:
        """Cancel one of the owner's orders (allowed whatever the trading state). A paper order is canceled
        at once; an external one becomes pending_cancel and needs `send_cancel` after commit."""
        await risk_accounts.lock(session, owner, self.settings)
        row = await store.owned_order(session, owner, order_id, for_update=True)
        if row is None:
            raise NotFound(f"no order {order_id}")
        order = order_from_row(row)
        if order.status.is_final:
            raise Conflict(f"order {order_id} is already {order.status.value}; it cannot be canceled",
                           order_status=order.status.value)
        if order.status is OrderStatus.PENDING_CANCEL:
            return order
        now = _now()
        if order.is_paper:
            order.transition(OrderStatus.CANCELED, now=now, reason="canceled by the user")
            after_commit(session, lambda: self.book.remove(order.id, order.symbol))
            await store.update_order(session, order)
        else:
            order.transition(OrderStatus.PENDING_CANCEL, now=now)
            await store.update_order(session, order)
            await store.set_claim(session, order.id, now + self.lease)
        await events.order_changed(session, order)
        return order

    async def cancel_and_send(self, session: AsyncSession, owner: UUID, order_id: UUID) -> AccountOrder:
        """The API's cancel, committed before it answers; an external order's cancel is then sent."""
        order = await self.cancel(session, owner, order_id)
        await session.commit()
        if order.is_paper or order.status is not OrderStatus.PENDING_CANCEL:
            return order
        return await self.external.send_cancel(order)

def _quote(quote: PriceQuote, now: datetime) -> Quote:
    """A paper quote priced at the latest known price and timed now: the moment the engine matches."""
    return Quote(quote.symbol, quote.last, now, quote.bid, quote.ask)
