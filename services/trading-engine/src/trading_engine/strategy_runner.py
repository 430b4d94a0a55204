"""Running deployed strategies on closed bars: the durable handler of `md.bar.>`.

For each bar event: the bar's close becomes the symbol's latest price (so resting paper orders see it
and a strategy's market order fills at it), then every enabled deployment of the series that has not
seen this bar decides on a window of recent bars (bar_windows: seeded from database-service with the
engine's own token, grown with every bar event, so the warehouse may lag behind). Its intents go through the
same order path and risk checks as a person's orders, as the deployment's owner and on its account,
with client order ids `strategy-<deployment>-<bar ms>-<i>`: a redelivered or replayed bar places nothing
twice. A refusal (risk, a revoked live permission, a deleted account) is recorded on the deployment and
does not fail the handler; an unavailable dependency does, and the bar is redelivered later.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import DomainError, Invalid, Unavailable, UpstreamTimeout
from aitrading.events import Event
from aitrading.market.bars import OhlcvFrame, ms_to_datetime
from aitrading.market.history import MarketData
from aitrading.market.prices import LatestPrices, PriceQuote
from aitrading.market.wire import parse_bars
from aitrading.trading import strategies
from aitrading.trading.strategy import Strategy
from trading_engine import risk_accounts, store
from trading_engine.bar_windows import BarWindows
from trading_engine.orders import OrderFlow
from trading_engine.settings import Settings

_log = structlog.get_logger(__name__)


def strategy_client_order_id(deployment_id: object, bar_time_ms: int, index: int) -> str:
    return f"strategy-{deployment_id}-{bar_time_ms}-{index}"


class StrategyRunner:
    def __init__(self, flow: OrderFlow, market: MarketData, prices: LatestPrices, settings: Settings) -> None:
        self.flow = flow
        self.windows = BarWindows(market, max_series=settings.strategy_max_series)
        self.prices = prices
        self.settings = settings

    async def on_bars(self, session: AsyncSession, event: Event) -> None:
        try:
            batch = parse_bars(event)
        except (ValueError, KeyError) as exc:
            # Malformed for good: retrying would not make it readable, so it is dropped with a trace.
            _log.error("unreadable md.bars event dropped", event_id=str(event.id), error=repr(exc))
            return
        if not batch.bars:
            return
        bars = sorted({b.time_ms: b for b in batch.bars}.values(), key=lambda b: b.time_ms)
        last = bars[-1]
        # First, before any lock is taken here: resting paper orders are matched in their own transactions.
        await self.prices.update(PriceQuote(batch.symbol, last.close,
                                            ms_to_datetime(last.time_ms + batch.timeframe.ms)))
        bar_time = ms_to_datetime(last.time_ms)
        rows = [r for r in await store.deployments_on(session, batch.symbol, batch.timeframe.value)
                if r.last_bar_time is None or r.last_bar_time < bar_time]
        if not rows:
            return
        built: dict[Any, Strategy | Invalid] = {}
        for row in rows:
            try:
                built[row.id] = strategies.build(row.strategy, row.params)
            except Invalid as exc:  # validated when deployed; a library change may retire a parameter
                built[row.id] = exc
        warmups = [s.warmup() for s in built.values() if isinstance(s, Strategy)]
        frame = OhlcvFrame.empty()
        if warmups:
            frame = await self.windows.window(batch.symbol, batch.timeframe, bars,
                                              max(warmups) + self.settings.strategy_extra_bars)
        for row in rows:
            strategy = built[row.id]
            if isinstance(strategy, Invalid):
                await store.mark_deployment_bar(session, row.id, bar_time=bar_time, error=strategy.detail,
                                                now=datetime.now(UTC))
                continue
            await self.run_one(session, row.id, row.owner_id, strategy, frame, last.time_ms)

    async def run_one(self, session: AsyncSession, deployment_id: Any, owner: Any, strategy: Strategy,
                      frame: OhlcvFrame, bar_time_ms: int) -> None:
        bar_time = ms_to_datetime(bar_time_ms)
        # The owner's lock first (as every order and fill takes it), then the deployment as it stands.
        await risk_accounts.lock(session, owner, self.settings)
        row = await store.deployment(session, deployment_id)
        seen = row is not None and row.last_bar_time is not None and row.last_bar_time >= bar_time
        if row is None or not row.enabled or seen:
            return
        intents = strategy.decide_last(frame, row.position, row.symbol)
        error: str | None = None
        for index, intent in enumerate(intents):
            intent = replace(intent, client_order_id=strategy_client_order_id(row.id, bar_time_ms, index))
            try:
                async with session.begin_nested():
                    placement = await self.flow.place(session, owner, intent, account=row.account,
                                                      strategy_id=row.id)
            except (Unavailable, UpstreamTimeout):
                raise  # a dependency is away: the whole bar is retried later
            except DomainError as refused:
                error = refused.detail
                _log.info("strategy order not placed", deployment_id=str(row.id), error=refused.detail)
                continue
            if placement.refusal is not None:
                error = placement.refusal.detail
        await store.mark_deployment_bar(session, row.id, bar_time=bar_time, error=error,
                                        now=datetime.now(UTC))
