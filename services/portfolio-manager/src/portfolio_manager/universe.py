"""The return history of a universe of symbols, read from database-service with the caller's token.

Bars are aligned on the times every symbol has (an inner join), so a market that trades on days the
others do not adds no fake flat returns. When the join leaves fewer bars than asked for (calendars
differ), more history is read, up to a few rounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from aitrading.errors import Invalid, NotFound
from aitrading.market.history import MAX_LIMIT, MarketData
from aitrading.market.timeframes import Timeframe
from portfolio_manager.allocation import AlignedCloses, FloatArray, IntArray, align, simple_returns

READ_ROUNDS = 3


async def _closes(market: MarketData, symbol: str, timeframe: Timeframe, limit: int,
                  token: str | None) -> tuple[IntArray, FloatArray]:
    try:
        frame = await market.ohlcv(symbol, timeframe, limit=limit, token=token)
    except (NotFound, Invalid) as exc:
        refused = NotFound if isinstance(exc, NotFound) else Invalid
        raise refused(f"{symbol}: {exc.detail}",
                      errors=[{"field": "symbols", "reason": f"{symbol}: {exc.detail}"}]) from None
    return frame.time_ms, frame.close


async def aligned_closes(market: MarketData, symbols: Sequence[str], timeframe: Timeframe, *, bars: int,
                         token: str | None) -> AlignedCloses:
    """The most recent closes of `symbols` at common times: at least `bars` of them if history allows."""
    limit = min(bars, MAX_LIMIT)
    aligned = AlignedCloses(list(symbols), np.empty(0, np.int64), np.empty((0, len(symbols))))
    for _ in range(READ_ROUNDS):
        series = await asyncio.gather(*(_closes(market, s, timeframe, limit, token) for s in symbols))
        aligned = align(dict(zip(symbols, series, strict=True)))
        exhausted = all(len(times) < limit for times, _ in series)
        if len(aligned.time_ms) >= bars or exhausted or limit >= MAX_LIMIT:
            break
        limit = min(limit * 2, MAX_LIMIT)
    return aligned


def returns_of(aligned: AlignedCloses, *, lookback: int, min_observations: int) -> FloatArray:
    """The last `lookback` simple returns; 422 naming `symbols` when fewer than `min_observations`."""
    closes = aligned.closes[-(lookback + 1):]
    if len(closes) - 1 < min_observations:
        common = max(len(closes) - 1, 0)
        raise Invalid(f"the symbols share {common} return observations; at least {min_observations} "
                      "are needed", errors=[{"field": "symbols",
                                             "reason": f"only {common} common bars (need "
                                                       f"{min_observations + 1})"}])
    if not np.all(closes > 0):
        raise Invalid("the history has non-positive closes",
                      errors=[{"field": "symbols", "reason": "non-positive closes in the window"}])
    return simple_returns(closes)

