"""Replay of stored daily or intraday bars at a chosen speed.

Two sources: "bundled" — real daily history that ships in the `arch` package (S&P 500 as SPX and the
NASDAQ composite as NDX, 1999-2018) so a machine with no warehouse still has real data — and
"warehouse" — any symbol database-service stores, read through MarketData. Bars of all symbols are
handed over in time order; the feed finishes once the last one is out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import groupby
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aitrading.errors import DomainError, Invalid, Unavailable, UpstreamTimeout
from aitrading.market.bars import Bar, OhlcvFrame, datetime_to_ms
from aitrading.market.history import MAX_LIMIT
from aitrading.market.timeframes import Timeframe
from data_bridge.feeds import Feed

# Time steps handed to the sink at once when replaying as fast as possible (speed 0).
FAST_STEPS = 1000
WAREHOUSE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _load_sp500() -> Any:
    import arch.data.sp500

    return arch.data.sp500.load()


def _load_nasdaq() -> Any:
    import arch.data.nasdaq

    return arch.data.nasdaq.load()


BUNDLED: dict[str, Callable[[], Any]] = {"SPX": _load_sp500, "NDX": _load_nasdaq}


class ReplayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["bundled", "warehouse"] = "bundled"
    speed: float = Field(10.0, ge=0, le=1_000_000, description="bars per second; 0 = as fast as possible")
    start: datetime | None = None
    end: datetime | None = None
    timeframe: Timeframe = Timeframe.D1
    # Publish under another name (SPX → "SPX-REPLAY"): one alias for a single symbol, or a map.
    publish_as: str | dict[str, str] | None = None

    @model_validator(mode="after")
    def _range(self) -> ReplayParams:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self

    def alias(self, symbol: str) -> str:
        if isinstance(self.publish_as, str):
            return self.publish_as
        if isinstance(self.publish_as, dict):
            return self.publish_as.get(symbol, symbol)
        return symbol


def _bars_from_frame(frame: OhlcvFrame) -> list[Bar]:
    # repr() gives the shortest decimal that round-trips the stored double: 1229.22998, not 1229.2299804…
    return [Bar(int(t), Decimal(repr(float(o))), Decimal(repr(float(h))), Decimal(repr(float(lo))),
                Decimal(repr(float(c))), Decimal(repr(float(v))).normalize())
            for t, o, h, lo, c, v in zip(frame.time_ms, frame.open, frame.high, frame.low, frame.close,
                                         frame.volume, strict=True)]


def bundled_bars(symbol: str, start: datetime | None = None, end: datetime | None = None) -> list[Bar]:
    """The bundled daily bars of SPX or NDX, oldest first, within [start, end)."""
    data = BUNDLED[symbol]()
    start_ms = datetime_to_ms(start) if start is not None else None
    end_ms = datetime_to_ms(end) if end is not None else None
    bars: list[Bar] = []
    for moment, row in zip(data.index, data.itertuples(index=False), strict=True):
        time_ms = datetime_to_ms(moment.to_pydatetime().replace(tzinfo=UTC))
        if (start_ms is not None and time_ms < start_ms) or (end_ms is not None and time_ms >= end_ms):
            continue
        bars.append(Bar(time_ms, Decimal(repr(float(row.Open))), Decimal(repr(float(row.High))),
                        Decimal(repr(float(row.Low))), Decimal(repr(float(row.Close))),
                        Decimal(int(row.Volume))))
    return bars


class ReplayFeed(Feed):
    kind: ClassVar[str] = "replay"
    Params: ClassVar[type[BaseModel]] = ReplayParams
    # Simulated time: bars arrive closed from history.
    live: ClassVar[bool] = False

    @classmethod
    def check(cls, symbols: Sequence[str], params: BaseModel) -> None:
        assert isinstance(params, ReplayParams)
        if params.source == "bundled":
            unknown = [s for s in symbols if s not in BUNDLED]
            if unknown:
                raise Invalid(f"the bundled history has {', '.join(BUNDLED)}, not {', '.join(unknown)}",
                              errors=[{"field": "symbols",
                                       "reason": f"bundled replay serves only {', '.join(BUNDLED)}"}])
            if params.timeframe is not Timeframe.D1:
                raise Invalid("the bundled history is daily",
                              errors=[{"field": "params.timeframe", "reason": "bundled replay is 1d only"}])
        if isinstance(params.publish_as, str) and len(symbols) != 1:
            raise Invalid("one alias needs exactly one symbol",
                          errors=[{"field": "params.publish_as",
                                   "reason": "a single alias needs one symbol; map symbol to alias instead"}])
        if isinstance(params.publish_as, dict):
            strangers = sorted(set(params.publish_as) - set(symbols))
            if strangers:
                raise Invalid(f"aliases for symbols the feed does not replay: {', '.join(strangers)}",
                              errors=[{"field": "params.publish_as",
                                       "reason": f"not among symbols: {', '.join(strangers)}"}])
        aliases = [params.alias(s) for s in symbols]
        if any(not a.strip() for a in aliases) or len(set(aliases)) != len(aliases):
            raise Invalid("aliases must be non-empty and distinct",
                          errors=[{"field": "params.publish_as", "reason": "must be non-empty and distinct"}])

    async def run(self) -> None:
        params = self.params
        assert isinstance(params, ReplayParams)
        series = {symbol: await self._load(symbol, params) for symbol in self.context.symbols}
        steps = sorted((bar.time_ms, i, bar) for i, symbol in enumerate(self.context.symbols)
                       for bar in series[symbol])
        by_step = [list(group) for _, group in groupby(steps, key=lambda item: item[0])]
        if params.speed == 0:
            for first in range(0, len(by_step), FAST_STEPS):
                await self._emit([item for step in by_step[first:first + FAST_STEPS] for item in step])
                await asyncio.sleep(0)  # let the publisher and the API run between chunks
            return
        began = time.monotonic()
        for n, step in enumerate(by_step):
            due_in = n / params.speed - (time.monotonic() - began)
            if due_in > 0:
                await asyncio.sleep(due_in)
            await self._emit(step)

    async def _emit(self, items: list[tuple[int, int, Bar]]) -> None:
        params = self.params
        assert isinstance(params, ReplayParams)
        for i, group in groupby(sorted(items, key=lambda item: item[1]), key=lambda item: item[1]):
            alias = params.alias(self.context.symbols[i])
            await self.sink.bars(self.context, params.timeframe, alias, [b for _, _, b in group])

    async def _load(self, symbol: str, params: ReplayParams) -> list[Bar]:
        if params.source == "bundled":
            return await asyncio.to_thread(bundled_bars, symbol, params.start, params.end)
        return await self._load_warehouse(symbol, params)

    async def _load_warehouse(self, symbol: str, params: ReplayParams) -> list[Bar]:
        """Every stored bar in range, page by page; an unreachable warehouse is retried with backoff."""
        bars: list[Bar] = []
        cursor = params.start or WAREHOUSE_EPOCH
        delay = self.deps.settings.feed_backoff_initial_s
        while True:
            try:
                frame = await self.deps.market.ohlcv(symbol, params.timeframe, start=cursor, end=params.end,
                                                     limit=MAX_LIMIT)
            except (Unavailable, UpstreamTimeout) as exc:
                self.context.counters.error(f"warehouse: {exc}")
                self.context.counters.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.deps.settings.feed_backoff_max_s)
                continue
            except DomainError as exc:  # unknown symbol, bad range: retrying cannot help
                raise RuntimeError(f"warehouse refused {symbol}: {exc.detail}") from exc
            page = _bars_from_frame(frame)
            if bars and page and page[0].time_ms <= bars[-1].time_ms:
                page = [bar for bar in page if bar.time_ms > bars[-1].time_ms]
            bars.extend(page)
            if len(frame) < MAX_LIMIT or not page:
                return bars
            cursor = datetime.fromtimestamp((bars[-1].time_ms + 1) / 1000, tz=UTC)
