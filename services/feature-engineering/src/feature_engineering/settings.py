"""feature-engineering settings: request limits, the streaming set and its durable consumer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from aitrading.errors import Invalid
from aitrading.market import indicators
from aitrading.settings import ServiceSettings

# Computed on every closed bar of every series, besides the user sets marked `stream`.
DEFAULT_STREAM_INDICATORS = [
    "sma_20", "sma_50", "ema_20", "rsi_14", "macd_12_26_9", "macd_12_26_9_signal", "macd_12_26_9_hist",
    "bbands_20_2_upper", "bbands_20_2_lower", "atr_14", "adx_14", "stoch_14_3_3_k", "return_1",
    "volatility_20",
]


class Settings(ServiceSettings):
    service_name: str = "feature-engineering"

    # Indicators in one request or one feature set, and feature sets per user.
    max_indicators: int = Field(default=100, ge=1)
    max_sets_per_user: int = Field(default=200, ge=1)

    # Streaming: a durable consumer `<durable_prefix>-bars` over md.bar.> computes `stream_indicators`
    # (plus every user set marked `stream`) on each closed bar and publishes features.<tf>.<SYMBOL>.
    # Tests give each app its own prefix; replicas of one deployment share it.
    stream_enabled: bool = True
    stream_indicators: list[str] = Field(default_factory=lambda: list(DEFAULT_STREAM_INDICATORS))
    durable_prefix: str = Field(default="feature-engineering", pattern=r"^[A-Za-z0-9_-]{1,100}$")
    # The bars streamed: every series by default; a narrower filter (`md.bar.1d.>`) limits the work.
    stream_subject: str = Field(default="md.bar.>", pattern=r"^md\.bar\.[A-Za-z0-9_*>.+=:@^-]+$")
    # A brand-new durable starts with the next bar ("new") or with what the MARKET stream still keeps
    # ("all", up to a week of bars); fixed when the durable is first created.
    stream_deliver: Literal["all", "new"] = "new"
    # Bars kept in memory per series: at least this many, more when an indicator needs a longer history.
    stream_window_bars: int = Field(default=500, ge=2)
    # Series kept in memory; the least recently updated is dropped (and re-seeded if it comes back).
    stream_max_series: int = Field(default=5000, ge=1)

    @field_validator("stream_indicators")
    @classmethod
    def _known_indicators(cls, names: list[str]) -> list[str]:
        try:
            indicators.parse_many(names, field="stream_indicators")
        except Invalid as refused:  # a bad name fails at start-up, saying which
            raise ValueError(refused.detail) from None
        return names
