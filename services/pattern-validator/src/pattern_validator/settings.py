"""pattern-validator settings: the live window, the durable consumer, and the chart-pattern tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aitrading.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "pattern-validator"

    # The live consumer: durable `<durable_prefix>-bars` over md.bar.>. Replicas of one deployment share
    # the prefix (and split the work); tests give each app its own.
    live_enabled: bool = True
    durable_prefix: str = Field(default="pattern-validator", pattern=r"^[A-Za-z0-9_-]{1,100}$")
    # A brand-new durable starts with the bars published from now on ("new": patterns of week-old bars
    # are not news) or with all the MARKET stream still keeps ("all"). Fixed when the durable is created.
    live_deliver: Literal["new", "all"] = "new"
    # Bars per (symbol, timeframe) kept for live detection, and how many series are kept in memory.
    window_bars: int = Field(default=500, ge=50, le=10_000)
    max_series: int = Field(default=2_000, ge=1)  # ~24 kB each at 500 bars

    # Chart patterns (see chart_patterns.py): a pivot needs a reversal of this many ATRs and must stand
    # this many bars.
    min_move_atr: float = Field(default=2.0, gt=0)
    swing_bars: int = Field(default=3, ge=1, le=50)
