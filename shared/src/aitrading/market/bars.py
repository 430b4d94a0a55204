"""The one tick and bar model of the platform, and a bar frame of numpy columns for computation.

`Tick` and `Bar` carry Decimals (prices and quantities are money); `OhlcvFrame` carries float64 columns
because indicators (TA-Lib) compute in doubles. Times are epoch milliseconds, UTC; a bar's time is the
start of its bucket, and a bar is published only once closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def ms_to_datetime(time_ms: int) -> datetime:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def datetime_to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade or quote update: `price` is the last trade (or mid when only a quote is known)."""

    symbol: str
    time_ms: int
    price: Decimal
    size: Decimal = Decimal(0)
    bid: Decimal | None = None
    ask: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed OHLCV bar starting at `time_ms`."""

    time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @property
    def time(self) -> datetime:
        return ms_to_datetime(self.time_ms)

    def problems(self) -> list[str]:
        """What makes this bar impossible (empty when it is a valid bar)."""
        found = []
        if min(self.open, self.high, self.low, self.close) <= 0:
            found.append("prices must be positive")
        if self.high < max(self.open, self.close, self.low):
            found.append("high is below open, close or low")
        if self.low > min(self.open, self.close, self.high):
            found.append("low is above open, close or high")
        if self.volume < 0:
            found.append("volume is negative")
        return found

    def as_json(self) -> dict[str, Any]:
        return {"time": self.time, "open": self.open, "high": self.high, "low": self.low,
                "close": self.close, "volume": self.volume}


@dataclass(frozen=True)
class OhlcvFrame:
    """Bars of one symbol and timeframe as columns, oldest first."""

    time_ms: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.time_ms.shape[0])

    @classmethod
    def empty(cls) -> OhlcvFrame:
        f = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.int64), f, f.copy(), f.copy(), f.copy(), f.copy())

    @classmethod
    def from_bars(cls, bars: Sequence[Bar]) -> OhlcvFrame:
        return cls(
            np.fromiter((b.time_ms for b in bars), dtype=np.int64, count=len(bars)),
            np.fromiter((float(b.open) for b in bars), dtype=np.float64, count=len(bars)),
            np.fromiter((float(b.high) for b in bars), dtype=np.float64, count=len(bars)),
            np.fromiter((float(b.low) for b in bars), dtype=np.float64, count=len(bars)),
            np.fromiter((float(b.close) for b in bars), dtype=np.float64, count=len(bars)),
            np.fromiter((float(b.volume) for b in bars), dtype=np.float64, count=len(bars)),
        )

    @classmethod
    def from_json_bars(cls, bars: Sequence[Mapping[str, Any]]) -> OhlcvFrame:
        """From bars as the market API returns them: `time` ISO 8601, prices as decimal strings."""
        n = len(bars)
        return cls(
            np.fromiter((datetime_to_ms(datetime.fromisoformat(b["time"])) for b in bars), np.int64, n),
            *(np.fromiter((float(b[k]) for b in bars), np.float64, n)
              for k in ("open", "high", "low", "close", "volume")),
        )

    def tail(self, n: int) -> OhlcvFrame:
        return self.slice(max(len(self) - n, 0), len(self))

    def slice(self, start: int, stop: int) -> OhlcvFrame:
        return OhlcvFrame(self.time_ms[start:stop], self.open[start:stop], self.high[start:stop],
                          self.low[start:stop], self.close[start:stop], self.volume[start:stop])

    def append(self, bars: Iterable[Bar]) -> OhlcvFrame:
        """A new frame with `bars` added at the end; a bar not newer than the last one replaces it."""
        frame = self
        for bar in bars:
            extra = OhlcvFrame.from_bars([bar])
            if len(frame) and bar.time_ms <= int(frame.time_ms[-1]):
                keep = int(np.searchsorted(frame.time_ms, bar.time_ms))
                frame = _concat(frame.slice(0, keep), extra)
            else:
                frame = _concat(frame, extra)
        return frame

    def column(self, name: str) -> FloatArray:
        if name not in ("open", "high", "low", "close", "volume"):
            raise KeyError(name)
        column: FloatArray = getattr(self, name)
        return column


def _concat(a: OhlcvFrame, b: OhlcvFrame) -> OhlcvFrame:
    return OhlcvFrame(*(np.concatenate([getattr(a, k), getattr(b, k)])
                        for k in ("time_ms", "open", "high", "low", "close", "volume")))
