"""A clearly labelled synthetic intraday feed: seeded ticks for any symbols.

Prices follow geometric Brownian motion whose volatility switches between a calm and a volatile regime
(a two-state Markov chain in continuous time), with Poisson jumps on top; quotes carry a bid/ask spread
around the mid, and trades print at the mid. Arrivals are Poisson at `rate` ticks per second per
symbol. Everything is drawn from one `random.Random` per symbol seeded with (seed, symbol), so a seed
and a start time give the same ticks on every machine. Venue "synthetic", synthetic=True everywhere.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from aitrading.market.bars import Tick, datetime_to_ms
from data_bridge.feeds import Feed

YEAR_S = 365 * 86400.0  # synthetic markets trade around the clock
# Ticks handed to the sink at once when the feed runs as fast as possible (speed 0).
FAST_BATCH = 2000


class SyntheticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(2.0, gt=0, le=10_000, description="ticks per second per symbol")
    seed: int = Field(1, description="same seed and start: same ticks")
    start_price: Decimal = Field(Decimal(100), gt=0, allow_inf_nan=False)
    drift: float = Field(0.0, ge=-10, le=10, description="annual drift of the log price")
    vol: float = Field(0.6, gt=0, le=10, description="annual volatility in the calm regime")
    volatile_factor: float = Field(3.0, ge=1, le=50, description="volatile-regime vol / calm vol")
    to_volatile_per_hour: float = Field(0.5, ge=0, le=3600, description="calm → volatile switches per hour")
    to_calm_per_hour: float = Field(3.0, ge=0, le=3600, description="volatile → calm switches per hour")
    jumps_per_day: float = Field(2.0, ge=0, le=100_000)
    jump_std: float = Field(0.01, ge=0, le=1, description="standard deviation of a jump's log size")
    spread_bps: float = Field(5.0, ge=0, le=10_000)
    decimals: int = Field(2, ge=0, le=12, description="price precision")
    mean_size: Decimal = Field(Decimal(1), gt=0, allow_inf_nan=False)
    start: datetime | None = Field(None, description="data time of the first tick; default: now")
    speed: float = Field(1.0, ge=0, le=1_000_000, description="data seconds per wall second; 0 = max")
    max_ticks: int | None = Field(None, gt=0, description="finish after this many ticks per symbol")


class SyntheticPath:
    """The tick path of one symbol: a pure, seeded generator (no I/O, no clock)."""

    def __init__(self, symbol: str, params: SyntheticParams, start_ms: int) -> None:
        self.symbol = symbol
        self.p = params
        self.rng = random.Random(f"{params.seed}:{symbol}")
        self.time_ms = start_ms
        self.log_price = math.log(float(params.start_price))
        self.volatile = False
        self.quantum = Decimal(1).scaleb(-params.decimals)
        self.size_quantum = Decimal("0.0001")

    def __iter__(self) -> Iterator[Tick]:
        return self

    def __next__(self) -> Tick:
        p, rng = self.p, self.rng
        # Poisson arrivals, at least a millisecond apart so a symbol's ticks are strictly ordered.
        gap_ms = max(1, round(rng.expovariate(p.rate) * 1000))
        self.time_ms += gap_ms
        dt_s = gap_ms / 1000
        switch_rate = p.to_calm_per_hour if self.volatile else p.to_volatile_per_hour
        if rng.random() < 1 - math.exp(-switch_rate * dt_s / 3600):
            self.volatile = not self.volatile
        sigma = p.vol * (p.volatile_factor if self.volatile else 1.0)
        dt_y = dt_s / YEAR_S
        step = (p.drift - 0.5 * sigma * sigma) * dt_y + sigma * math.sqrt(dt_y) * rng.gauss(0.0, 1.0)
        if p.jumps_per_day and rng.random() < 1 - math.exp(-p.jumps_per_day * dt_s / 86400):
            step += rng.gauss(0.0, p.jump_std)
        self.log_price += step
        mid = math.exp(self.log_price)
        half_spread = mid * p.spread_bps / 20_000
        price = self._round(mid, ROUND_HALF_EVEN)
        bid = self._round(mid - half_spread, ROUND_FLOOR)
        ask = self._round(mid + half_spread, ROUND_CEILING)
        if bid <= 0:  # a price walked to nothing keeps a positive floor of one quantum
            bid = self.quantum
            price, ask = max(price, bid), max(ask, bid)
        size = Decimal(repr(rng.expovariate(1.0) * float(p.mean_size))).quantize(self.size_quantum)
        return Tick(self.symbol, self.time_ms, price, max(size, self.size_quantum), bid, ask)

    def _round(self, value: float, rounding: str) -> Decimal:
        return Decimal(repr(value)).quantize(self.quantum, rounding=rounding)


def synthetic_ticks(symbols: list[str], params: SyntheticParams, start_ms: int) -> Iterator[Tick]:
    """All symbols' ticks merged in time order (ties by symbol order): deterministic for a seed."""
    paths = [SyntheticPath(symbol, params, start_ms) for symbol in symbols]
    heap: list[tuple[int, int, Tick]] = []
    for i, path in enumerate(paths):
        first = next(path)
        heap.append((first.time_ms, i, first))
    heapq.heapify(heap)
    while heap:
        _, i, tick = heapq.heappop(heap)
        yield tick
        following = next(paths[i])
        heapq.heappush(heap, (following.time_ms, i, following))


class SyntheticFeed(Feed):
    kind: ClassVar[str] = "synthetic"
    Params: ClassVar[type[BaseModel]] = SyntheticParams
    synthetic: ClassVar[bool] = True
    # Simulated time: bars close when a tick of a later bucket arrives.
    live: ClassVar[bool] = False

    async def run(self) -> None:
        params = self.params
        assert isinstance(params, SyntheticParams)
        start = params.start or datetime.now(UTC)
        start_ms = datetime_to_ms(start)
        limit = params.max_ticks * len(self.context.symbols) if params.max_ticks else None
        ticks = synthetic_ticks(self.context.symbols, params, start_ms)
        began = time.monotonic()
        batch: list[Tick] = []
        for sent, tick in enumerate(ticks):
            if limit is not None and sent >= limit:
                break
            if params.speed > 0:
                # Hand over what is due, then sleep until the next tick's moment (no drift: the schedule
                # is measured from the start, not from the last sleep).
                due_in = (tick.time_ms - start_ms) / 1000 / params.speed - (time.monotonic() - began)
                if due_in > 0:
                    if batch:
                        await self.sink.ticks(self.context, batch)
                        batch = []
                    await asyncio.sleep(due_in)
            batch.append(tick)
            if len(batch) >= FAST_BATCH:
                await self.sink.ticks(self.context, batch)
                batch = []
                await asyncio.sleep(0)  # let the publisher and the API run between batches
        if batch:
            await self.sink.ticks(self.context, batch)
