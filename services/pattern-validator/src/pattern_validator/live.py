"""Live detection: a rolling window of bars per (symbol, timeframe), fed by closed bars from NATS.

A window starts from database-service (the service's own token: public series) and then grows with
each bar event, keeping the last `window_bars` bars. A bar that does not follow the window's last one
(a replay, or bars missing in between) reseeds the window up to that bar, so detections see the bars
that really preceded it. A series database-service does not know starts empty and fills from events.

Replicas sharing the durable split bar events between them; the reseed on a gap keeps each replica's
windows right as long as database-service has stored the bars the other replicas took.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aitrading.errors import NotFound
from aitrading.market.bars import Bar, OhlcvFrame, ms_to_datetime
from aitrading.market.history import MarketData
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import BarBatch
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.detections import Detection
from pattern_validator.scan import detect_last

SeriesKey = tuple[str, Timeframe]


@dataclass(frozen=True)
class BarDetections:
    """What the bar at `time_ms` completed, and how long finding it took."""

    time_ms: int
    detections: list[Detection]
    seconds: float


class LiveWindows:
    """Rolling bar windows per series (least recently updated forgotten first) and their detection."""

    def __init__(self, market: MarketData | None, *, window_bars: int, max_series: int,
                 chart: ChartSettings) -> None:
        self.market = market  # None: no seeding (no service credentials); windows fill from events
        self.window_bars = window_bars
        self.max_series = max_series
        self.chart = chart
        self._windows: OrderedDict[SeriesKey, OhlcvFrame] = OrderedDict()

    def window(self, symbol: str, timeframe: Timeframe) -> OhlcvFrame | None:
        return self._windows.get((symbol, timeframe))

    async def _seed(self, symbol: str, timeframe: Timeframe, before_ms: int) -> OhlcvFrame:
        """The stored bars up to (not including) `before_ms`; empty for a series not stored."""
        if self.market is None:
            return OhlcvFrame.empty()
        try:
            # `end` is inclusive: one millisecond earlier leaves the incoming bar to the event.
            frame = await self.market.ohlcv(symbol, timeframe, end=ms_to_datetime(before_ms - 1),
                                            limit=self.window_bars)
        except NotFound:
            return OhlcvFrame.empty()
        return frame.slice(0, int(np.searchsorted(frame.time_ms, before_ms)))

    async def on_bars(self, batch: BarBatch) -> list[BarDetections]:
        """Add the batch's bars to their window; the detections each bar completed, oldest bar first."""
        if not batch.bars:
            return []
        key = (batch.symbol, batch.timeframe)
        bars = sorted(batch.bars, key=lambda b: b.time_ms)
        first = bars[0].time_ms
        frame = self._windows.get(key)
        if frame is None or not len(frame) or not 0 <= first - int(frame.time_ms[-1]) <= batch.timeframe.ms:
            # New, replayed, or with bars missing in between (down longer than the stream keeps bars,
            # another replica took some, or only a market pause): the warehouse knows what came before.
            seeded = await self._seed(batch.symbol, batch.timeframe, first)
            if len(seeded) or frame is None:
                frame = seeded
            else:  # the warehouse has nothing: keep what this window had before `first`
                frame = frame.slice(0, int(np.searchsorted(frame.time_ms, first)))
        frames = _successive(frame, bars, self.window_bars)
        self._windows[key] = frames[-1]
        self._windows.move_to_end(key)
        while len(self._windows) > self.max_series:
            self._windows.popitem(last=False)
        # Detection is CPU work (a few ms per bar); a replayed batch can hold hundreds of bars.
        return await asyncio.to_thread(self._detect_each, frames, bars)

    def _detect_each(self, frames: Sequence[OhlcvFrame], bars: Sequence[Bar]) -> list[BarDetections]:
        out = []
        for frame, bar in zip(frames, bars, strict=True):
            started = time.perf_counter()
            found = detect_last(frame, self.chart)
            out.append(BarDetections(bar.time_ms, found, time.perf_counter() - started))
        return out


def _successive(frame: OhlcvFrame, bars: Sequence[Bar], keep: int) -> list[OhlcvFrame]:
    """The window after each bar is added (each the last `keep` bars)."""
    frames = []
    for bar in bars:
        frame = frame.append([bar]).tail(keep)
        frames.append(frame)
    return frames
