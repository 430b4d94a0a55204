"""The paper venue's resting orders: matched on every new quote, reloaded from the database every few
seconds (orders placed through another replica), day orders expired when their UTC day is over.

Market and marketable orders fill on arrival inside the placing transaction (orders.OrderFlow); this
module handles what rests. A fill happens in its own transaction that locks the owner and re-reads the
order (OrderFlow.fill_resting), so the in-memory book is only a hint of what might fill.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from aitrading.errors import Unavailable
from aitrading.market.prices import LatestPrices, PriceQuote
from aitrading.trading.fills import expired
from aitrading.trading.orders import OrderStatus
from trading_engine import events, risk_accounts, store
from trading_engine.account_orders import order_from_row
from trading_engine.orders import OrderFlow

_log = structlog.get_logger(__name__)
EXPIRY_BATCH = 500


class PaperVenue:
    """A resource of the app: start loads the book and starts the refresh and expiry loops."""

    name = "paper-venue"

    def __init__(self, flow: OrderFlow, prices: LatestPrices, *, refresh_interval_s: float,
                 expiry_interval_s: float) -> None:
        self.flow = flow
        self.book = flow.book
        self.prices = prices
        self.refresh_interval_s = refresh_interval_s
        self.expiry_interval_s = expiry_interval_s
        self._matching = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        prices.listen(self.on_quote)

    async def start(self) -> None:
        self._stop.clear()
        await self.refresh()
        self._tasks = [asyncio.create_task(self._every(self.refresh_interval_s, self.refresh),
                                           name="paper-refresh"),
                       asyncio.create_task(self._every(self.expiry_interval_s, self.expire_day_orders),
                                           name="paper-expiry")]

    async def stop(self) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.wait(tasks)

    async def check(self) -> None:
        if any(task.done() for task in self._tasks):
            raise Unavailable("the paper venue's loops are not running")

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval_s)
            if self._stop.is_set():
                return
            try:
                await job()
            except (SQLAlchemyError, OSError) as exc:  # the database is away: the next round retries
                _log.warning("paper venue job failed; retried next round", job=getattr(job, "__name__", ""),
                             error=repr(exc))

    async def refresh(self) -> None:
        """Reload every resting paper order from the database."""
        async with self.flow.database.sessionmaker() as session:
            rows = await store.open_paper_orders(session)
        self.book.replace_all(order_from_row(row) for row in rows)

    async def on_quote(self, quote: PriceQuote) -> None:
        """A new price: try every resting order of its symbol (one at a time per instance)."""
        if not self.book.has_resting(quote.symbol):
            return
        async with self._matching:
            for order in self.book.resting(quote.symbol):
                try:
                    after = await self.flow.fill_resting(order.id, order.owner, quote)
                except (SQLAlchemyError, OSError, RuntimeError) as exc:
                    _log.warning("resting order not matched; retried on the next quote",
                                 order_id=str(order.id), error=repr(exc))
                    continue
                if after is None:
                    self.book.remove(order.id, order.symbol)
                else:
                    self.book.add(after)

    async def expire_day_orders(self, now: datetime | None = None) -> int:
        """Expire open paper day orders whose UTC day is over; how many were expired."""
        now = now or datetime.now(UTC)
        async with self.flow.database.sessionmaker() as session:
            stale = await store.stale_day_orders(session, risk_accounts.day_start(now), EXPIRY_BATCH)
        count = 0
        for row in stale:
            async with self.flow.database.sessionmaker() as session, session.begin():
                await risk_accounts.lock(session, row.owner_id, self.flow.settings)
                locked = await store.order_for_update(session, row.id)
                if locked is None:
                    continue
                order = order_from_row(locked)
                if not expired(order, now):
                    continue
                order.transition(OrderStatus.EXPIRED, now=now, reason="day order: its UTC day ended")
                await store.update_order(session, order)
                await events.order_changed(session, order)
                count += 1
            self.book.remove(order.id, order.symbol)
        return count
