"""Reading bars: the series that answers, the range and limit, resampling of finer stored bars."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from aitrading.errors import Invalid, NotFound
from aitrading.market.bars import datetime_to_ms
from aitrading.market.timeframes import Timeframe
from database_service import store
from database_service.series import Source, resolve
from database_service.warehouse import Warehouse

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
# DateTime64's range in ClickHouse: an open end of a range reads as these.
EARLIEST_MS = datetime_to_ms(datetime(1900, 1, 1, tzinfo=UTC))
LATEST_MS = datetime_to_ms(datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC))


@dataclass(frozen=True)
class Ohlcv:
    symbol: str
    timeframe: Timeframe
    source: Source
    bars_json: bytes  # the JSON array of the bars, oldest first, as the API returns them


def time_range(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """[start, end] in epoch ms, open ends widened to what the warehouse stores; 422 when reversed."""
    start_ms = EARLIEST_MS if start is None else datetime_to_ms(start)
    end_ms = LATEST_MS if end is None else datetime_to_ms(end)
    for name, value in (("start", start_ms), ("end", end_ms)):
        if not EARLIEST_MS <= value <= LATEST_MS:
            raise Invalid(f"{name} is outside 1900-01-01..2299-12-31",
                          errors=[{"field": name, "reason": "must lie between 1900-01-01 and 2299-12-31"}])
    if start_ms > end_ms:
        raise Invalid("start is after end", errors=[{"field": "start", "reason": "must not be after end"}])
    return start_ms, end_ms


async def find_source(wh: Warehouse, owners: list[str], symbol: str, timeframe: Timeframe) -> Source:
    """The series answering (symbol, timeframe) for the caller; 404 when there is none they may see."""
    series = await store.visible_series(wh, owners, symbol)
    if not series:
        raise NotFound(f"no market data for symbol {symbol!r}")
    source = resolve(series, owners, timeframe)
    if source is None:
        stored = sorted({s.timeframe for s in series if s.timeframe}, key=lambda t: Timeframe(t).seconds)
        have = ", ".join(stored) or "ticks only"
        raise NotFound(f"no {timeframe.value} bars for {symbol!r}: stored are {have}, "
                       f"and {timeframe.value} cannot be derived from them")
    return source


async def read(wh: Warehouse, owners: list[str], symbol: str, timeframe: Timeframe, *,
               start: datetime | None, end: datetime | None, limit: int = DEFAULT_LIMIT) -> Ohlcv:
    """Bars oldest first: from `start` on, or the most recent `limit` (up to `end`) without a start."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be 1..{MAX_LIMIT}", errors=[{"field": "limit",
                                                                 "reason": f"must be 1..{MAX_LIMIT}"}])
    start_ms, end_ms = time_range(start, end)
    source = await find_source(wh, owners, symbol, timeframe)
    series = source.series
    if source.resampled:
        # A bucket is returned when its start lies in [start, end], built from all its stored bars.
        start_ms = -(-start_ms // timeframe.ms) * timeframe.ms
        end_ms = timeframe.bucket_ms(end_ms) + timeframe.ms - 1
    # Rendered by the warehouse: building 100,000 bars as Python objects takes far longer than the query.
    bars = await store.bars_json(wh, series.owner, symbol, series.timeframe, start_ms=start_ms, end_ms=end_ms,
                                 limit=limit, newest_first=start is None,
                                 resample_seconds=timeframe.seconds if source.resampled else None)
    return Ohlcv(symbol, timeframe, source, bars)


def iso_times(times_ms: list[int]) -> list[str]:
    """Epoch ms as ISO 8601 UTC (`2018-12-31T00:00:00Z`, milliseconds only when there are some)."""
    if not times_ms:
        return []
    stamps = np.asarray(times_ms, dtype=np.int64)
    unit: Literal["s", "ms"] = "s" if not (stamps % 1000).any() else "ms"
    moments: npt.NDArray[np.datetime64] = stamps.astype("datetime64[ms]")
    return [s + "Z" for s in np.datetime_as_string(moments, unit=unit).tolist()]
