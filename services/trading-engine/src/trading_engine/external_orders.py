"""Orders on external venues (CCXT exchanges, MT5 terminals) after they are committed: sending them and
their cancels, asking the venue about them (the reconciler), and applying what the venue reports.

A venue call that ends without an answer leaves the order as it was (submitted, or pending_cancel): its
outcome is unknown, never taken for a refusal, and the reconciler asks the venue again once a late request
could have landed (`venue_retry_after_s`). Each execution carries the venue's trade id and is recorded
once, however often a report is applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import Database
from aitrading.errors import DomainError, NotFound, Unavailable, UpstreamTimeout
from aitrading.trading.orders import ZERO, Fill, OrderStatus, can_transition
from trading_engine import events, risk_accounts, store
from trading_engine.account_orders import AccountOrder, order_from_row
from trading_engine.settings import Settings
from trading_engine.venue_accounts import account_named
from trading_engine.venues import Venue, VenueAccount, VenueReport, VenueUnavailable

_log = structlog.get_logger(__name__)
# A venue call that ended without an answer: its outcome is unknown, never taken for a refusal.
UNANSWERED = (VenueUnavailable, Unavailable, UpstreamTimeout)
_REPORTED = frozenset({OrderStatus.ACCEPTED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


class RecordFill(Protocol):
    """OrderFlow.record_fill: the one way a fill is taken into an order, a position and the events."""

    async def __call__(self, session: AsyncSession, order: AccountOrder, fill: Fill, *,
                       venue_trade_id: str | None = None) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class ExternalOrders:
    def __init__(self, settings: Settings, database: Database, venues: Mapping[str, Venue],
                 record_fill: RecordFill) -> None:
        self.settings = settings
        self.database = database
        self.venues = venues
        self._record_fill = record_fill

    async def _venue_account(self, order: AccountOrder) -> VenueAccount:
        async with self.database.sessionmaker() as session:
            return await account_named(session, order.owner, order.account, self.settings)

    def _venue(self, account: VenueAccount) -> Venue:
        venue = self.venues.get(account.kind)
        if venue is None:
            raise Unavailable(f"no {account.kind} venue is available in this deployment")
        return venue

    async def send(self, order: AccountOrder) -> AccountOrder:
        """Send a committed `submitted` order to its venue and apply the answer. The venue unreachable:
        the order stays submitted for the reconciler. The venue refusing it before sending (a domain
        error, e.g. an order type it does not support) rejects it and raises that error."""
        account = await self._venue_account(order)
        venue = self._venue(account)
        try:
            report = await venue.submit(account, order)
        except UNANSWERED as exc:
            _log.warning("venue unreachable; the order is reconciled later", order_id=str(order.id),
                         venue=account.kind, error=str(exc))
            return await self.release(order, unanswered=True)
        except DomainError as refused:
            await self.apply_report(order, VenueReport(OrderStatus.REJECTED, None, reason=refused.detail))
            refused.extra["order_id"] = str(order.id)
            raise
        return await self.apply_report(order, report)

    async def send_cancel(self, order: AccountOrder) -> AccountOrder:
        """Send a committed pending cancel to the venue and apply the answer. Unanswered, or the venue not
        knowing the order (its send may still be on the way): it stays pending_cancel for the reconciler."""
        account = await self._venue_account(order)
        venue = self._venue(account)
        try:
            report = await venue.cancel(account, order)
        except (*UNANSWERED, LookupError) as exc:
            _log.warning("cancel not confirmed; retried by the reconciler", order_id=str(order.id),
                         venue=account.kind, error=repr(exc))
            return await self.release(order, unanswered=True)
        return await self.apply_report(order, report, answers_cancel=True)

    async def sync(self, order: AccountOrder) -> AccountOrder:
        """Bring one open external order (claimed by the caller) in line with its venue: send what never
        reached it, resend a pending cancel, apply what the venue reports. Used by the reconciler."""
        try:
            account = await self._venue_account(order)
        except NotFound:
            return await self._orphaned(order)
        venue = self._venue(account)
        answers_cancel = False
        try:
            try:
                report = await venue.fetch(account, order)
            except LookupError:
                if order.status is OrderStatus.PENDING_CANCEL:
                    # Asked again after venue_retry_after_s: a send still on its way would have landed.
                    answers_cancel = True
                    report = VenueReport(OrderStatus.CANCELED, None,
                                         reason="canceled before it reached the venue")
                elif order.status is OrderStatus.SUBMITTED:
                    report = await venue.submit(account, order)
                else:
                    _log.error("the venue does not know an order it acknowledged", order_id=str(order.id),
                               venue=account.kind, venue_order_id=order.venue_order_id)
                    return await self.release(order)
            else:
                if order.status is OrderStatus.PENDING_CANCEL and report.status in (
                        OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
                    # Executions made meanwhile count; the order stays pending_cancel until the venue
                    # answers the cancel, sent again now.
                    order = await self.apply_report(order, report, release=False)
                    report = await venue.cancel(account, order)
                    answers_cancel = True
        except UNANSWERED as exc:
            _log.info("venue still unreachable", order_id=str(order.id), venue=account.kind, error=str(exc))
            return await self.release(order, unanswered=True)
        except DomainError as refused:
            report = VenueReport(OrderStatus.REJECTED, None, reason=refused.detail)
        return await self.apply_report(order, report, answers_cancel=answers_cancel)

    async def _orphaned(self, order: AccountOrder) -> AccountOrder:
        """The order's venue account was deleted. Never acknowledged by the venue: rejected; otherwise it
        cannot be followed any more and is left as it stands."""
        if order.status is OrderStatus.SUBMITTED and order.venue_order_id is None:
            reason = f"venue account {order.account!r} was deleted before the order was sent"
            report = VenueReport(OrderStatus.REJECTED, None, reason=reason)
            return await self.apply_report(order, report)
        _log.warning("open order of a deleted venue account", order_id=str(order.id), account=order.account)
        return await self.release(order)

    async def release(self, order: AccountOrder, *, unanswered: bool = False) -> AccountOrder:
        """Give up this instance's claim on an external order; the order as stored. After an unanswered
        venue call the order stays untouched for `venue_retry_after_s` (a late request may still land)."""
        wait = timedelta(seconds=self.settings.venue_retry_after_s if unanswered else 0)
        async with self.database.sessionmaker() as session, session.begin():
            await store.set_claim(session, order.id, _now() + wait)
            row = await store.owned_order(session, order.owner, order.id)
        return order if row is None else order_from_row(row)

    async def apply_report(self, order: AccountOrder, report: VenueReport, *, release: bool = True,
                           answers_cancel: bool = False) -> AccountOrder:
        """Apply a venue's report in a new transaction: the venue's order id, each execution once (by its
        trade id), and the status the venue gives; the order as it stands after.

        A pending cancel stays pending until a report that `answers_cancel` (the venue's answer to the
        cancel): an order view fetched meanwhile brings its executions, not an open status."""
        async with self.database.sessionmaker() as session, session.begin():
            await risk_accounts.lock(session, order.owner, self.settings)
            row = await store.order_for_update(session, order.id)
            if row is None:
                raise NotFound(f"no order {order.id}")
            current = order_from_row(row)
            await self._apply_report(session, current, report, answers_cancel=answers_cancel)
            if release:
                await store.set_claim(session, current.id, _now())
            return current

    async def _apply_report(self, session: AsyncSession, order: AccountOrder, report: VenueReport, *,
                            answers_cancel: bool) -> None:
        now = _now()
        changed = False
        cancel_pending = order.status is OrderStatus.PENDING_CANCEL
        if report.venue_order_id and report.venue_order_id != order.venue_order_id:
            order.venue_order_id = report.venue_order_id
            order.updated_at = now
            changed = True
        for execution in report.executions:
            if await store.venue_trade_recorded(session, order.id, execution.trade_id):
                continue
            if execution.quantity <= ZERO or execution.quantity > order.remaining:
                _log.error("venue execution does not fit the order; not recorded", order_id=str(order.id),
                           trade_id=execution.trade_id, quantity=str(execution.quantity),
                           remaining=str(order.remaining))
                continue
            fill = Fill(order_id=order.id, owner=order.owner, symbol=order.symbol, side=order.side,
                        quantity=execution.quantity, price=execution.price, fee=execution.fee,
                        time=execution.time, liquidity=execution.liquidity, strategy_id=order.strategy_id)
            await self._record_fill(session, order, fill, venue_trade_id=execution.trade_id)
            changed = True
        wanted = report.status
        if cancel_pending and not answers_cancel:
            if order.status is OrderStatus.PARTIALLY_FILLED:  # a fill moved it; the cancel still stands
                order.transition(OrderStatus.PENDING_CANCEL, now=now)
                await events.order_changed(session, order)
            if wanted in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
                wanted = order.status
        if wanted is not order.status and wanted in _REPORTED and not order.status.is_final:
            if can_transition(order.status, wanted):
                order.transition(wanted, now=now, reason=report.reason)
                await events.order_changed(session, order)
                changed = True
            else:
                _log.warning("venue status does not follow from the order's", order_id=str(order.id),
                             current=order.status.value, reported=wanted.value)
        if changed:
            await store.update_order(session, order)
