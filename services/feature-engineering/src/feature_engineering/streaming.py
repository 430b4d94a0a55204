"""Features on every closed bar: a rolling window of bars per series, and the streaming set over it.

A series' window is seeded from database-service (the service's own token: public series) when its
first bar arrives, and again after a gap, since this replica may have missed bars another replica or an
outage took; bars from the feed are then appended. Only bars newer than the window's last one count; a
bar with the same time replaces it (a correction) and is computed again; older ones were seen already.

The streaming set is `Settings.stream_indicators` plus every indicator of every user set marked
`stream`, each computed once and published under its canonical name (`rsi_14`, `macd_12_26_9_signal`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading import outbox
from aitrading.errors import Invalid, NotFound
from aitrading.events import Event
from aitrading.market import indicators
from aitrading.market.bars import Bar, OhlcvFrame, ms_to_datetime
from aitrading.market.history import MarketData
from aitrading.market.indicators import FeatureSpec
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import parse_bars
from feature_engineering import events, store

_log = structlog.get_logger(__name__)
SeriesKey = tuple[str, Timeframe]


@dataclass
class _Window:
    frame: OhlcvFrame
    capacity: int


class SeriesWindows:
    """The last bars of each series in memory, at least `min_bars` and as many as the indicators need."""

    def __init__(self, market: MarketData, *, min_bars: int, max_series: int) -> None:
        self.market = market
        self.min_bars = min_bars
        self.max_series = max_series
        self._windows: OrderedDict[SeriesKey, _Window] = OrderedDict()
        self.seeds = 0  # how often database-service was asked, for tests and logs

    def __len__(self) -> int:
        return len(self._windows)

    def frame(self, symbol: str, timeframe: Timeframe) -> OhlcvFrame | None:
        window = self._windows.get((symbol, timeframe))
        return window.frame if window else None

    async def add(self, symbol: str, timeframe: Timeframe, bars: Sequence[Bar], *,
                  history: int) -> tuple[OhlcvFrame, int]:
        """The series' window with `bars` added, and how many of its last bars are new or corrected."""
        if not bars:
            frame = self.frame(symbol, timeframe)
            return (frame if frame is not None else OhlcvFrame.empty()), 0
        ordered = sorted({b.time_ms: b for b in bars}.values(), key=lambda b: b.time_ms)
        capacity = max(self.min_bars, history + 1)
        key = (symbol, timeframe)
        window = self._windows.pop(key, None)
        first = ordered[0].time_ms
        if window is None or window.capacity < capacity or self._gap_before(window.frame, first, timeframe):
            seeded = await self._seed(symbol, timeframe, before_ms=first, bars=capacity)
            # Nothing stored (a series only the feed knows): keep what the feed gave so far.
            window = _Window(seeded if len(seeded) or window is None else window.frame, capacity)
        frame = window.frame
        last = int(frame.time_ms[-1]) if len(frame) else None
        fresh = [b for b in ordered if last is None or b.time_ms >= last]
        if fresh:
            frame = frame.append(fresh)
            if len(frame) > 2 * capacity:  # trimmed now and then, not on every bar
                frame = frame.tail(capacity)
        self._windows[key] = _Window(frame, capacity)
        while len(self._windows) > self.max_series:
            self._windows.popitem(last=False)
        return frame, len(fresh)

    @staticmethod
    def _gap_before(frame: OhlcvFrame, first_ms: int, timeframe: Timeframe) -> bool:
        return bool(len(frame)) and first_ms > int(frame.time_ms[-1]) + timeframe.ms

    async def _seed(self, symbol: str, timeframe: Timeframe, *, before_ms: int, bars: int) -> OhlcvFrame:
        """The `bars` stored bars before `before_ms`; none for a series database-service does not have."""
        self.seeds += 1
        try:
            return await self.market.ohlcv(symbol, timeframe, end=ms_to_datetime(before_ms - 1), limit=bars)
        except NotFound:
            _log.info("series not in the warehouse; computing from the feed alone", symbol=symbol,
                      timeframe=timeframe.value)
            return OhlcvFrame.empty()


class FeatureStream:
    """The durable handler of md.bar.>: new bars in, one features.computed event per new bar out."""

    def __init__(self, windows: SeriesWindows, configured: Sequence[str], *,
                 latency: Histogram | None = None) -> None:
        self.windows = windows
        self.configured = list(configured)
        self.latency = latency
        self._specs: tuple[tuple[str, ...], list[FeatureSpec]] | None = None

    async def specs(self, session: AsyncSession) -> list[FeatureSpec]:
        """The streaming set now: configured names and the names of every streamed user set."""
        names = tuple(dict.fromkeys([*self.configured, *await store.streamed_indicators(session)]))
        if self._specs is not None and self._specs[0] == names:
            return self._specs[1]
        specs: dict[str, FeatureSpec] = {}
        for name in names:
            try:
                spec = indicators.parse(name)
            except Invalid as refused:  # validated when saved; a catalogue change may retire a name
                _log.warning("streamed indicator no longer valid; skipped", indicator=name,
                             reason=refused.detail)
                continue
            specs.setdefault(spec.canonical, spec)
        self._specs = (names, list(specs.values()))
        return self._specs[1]

    async def on_bars(self, session: AsyncSession, event: Event) -> None:
        try:
            batch = parse_bars(event)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Malformed for good: retrying would not make it readable, so it is dropped with a trace.
            _log.error("unreadable md.bars event dropped", event_id=str(event.id), error=repr(exc))
            return
        for computed in await self.compute(session, batch.symbol, batch.timeframe, batch.bars):
            await outbox.enqueue(session, computed)

    async def compute(self, session: AsyncSession, symbol: str, timeframe: Timeframe,
                      bars: Sequence[Bar]) -> list[Event]:
        """The features.computed events of the bars that are new to the series' window."""
        specs = await self.specs(session)
        frame, fresh = await self.windows.add(symbol, timeframe, bars,
                                              history=indicators.history_needed(specs))
        if not fresh or not specs:
            return []
        started = time.perf_counter()
        columns = indicators.compute(frame, specs)
        out = []
        for row in range(len(frame) - fresh, len(frame)):
            values = {spec.canonical: float(columns[spec.name][row]) for spec in specs}
            out.append(events.features_computed(symbol, timeframe, int(frame.time_ms[row]), values))
        if self.latency is not None:
            self.latency.observe((time.perf_counter() - started) / fresh)
        return out
