"""Ticks → closed OHLCV bars for every platform timeframe (1m, 5m, 15m, 1h, 4h, 1d).

Each tick updates only the open one-minute bar; longer bars are unions of closed one-minute bars,
which is exact because every timeframe is a whole number of minutes aligned to the epoch (UTC). A bar
closes when a tick of a later bucket arrives or, for live feeds, when `close_due` finds wall-clock
past the end of its bucket plus a grace, so a quiet symbol's bar still closes. Feeds with simulated
time (replay, synthetic) close on data time only.

Once a bar has closed its bucket is never reopened: a tick that arrives for it later is counted as
late and left out of the bars (it is still published as a tick), so no bar is emitted twice.

High and low are compared as doubles (a double keeps the order of decimals; ties on differing strings,
possible beyond 15 significant digits, are settled exactly), and the bar keeps the exact strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from aitrading.market.bars import Bar
from aitrading.market.timeframes import TIMEFRAMES, Timeframe
from data_bridge.normalization import NormalTick

MINUTE_MS = Timeframe.M1.ms
HIGHER: tuple[Timeframe, ...] = tuple(tf for tf in TIMEFRAMES if tf is not Timeframe.M1)
ZERO = Decimal(0)

# Size strings repeat (lots of 1s, 0.1s, 100s): their Decimals are cached, bounded.
_SIZE_CACHE: dict[str, Decimal] = {}
_SIZE_CACHE_MAX = 8192


def _size(text: str) -> Decimal:
    value = _SIZE_CACHE.get(text)
    if value is None:
        if len(_SIZE_CACHE) >= _SIZE_CACHE_MAX:
            _SIZE_CACHE.clear()
        value = _SIZE_CACHE[text] = Decimal(text)
    return value


class _MinuteBar:
    """The open one-minute bar: doubles for comparison, exact strings for the result."""

    __slots__ = ("bucket", "close_s", "high_f", "high_s", "low_f", "low_s", "open_s", "volume")

    def __init__(self, bucket: int, price_f: float, price_s: str) -> None:
        self.bucket = bucket
        self.open_s = self.high_s = self.low_s = self.close_s = price_s
        self.high_f = self.low_f = price_f
        self.volume = ZERO

    def bar(self) -> Bar:
        return Bar(self.bucket, Decimal(self.open_s), Decimal(self.high_s), Decimal(self.low_s),
                   Decimal(self.close_s), self.volume)


class _OpenBar:
    """An open bar of a longer timeframe, the union of the closed minute bars folded into it."""

    __slots__ = ("bucket", "close", "high", "low", "open", "volume")

    def __init__(self, bucket: int, first: Bar) -> None:
        self.bucket = bucket
        self.open, self.high, self.low = first.open, first.high, first.low
        self.close, self.volume = first.close, first.volume

    def fold(self, bar: Bar) -> None:
        if bar.high > self.high:
            self.high = bar.high
        if bar.low < self.low:
            self.low = bar.low
        self.close = bar.close
        self.volume += bar.volume

    def bar(self) -> Bar:
        return Bar(self.bucket, self.open, self.high, self.low, self.close, self.volume)


ClosedBars = list[tuple[Timeframe, Bar]]


class BarAggregator:
    """Bars of one symbol of one feed."""

    __slots__ = ("closed_through", "late", "minute", "open")

    def __init__(self) -> None:
        self.minute: _MinuteBar | None = None
        self.open: dict[Timeframe, _OpenBar] = {}
        # Every moment before this belongs to a bar already emitted.
        self.closed_through = 0
        self.late = 0

    def add(self, ticks: Iterable[NormalTick], closed: ClosedBars) -> None:
        """Fold ticks (in time order, as the quality checks leave them); closed bars go to `closed`."""
        minute = self.minute
        for tick in ticks:
            time_ms = tick[0]
            bucket = time_ms - time_ms % MINUTE_MS
            if minute is None or bucket != minute.bucket:
                if time_ms < self.closed_through or (minute is not None and bucket < minute.bucket):
                    self.late += 1
                    continue
                self._advance(time_ms, closed)
                minute = self.minute = _MinuteBar(bucket, tick[1], tick[5][1])
            else:
                price = tick[1]
                if price > minute.high_f:
                    minute.high_f, minute.high_s = price, tick[5][1]
                elif price < minute.low_f:
                    minute.low_f, minute.low_s = price, tick[5][1]
                elif price == minute.high_f or price == minute.low_f:
                    self._settle_tie(minute, tick[5][1])
                minute.close_s = tick[5][1]
            if tick[2] != 0.0:
                size_s = tick[5][2]
                size = _SIZE_CACHE.get(size_s)
                minute.volume += size if size is not None else _size(size_s)

    @staticmethod
    def _settle_tie(minute: _MinuteBar, price_s: str) -> None:
        # Equal doubles from different strings: only possible past 15 significant digits.
        if price_s != minute.high_s and Decimal(price_s) > Decimal(minute.high_s):
            minute.high_s = price_s
        if price_s != minute.low_s and Decimal(price_s) < Decimal(minute.low_s):
            minute.low_s = price_s

    def _advance(self, time_ms: int, closed: ClosedBars) -> None:
        """A tick at `time_ms` opens a new minute: close the minute and every longer bar it ends."""
        self._close_minute(closed)
        for timeframe in HIGHER:
            current = self.open.get(timeframe)
            if current is not None and timeframe.bucket_ms(time_ms) != current.bucket:
                self._close(timeframe, closed)

    def close_due(self, now_ms: int, grace_ms: int, closed: ClosedBars) -> None:
        """Close every bar whose bucket ended more than `grace_ms` before `now_ms` (live feeds)."""
        minute = self.minute
        if minute is not None and minute.bucket + MINUTE_MS + grace_ms <= now_ms:
            self._close_minute(closed)
        for timeframe in HIGHER:
            current = self.open.get(timeframe)
            if current is not None and current.bucket + timeframe.ms + grace_ms <= now_ms:
                self._close(timeframe, closed)

    def _close_minute(self, closed: ClosedBars) -> None:
        minute, self.minute = self.minute, None
        if minute is None:
            return
        bar = minute.bar()
        closed.append((Timeframe.M1, bar))
        self.closed_through = max(self.closed_through, minute.bucket + MINUTE_MS)
        for timeframe in HIGHER:
            bucket = timeframe.bucket_ms(bar.time_ms)
            current = self.open.get(timeframe)
            if current is not None and current.bucket != bucket:
                self._close(timeframe, closed)
                current = None
            if current is None:
                self.open[timeframe] = _OpenBar(bucket, bar)
            else:
                current.fold(bar)

    def _close(self, timeframe: Timeframe, closed: ClosedBars) -> None:
        current = self.open.pop(timeframe, None)
        if current is None:
            return
        closed.append((timeframe, current.bar()))
        self.closed_through = max(self.closed_through, current.bucket + timeframe.ms)


def aggregate(ticks: Iterable[NormalTick]) -> ClosedBars:
    """Bars closed by a run of ticks (data time only); for tests and offline use."""
    closed: ClosedBars = []
    BarAggregator().add(ticks, closed)
    return closed
