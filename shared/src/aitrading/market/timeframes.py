"""Bar timeframes: their names, lengths and the bucket a timestamp falls in (UTC, epoch-aligned)."""

from __future__ import annotations

from enum import StrEnum

from aitrading.errors import Invalid

MS = 1000


class Timeframe(StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"

    @property
    def seconds(self) -> int:
        return _SECONDS[self]

    @property
    def ms(self) -> int:
        return _SECONDS[self] * MS

    def bucket_ms(self, time_ms: int) -> int:
        """Start (epoch ms) of the bar that a moment belongs to; buckets are aligned to the epoch (UTC)."""
        return time_ms - time_ms % self.ms

    def divides(self, other: Timeframe) -> bool:
        """Whether bars of `other` are whole unions of bars of this timeframe (resampling is exact)."""
        return other.seconds % self.seconds == 0

    @classmethod
    def parse(cls, value: str, *, field: str = "timeframe") -> Timeframe:
        """The timeframe named `value`, or a 422 naming the field and the accepted values."""
        try:
            return cls(value.strip())
        except ValueError:
            accepted = ", ".join(t.value for t in cls)
            raise Invalid(f"unknown timeframe {value!r}; use one of {accepted}",
                          errors=[{"field": field, "reason": f"must be one of {accepted}"}]) from None


_SECONDS = {
    Timeframe.M1: 60,
    Timeframe.M5: 300,
    Timeframe.M15: 900,
    Timeframe.H1: 3600,
    Timeframe.H4: 4 * 3600,
    Timeframe.D1: 86400,
}
TIMEFRAMES: tuple[Timeframe, ...] = tuple(Timeframe)
