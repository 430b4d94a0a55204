"""Missing bars: where consecutive stored bars are more than one bar apart.

Each gap names its first and last missing bar and how many are missing. Daily bars of anything but
crypto skip weekends (Friday → Monday is no gap). Before the first and after the last stored bar a gap
is reported only up to an explicit `start` / `end`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from aitrading.market.bars import ms_to_datetime
from aitrading.market.timeframes import Timeframe
from database_service import store
from database_service.ohlcv import find_source, time_range
from database_service.warehouse import Warehouse

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Gap:
    first: datetime
    last: datetime
    missing_bars: int


@dataclass(frozen=True)
class GapReport:
    symbol: str
    timeframe: Timeframe
    first: datetime | None
    last: datetime | None
    bars: int
    gaps: list[Gap]


def _day(ms: int) -> np.datetime64:
    return np.datetime64(ms // DAY_MS, "D")


def missing(first_ms: int, last_ms: int, timeframe: Timeframe, *, skip_weekends: bool) -> Gap | None:
    """The gap of missing bars from `first_ms` to `last_ms` (both bar starts, inclusive), or None."""
    if last_ms < first_ms:
        return None
    if not skip_weekends:
        count = (last_ms - first_ms) // timeframe.ms + 1
        return Gap(ms_to_datetime(first_ms), ms_to_datetime(last_ms), int(count))
    first_day, last_day = _day(first_ms), _day(last_ms)
    count = int(np.busday_count(first_day, last_day + np.timedelta64(1, "D")))
    if count == 0:
        return None
    first = np.busday_offset(first_day, 0, roll="forward")
    last = np.busday_offset(last_day, 0, roll="backward")
    return Gap(ms_to_datetime(_day_ms(first)), ms_to_datetime(_day_ms(last)), count)


def _day_ms(day: np.datetime64) -> int:
    return int(day.astype("datetime64[ms]").astype(np.int64))


def gaps_between(steps: list[tuple[int, int]], timeframe: Timeframe, *, skip_weekends: bool) -> list[Gap]:
    found = []
    for previous, following in steps:
        step = timeframe.ms
        gap = missing(previous + step, following - step, timeframe, skip_weekends=skip_weekends)
        if gap is not None:
            found.append(gap)
    return found


async def find(wh: Warehouse, owners: list[str], symbol: str, timeframe: Timeframe, *,
               start: datetime | None, end: datetime | None) -> GapReport:
    start_ms, end_ms = time_range(start, end)
    source = await find_source(wh, owners, symbol, timeframe)
    series = source.series
    skip_weekends = timeframe == Timeframe.D1 and series.asset_class != "crypto"
    step = timeframe.ms
    # Bars (or buckets) that start within [start, end].
    first_start = -(-start_ms // step) * step
    last_start = timeframe.bucket_ms(end_ms)
    read_end = last_start + step - 1 if source.resampled else end_ms
    span = await store.bar_span(wh, series.owner, symbol, series.timeframe, step_ms=step,
                                bucketed=source.resampled, start_ms=first_start, end_ms=read_end)
    if span is None:
        whole = missing(first_start, last_start, timeframe, skip_weekends=skip_weekends) \
            if start is not None and end is not None else None
        return GapReport(symbol, timeframe, None, None, 0, [whole] if whole else [])
    first, last, count = span
    steps = await store.bar_steps(wh, series.owner, symbol, series.timeframe, step_ms=step,
                                  bucketed=source.resampled, start_ms=first_start, end_ms=read_end)
    found = gaps_between(steps, timeframe, skip_weekends=skip_weekends)
    if start is not None:
        leading = missing(first_start, first - step, timeframe, skip_weekends=skip_weekends)
        found = ([leading] if leading else []) + found
    if end is not None:
        trailing = missing(last + step, last_start, timeframe, skip_weekends=skip_weekends)
        found = found + ([trailing] if trailing else [])
    return GapReport(symbol, timeframe, ms_to_datetime(first), ms_to_datetime(last), count, found)
