"""Reconciling open external orders with their venues: at start, every `reconcile_interval_s`, and at
once when a strategy has placed an external order (`wake`).

Each pass claims the open external orders no instance holds (a lease in the row, so replicas split the
work and an order being sent by a request is left alone until its lease lapses), then asks each one's
venue (ExternalOrders.sync): an order that never reached its venue (the engine died between commit and send,
or the venue was unreachable) is sent now — by its own id as the client order id, so a send that did
arrive is found instead of repeated — a pending cancel is sent again, and every report is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from aitrading.errors import DomainError, Unavailable
from trading_engine import store
from trading_engine.account_orders import order_from_row
from trading_engine.orders import OrderFlow

_log = structlog.get_logger(__name__)
BATCH = 100


class Reconciler:
    name = "reconciler"

    def __init__(self, flow: OrderFlow, *, interval_s: float) -> None:
        self.flow = flow
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stop.clear()
        self._wake.set()  # the first pass runs at once: what a previous run left open is taken up
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait([task])

    async def check(self) -> None:
        if self._task is None or self._task.done():
            raise Unavailable("the reconciler is not running")

    async def run_once(self) -> int:
        """One batch of claimable open external orders, least recently asked about first; how many."""
        now = datetime.now(UTC)
        async with self.flow.database.sessionmaker() as session, session.begin():
            rows = await store.claim_external_orders(session, now, now + self.flow.lease, BATCH)
        for row in rows:
            order = order_from_row(row)
            try:
                await self.flow.external.sync(order)
            except DomainError as exc:  # e.g. the venue kind is not deployed here: asked again later
                _log.warning("order not reconciled", order_id=str(order.id), error=exc.detail)
                await self.flow.external.release(order)
            except Exception:
                # One order's failure (a venue answering something unexpected) must not stop the others
                # from being reconciled: logged with its trace, and the order is asked about again later.
                _log.exception("order not reconciled", order_id=str(order.id), venue=order.venue)
                await self.flow.external.release(order, unanswered=True)
        self.passes += 1
        return len(rows)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if await self.run_once() == BATCH:
                    self._wake.set()  # more are waiting: the next batch at once
            except (SQLAlchemyError, OSError) as exc:
                _log.warning("reconcile pass failed; retried next round", error=repr(exc))
