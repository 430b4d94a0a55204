"""The recent bars of each traded series, in memory, for the strategies that decide on them.

Closed bars arrive on md.bar; the warehouse (database-service) stores the same bars a little later. A
window is seeded from the warehouse and then grows with every bar event, so a strategy sees each bar
the moment it closes even while the warehouse lags behind. When a window is too short or has a hole
before the new bars (another replica consumed the bars in between), it is seeded again and merged with
what it already had.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import structlog

from aitrading.errors import Invalid, NotFound
from aitrading.market.bars import Bar, OhlcvFrame, ms_to_datetime
from aitrading.market.history import MarketData
from aitrading.market.timeframes import Timeframe

_log = structlog.get_logger(__name__)
SeriesKey = tuple[str, Timeframe]
_COLUMNS = ("time_ms", "open", "high", "low", "close", "volume")


def union(first: OhlcvFrame, second: OhlcvFrame) -> OhlcvFrame:
    """Both frames' bars by time, oldest first; `first` wins where both have a bar."""
    if not len(second):
        return first
    if not len(first):
        return second
    times = np.concatenate([first.time_ms, second.time_ms])
    _, keep = np.unique(times, return_index=True)  # sorted by time; the first occurrence: `first`'s
    return OhlcvFrame(*(np.concatenate([getattr(first, c), getattr(second, c)])[keep] for c in _COLUMNS))


def until(frame: OhlcvFrame, time_ms: int) -> OhlcvFrame:
    """The bars at or before `time_ms`."""
    return frame.slice(0, int(np.searchsorted(frame.time_ms, time_ms, side="right")))


class BarWindows:
    def __init__(self, market: MarketData, *, max_series: int = 5000) -> None:
        self.market = market
        self.max_series = max_series
        self._frames: OrderedDict[SeriesKey, OhlcvFrame] = OrderedDict()
        self.seeds = 0  # how often the warehouse was asked, for tests and logs

    async def window(self, symbol: str, timeframe: Timeframe, bars: Sequence[Bar], size: int) -> OhlcvFrame:
        """The last `size` bars of the series up to the newest of `bars` (which are taken in)."""
        ordered = sorted(bars, key=lambda b: b.time_ms)
        newest = ordered[-1].time_ms
        key = (symbol, timeframe)
        frame = self._frames.pop(key, None)
        if frame is None or len(until(frame, newest)) < size or _hole_before(frame, ordered[0], timeframe):
            stored = await self._stored(symbol, timeframe, newest, size)
            frame = stored if frame is None else union(stored, frame)
        last = int(frame.time_ms[-1]) if len(frame) else None
        # Bars older than the window's last never rewrite it.
        fresh = [b for b in ordered if last is None or b.time_ms > last]
        if fresh:
            frame = frame.append(fresh)
        if len(frame) > 2 * size:
            frame = frame.tail(size)
        self._frames[key] = frame
        while len(self._frames) > self.max_series:
            self._frames.popitem(last=False)
        return until(frame, newest).tail(size)

    async def _stored(self, symbol: str, timeframe: Timeframe, newest_ms: int, size: int) -> OhlcvFrame:
        self.seeds += 1
        try:
            return await self.market.ohlcv(symbol, timeframe, end=ms_to_datetime(newest_ms), limit=size)
        except (NotFound, Invalid) as exc:
            _log.info("no stored series; deciding on the bars of the feed", symbol=symbol,
                      timeframe=timeframe.value, reason=exc.detail)
            return OhlcvFrame.empty()


def _hole_before(frame: OhlcvFrame, first: Bar, timeframe: Timeframe) -> bool:
    """Whether bars are missing between the window and `first` (a weekend counts too: it only costs a
    look at the warehouse)."""
    return bool(len(frame)) and first.time_ms > int(frame.time_ms[-1]) + timeframe.ms
