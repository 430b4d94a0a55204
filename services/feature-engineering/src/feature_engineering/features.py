"""Features over stored bars: load the bars (with enough history before the first row), compute, shape.

The bars come from database-service with the caller's token, so a user's own imported series work
too and an unknown symbol is database-service's 404. Enough bars before the first returned row are
loaded for every indicator to be warmed up and settled (`indicators.history_needed`), so a row's value
does not depend on how many rows were asked for; only the running totals `obv` and `ad` count from the
first bar loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aitrading.market import indicators
from aitrading.market.bars import FloatArray, IntArray, OhlcvFrame
from aitrading.market.history import MAX_LIMIT, MarketData
from aitrading.market.indicators import FeatureSpec
from aitrading.market.timeframes import Timeframe

DEFAULT_LIMIT = 500
MAX_ROWS = 10_000


@dataclass(frozen=True)
class FeatureTable:
    """Computed columns over consecutive bars, keyed by the names asked for."""

    symbol: str
    timeframe: Timeframe
    time_ms: IntArray
    columns: dict[str, FloatArray]

    def rows(self) -> list[dict[str, Any]]:
        """`[{time, <name>: value}]`; NaN stays a float here and is written as JSON null."""
        unit: Literal["s", "ms"] = "ms" if (self.time_ms % 1000).any() else "s"  # as database-service
        moments: npt.NDArray[np.datetime64] = self.time_ms.astype("datetime64[ms]")
        times = np.datetime_as_string(moments, unit=unit, timezone="UTC")
        keys = ["time", *self.columns]
        return [dict(zip(keys, values, strict=True))
                for values in zip(times.tolist(), *(c.tolist() for c in self.columns.values()), strict=True)]


def _concat(a: OhlcvFrame, b: OhlcvFrame) -> OhlcvFrame:
    return OhlcvFrame(*(np.concatenate([getattr(a, k), getattr(b, k)])
                        for k in ("time_ms", "open", "high", "low", "close", "volume")))


async def load_bars(market: MarketData, symbol: str, timeframe: Timeframe, *, history: int, limit: int,
                    start: datetime | None, end: datetime | None,
                    token: str | None) -> tuple[OhlcvFrame, int]:
    """The bars to compute on and how many of them (the last ones) are the rows asked for.

    Without `start`: the most recent `limit` bars up to `end`, after `history` earlier ones. With
    `start`: the first `limit` bars from `start`, after the `history` bars just before it.
    """
    if start is None:
        frame = await market.ohlcv(symbol, timeframe, end=end, limit=min(limit + history, MAX_LIMIT),
                                   token=token)
        return frame, min(limit, len(frame))
    wanted = await market.ohlcv(symbol, timeframe, start=start, end=end, limit=limit, token=token)
    if history == 0 or len(wanted) == 0:
        return wanted, len(wanted)
    # Bars start on whole minutes at least, so a millisecond before `start` keeps the bar at `start`
    # out whether database-service reads `end` as inclusive or not.
    before = await market.ohlcv(symbol, timeframe, end=start - timedelta(milliseconds=1),
                                limit=min(history, MAX_LIMIT), token=token)
    return _concat(before, wanted), len(wanted)


async def compute_features(market: MarketData, symbol: str, timeframe: Timeframe,
                           specs: Sequence[FeatureSpec], *, limit: int = DEFAULT_LIMIT,
                           start: datetime | None = None, end: datetime | None = None,
                           token: str | None = None) -> FeatureTable:
    frame, rows = await load_bars(market, symbol, timeframe, history=indicators.history_needed(specs),
                                  limit=limit, start=start, end=end, token=token)
    # TA-Lib and numpy over up to ~100k bars: off the event loop so other requests keep flowing.
    columns = await asyncio.to_thread(indicators.compute, frame, specs)
    first = len(frame) - rows
    return FeatureTable(symbol, timeframe, frame.time_ms[first:],
                        {name: values[first:] for name, values in columns.items()})
