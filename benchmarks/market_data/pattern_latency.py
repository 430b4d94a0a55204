"""Per-bar live detection latency with a 500-bar window, on the daily S&P 500 of arch.data.

    .venv/bin/python benchmarks/market_data/pattern_latency.py [bars]

Prints p50/p99 of (a) the detection itself (61 TA-Lib candlestick functions on the tail the last bar
needs, chart patterns on the window) and (b) a bar through `LiveWindows.on_bars` (window update, the
hop to a worker thread, detection), for the last `bars` bars (default 2000) fed one at a time.
Database and NATS time are not included: they are the same for every service.
"""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal

import numpy as np
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.live import LiveWindows
from pattern_validator.scan import detect_last

from aitrading.market.bars import Bar, OhlcvFrame
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import BarBatch

WINDOW = 500


def spx() -> OhlcvFrame:
    from arch.data import sp500  # installed with database-service

    data = sp500.load()
    times = (data.index.astype("datetime64[ns]").asi8 // 1_000_000).astype(np.int64)
    columns = ("Open", "High", "Low", "Close", "Volume")
    return OhlcvFrame(times, *(data[c].to_numpy(np.float64) for c in columns))


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.2f} ms  p99 {np.percentile(ms, 99):.2f} ms  max {ms.max():.2f} ms"


async def main(count: int) -> None:
    frame = spx()
    start = len(frame) - count
    detection = []
    for end in range(start, len(frame)):
        window = frame.slice(end - WINDOW + 1, end + 1)
        began = time.perf_counter()
        detect_last(window)
        detection.append(time.perf_counter() - began)
    print(f"detection, {WINDOW}-bar window, {count} bars:  {percentiles(detection)}")

    windows = LiveWindows(None, window_bars=WINDOW, max_series=10, chart=ChartSettings())
    bars = [Bar(int(frame.time_ms[i]), *(Decimal(repr(float(getattr(frame, c)[i])))
                                         for c in ("open", "high", "low", "close", "volume")))
            for i in range(start - WINDOW, len(frame))]
    await windows.on_bars(BarBatch("SPX", "bench", Timeframe.D1, False, bars[:WINDOW]))
    through = []
    for bar in bars[WINDOW:]:
        began = time.perf_counter()
        await windows.on_bars(BarBatch("SPX", "bench", Timeframe.D1, False, [bar]))
        through.append(time.perf_counter() - began)
    print(f"LiveWindows.on_bars, one bar per event:    {percentiles(through)}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
