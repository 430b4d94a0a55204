"""The feed sink: normalization → quality checks → bar aggregation → quotes → publishing.

Every feed (replay, synthetic, CCXT, MT5, a WebSocket ingest connection) hands its data here. The
per-tick work is synchronous and batch-wise; the only awaits are in the background loops (bar-close
timer, quality flush, stale check) and in the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import structlog

from aitrading.market.bars import Bar, Tick
from aitrading.market.timeframes import Timeframe
from aitrading.metrics import ServiceMetrics
from data_bridge.aggregation import BarAggregator, ClosedBars
from data_bridge.feeds import FeedContext
from data_bridge.normalization import NormalTick, normalize_rows, normalize_ticks
from data_bridge.publishing import Publisher
from data_bridge.quality import (
    INVALID_BAR,
    LATE,
    STALE,
    QualityLedger,
    SpikeRule,
    StaleWatch,
    SymbolQuality,
    check_ticks,
    detail,
)
from data_bridge.quotes import QuoteBook
from data_bridge.settings import Settings

_log = structlog.get_logger("data_bridge.pipeline")

@dataclass(slots=True)
class SymbolState:
    quality: SymbolQuality = field(default_factory=SymbolQuality)
    bars: BarAggregator = field(default_factory=BarAggregator)
    # Last bar time delivered per timeframe by the source itself (replay, exchange candles).
    delivered: dict[Timeframe, int] = field(default_factory=dict)
    # Wall-clock ms when the last accepted tick arrived (the feed's clock, see close_due_bars).
    arrival_ms: int = 0


def _last_quote(ticks: list[NormalTick]) -> tuple[str | None, str | None]:
    """The latest bid and ask of a batch (trades without a quote do not erase them)."""
    bid = ask = None
    for tick in reversed(ticks):
        row = tick[5]
        if bid is None:
            bid = row[3]
        if ask is None:
            ask = row[4]
        if bid is not None and ask is not None:
            break
    return bid, ask


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    dropped: int


class Pipeline:
    """Implements `FeedSink` for every feed of this instance."""

    name = "pipeline"

    def __init__(self, settings: Settings, publisher: Publisher, quotes: QuoteBook,
                 metrics: ServiceMetrics, *, active_feeds: Callable[[], Iterable[FeedContext]] = tuple,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.publisher = publisher
        self.quotes = quotes
        self.rule = SpikeRule(sigma=settings.spike_sigma, warmup=settings.spike_warmup,
                              ewma_lambda=settings.spike_ewma_lambda, min_return=settings.spike_min_return,
                              confirm=settings.spike_confirm, keep=settings.keep_spikes)
        self.ledger = QualityLedger()
        self.stale = StaleWatch(settings.stale_after_s)
        self.active_feeds = active_feeds
        self.clock = clock
        self.grace_ms = round(settings.bar_close_grace_s * 1000)
        self._states: dict[tuple[UUID, str], SymbolState] = {}
        self._live: dict[tuple[UUID, str], tuple[FeedContext, str]] = {}  # key → (feed, venue)
        self._started: dict[UUID, datetime] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.issues = metrics.counter("data_bridge_quality_issues_total",
                                      "Ticks and bars that failed a quality check", ("check",))
        self.ticks_in = metrics.counter("data_bridge_ticks_accepted_total", "Ticks that passed every check")
        self.bars_out = metrics.counter("data_bridge_bars_total", "Closed bars published", ("timeframe",))

    # --- FeedSink -----------------------------------------------------------------------------------

    async def ticks(self, feed: FeedContext, ticks: Sequence[Tick]) -> None:
        await self.publisher.room()
        by_symbol: dict[str, list[Tick]] = {}
        for tick in ticks:
            by_symbol.setdefault(tick.symbol, []).append(tick)
        for symbol, group in by_symbol.items():
            issues: Counter[str] = Counter()
            self._accept(feed, symbol, feed.venue, normalize_ticks(group, issues), issues)

    async def bars(self, feed: FeedContext, timeframe: Timeframe, symbol: str, bars: Sequence[Bar]) -> None:
        await self.publisher.room()
        state = self._state(feed, symbol, feed.venue)
        last = state.delivered.get(timeframe, -1)
        good: list[Bar] = []
        for bar in bars:
            if bar.time_ms <= last or timeframe.bucket_ms(bar.time_ms) != bar.time_ms or bar.problems():
                continue
            good.append(bar)
            last = bar.time_ms
        rejected = len(bars) - len(good)
        if rejected:
            self._report(symbol, feed.venue, Counter({INVALID_BAR: rejected}))
        if not good:
            return
        state.delivered[timeframe] = last
        self.publisher.add_bars(symbol, feed.venue, timeframe, feed.synthetic, good)
        self.bars_out.labels(timeframe.value).inc(len(good))
        final = good[-1]
        self.quotes.update(symbol, str(final.close), None, None, final.time_ms, feed.venue, feed.id,
                           feed.synthetic)
        feed.counters.bars += len(good)
        feed.touch()

    # --- WebSocket ingest ---------------------------------------------------------------------------

    def ingest(self, feed: FeedContext, symbol: str, venue: str, rows: Sequence[object]) -> IngestResult:
        """Raw rows of one symbol (already a canonical symbol) from an ingest connection."""
        issues: Counter[str] = Counter()
        normal = normalize_rows(rows, issues)
        accepted = self._accept(feed, symbol, venue, normal, issues)
        return IngestResult(accepted, len(rows) - accepted)

    # --- the per-batch path -------------------------------------------------------------------------

    def _accept(self, feed: FeedContext, symbol: str, venue: str, normal: list[NormalTick],
                issues: Counter[str]) -> int:
        state = self._state(feed, symbol, venue)
        accepted = check_ticks(state.quality, normal, self.rule, issues) if normal else normal
        if accepted:
            closed: ClosedBars = []
            late_before = state.bars.late
            state.bars.add(accepted, closed)
            if state.bars.late != late_before:
                issues[LATE] += state.bars.late - late_before
            self.publisher.add_ticks(symbol, venue, feed.synthetic, [tick[5] for tick in accepted])
            if closed:
                self._publish_bars(feed, symbol, venue, closed)
            last = accepted[-1][5]
            bid, ask = _last_quote(accepted)
            self.quotes.update(symbol, last[1], bid, ask, last[0], venue, feed.id, feed.synthetic)
            feed.counters.ticks += len(accepted)
            feed.touch()
            state.arrival_ms = round(self.clock() * 1000)
            self.ticks_in.inc(len(accepted))
        if issues:
            self._report(symbol, venue, issues)
        return len(accepted)

    def _publish_bars(self, feed: FeedContext, symbol: str, venue: str, closed: ClosedBars) -> None:
        by_timeframe: dict[Timeframe, list[Bar]] = {}
        for timeframe, bar in closed:
            by_timeframe.setdefault(timeframe, []).append(bar)
        for timeframe, bars in by_timeframe.items():
            self.publisher.add_bars(symbol, venue, timeframe, feed.synthetic, bars)
            self.bars_out.labels(timeframe.value).inc(len(bars))
        feed.counters.bars += len(closed)

    def _report(self, symbol: str, venue: str, issues: Counter[str]) -> None:
        for check, count in issues.items():
            self.issues.labels(check).inc(count)
        self.ledger.add(symbol, venue, issues)

    def _state(self, feed: FeedContext, symbol: str, venue: str) -> SymbolState:
        key = (feed.id, symbol)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = SymbolState()
            if feed.live:
                self._live[key] = (feed, venue)
        return state

    # --- feed lifecycle -----------------------------------------------------------------------------

    def started(self, feed: FeedContext) -> None:
        """A feed (re)starts: its bars and checks begin afresh."""
        self.forget(feed.id)
        self._started[feed.id] = datetime.now(UTC)

    def forget(self, feed_id: UUID) -> None:
        """A feed stopped: its open bars are dropped unfinished (a partial bar is not a bar)."""
        for key in [key for key in self._states if key[0] == feed_id]:
            del self._states[key]
            self._live.pop(key, None)
        self._started.pop(feed_id, None)
        self.stale.forget(feed_id)

    # --- background loops ---------------------------------------------------------------------------

    def close_due_bars(self, now_ms: int | None = None) -> None:
        """Close live feeds' bars whose bucket ended more than the grace ago, on the feed's clock.

        The feed's clock is wall-clock shifted by how far its data lagged on arrival: the same as
        wall-clock for a real-time feed, so a quiet symbol's bar closes a grace after its minute;
        history pushed through ingest at full speed keeps closing bars on its own data time.
        """
        now_ms = round(self.clock() * 1000) if now_ms is None else now_ms
        for key, (feed, venue) in list(self._live.items()):
            state = self._states.get(key)
            if state is None or state.quality.last_time < 0:
                continue
            feed_now = state.quality.last_time + (now_ms - state.arrival_ms)
            closed: ClosedBars = []
            state.bars.close_due(feed_now, self.grace_ms, closed)
            if closed:
                self._publish_bars(feed, key[1], venue, closed)

    def flush_quality(self) -> None:
        for symbol, venue, check, count in self.ledger.drain():
            self.publisher.add_quality(symbol, venue, check, count,
                                       detail(check, count, self.settings.quality_flush_s))

    def check_stale(self, now: datetime | None = None) -> list[FeedContext]:
        now = now or datetime.now(UTC)
        feeds = {feed.id: feed for feed in self.active_feeds()}
        known = [(feed.id, feed.counters.last_data_at, self._started.get(feed.id, now))
                 for feed in feeds.values()]
        stale = [feeds[key] for key in self.stale.newly_stale(known, now) if isinstance(key, UUID)]
        for feed in stale:
            for symbol in feed.symbols:
                self._report(symbol, feed.venue, Counter({STALE: 1}))
        return stale

    async def start(self) -> None:
        s = self.settings
        self._tasks = [
            asyncio.create_task(self._every(1.0, self.close_due_bars), name="bar-close-timer"),
            asyncio.create_task(self._every(s.quality_flush_s, self.flush_quality), name="quality-flush"),
            asyncio.create_task(self._every(s.stale_check_interval_s, self.check_stale), name="stale-check"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.flush_quality()

    async def check(self) -> None:
        """Nothing external: the bus and the database report their own health."""

    @staticmethod
    async def _every(interval_s: float, action: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                action()
            except Exception:  # a failed round is logged; the next one runs regardless
                _log.exception("pipeline background round failed", action=getattr(action, "__name__", "?"))
