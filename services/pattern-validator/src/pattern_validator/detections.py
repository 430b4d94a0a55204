"""What every detector returns: one pattern found at one bar, and its JSON form.

A detection's `time_ms` is the start of the bar on whose close the pattern completes or is confirmed,
so a detection never uses a bar later than its own time. Prices in `details` are floats in the domain
(patterns are computed in doubles, like indicators) and decimal strings in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from aitrading.market.bars import ms_to_datetime


class Direction(StrEnum):
    BULLISH = "bullish"
    BEARISH = "bearish"
    NEUTRAL = "neutral"


class Kind(StrEnum):
    CANDLESTICK = "candlestick"
    CHART = "chart"
    RULE = "rule"


@dataclass(frozen=True, slots=True)
class Detection:
    time_ms: int
    pattern: str
    direction: Direction
    confidence: float  # in [0, 1]; how each detector derives it is documented in its module
    kind: Kind
    details: dict[str, Any] | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": iso(self.time_ms),
            "pattern": self.pattern,
            "direction": self.direction.value,
            "confidence": round(self.confidence, 4),
            "kind": self.kind.value,
        }
        if self.details:
            out["details"] = self.details
        return out


def price(value: float) -> str:
    """A computed price as a decimal string with ten significant digits (doubles carry ~15)."""
    if not math.isfinite(value):
        raise ValueError(f"not a price: {value!r}")
    return format(Decimal(f"{value:.10g}"), "f")


def iso(time_ms: int) -> str:
    """ISO 8601 UTC with a `Z`, as every service writes times (aitrading.jsonutil)."""
    return ms_to_datetime(time_ms).isoformat().replace("+00:00", "Z")


def clamp01(value: float) -> float:
    return 0.0 if not math.isfinite(value) else min(1.0, max(0.0, value))


def ordered(detections: Iterable[Detection]) -> list[Detection]:
    """Newest last; detections of one bar in a stable order (kind, then pattern name)."""
    return sorted(detections, key=lambda d: (d.time_ms, d.kind.value, d.pattern))
