"""The built-in strategies and the catalogue that names them.

All four are long-only and trade `quantity` units with market orders: enter when flat on the signal,
leave the whole position on the exit signal. Indicators are TA-Lib's (the platform's indicator
catalogue, so a strategy's `sma_10` is the one `/features` shows).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from aitrading.errors import Invalid
from aitrading.market import indicators
from aitrading.market.bars import OhlcvFrame
from aitrading.trading.orders import ZERO, OrderIntent
from aitrading.trading.strategy import (
    BarContext,
    FloatArray,
    Strategy,
    StrategyParams,
    crossings,
    parse_params,
)

Number = TypeVar("Number", int, float)


def _columns(frame: OhlcvFrame, names: dict[str, str]) -> dict[str, FloatArray]:
    """Catalogue indicators by their names, under the strategy's own keys."""
    specs = indicators.parse_many(list(names.values()))
    computed = indicators.compute(frame, specs)
    return {key: computed[name] for key, name in names.items()}


def _warmup(*names: str) -> int:
    """Bars one decision on these indicators needs: the history before their first right value and the bar."""
    return indicators.history_needed(indicators.parse_many(list(names))) + 1


def _above(name: str, value: Number, lower: str, info: ValidationInfo) -> Number:
    """`value` when it is above the parameter `lower` (declared before it, so already validated); the
    error lands on `name`, so a client sees `params.slow`, not the whole `params`."""
    below = info.data.get(lower)
    if below is not None and below >= value:
        raise ValueError(f"{name} ({value:g}) must be greater than {lower} ({below:g})")
    return value


# --- sma_crossover --------------------------------------------------------------------------------

class SmaCrossoverParams(StrategyParams):
    fast: int = Field(default=10, ge=1, le=10_000, description="bars of the fast simple moving average")
    slow: int = Field(default=30, ge=2, le=10_000, description="bars of the slow simple moving average",
                      validate_default=True)

    @field_validator("slow")
    @classmethod
    def _slow_above_fast(cls, slow: int, info: ValidationInfo) -> int:
        return _above("slow", slow, "fast", info)


class Crossover(Strategy):
    """Long-only on the crossing of two lines: enter when `line` crosses above `signal`, leave when it
    crosses below. Subclasses name the two catalogue indicators in `_lines`."""

    @abstractmethod
    def _lines(self) -> tuple[str, str]:
        """The catalogue names of the line and its signal."""

    def indicators(self, frame: OhlcvFrame) -> dict[str, FloatArray]:
        line, signal = self._lines()
        columns = _columns(frame, {"line": line, "signal": signal})
        columns["cross"] = crossings(columns["line"], columns["signal"]).astype(np.float64)
        return columns

    def warmup(self) -> int:
        return _warmup(*self._lines()) + 1  # a crossing compares with the bar before

    def on_bar(self, ctx: BarContext) -> list[OrderIntent]:
        cross = ctx.value("cross")
        if ctx.position == ZERO and cross > 0:
            return [ctx.buy(self.params.quantity)]
        if ctx.position > ZERO and cross < 0:
            return ctx.close_position()
        return []


class SmaCrossover(Crossover):
    name = "sma_crossover"
    description = "Buy when the fast SMA crosses above the slow one; sell the position when it crosses below."
    Params = SmaCrossoverParams
    params: SmaCrossoverParams

    def _lines(self) -> tuple[str, str]:
        # The SMA of one bar is the close itself (TA-Lib's SMA starts at two bars).
        fast = "close" if self.params.fast == 1 else f"sma_{self.params.fast}"
        return fast, f"sma_{self.params.slow}"


# --- rsi_reversion --------------------------------------------------------------------------------

class RsiReversionParams(StrategyParams):
    period: int = Field(default=14, ge=2, le=1000, description="bars of the RSI")
    oversold: float = Field(default=30, gt=0, lt=100, description="buy when the RSI falls below this")
    overbought: float = Field(default=70, gt=0, lt=100, description="sell when the RSI rises above this",
                              validate_default=True)

    @field_validator("overbought")
    @classmethod
    def _overbought_above_oversold(cls, overbought: float, info: ValidationInfo) -> float:
        return _above("overbought", overbought, "oversold", info)


class RsiReversion(Strategy):
    name = "rsi_reversion"
    description = "Buy when the RSI is below `oversold`; sell the position when it is above `overbought`."
    Params = RsiReversionParams
    params: RsiReversionParams

    def indicators(self, frame: OhlcvFrame) -> dict[str, FloatArray]:
        columns = _columns(frame, {"rsi": f"rsi_{self.params.period}"})
        # TA-Lib answers 0 while no close has moved yet (no gain and no loss): that is no reading, not
        # "oversold" - a flat market must not buy.
        moved = np.cumsum(np.abs(np.diff(frame.close, prepend=frame.close[:1]))) > 0
        columns["rsi"] = np.where(moved, columns["rsi"], np.nan)
        return columns

    def warmup(self) -> int:
        return _warmup(f"rsi_{self.params.period}")

    def on_bar(self, ctx: BarContext) -> list[OrderIntent]:
        rsi = ctx.value("rsi")
        if ctx.position == ZERO and rsi < self.params.oversold:
            return [ctx.buy(self.params.quantity)]
        if ctx.position > ZERO and rsi > self.params.overbought:
            return ctx.close_position()
        return []


# --- bollinger_breakout ---------------------------------------------------------------------------

class BollingerBreakoutParams(StrategyParams):
    period: int = Field(default=20, ge=2, le=1000, description="bars of the bands' moving average")
    deviations: float = Field(default=2.0, ge=0.01, le=10, description="band width in standard deviations")


class BollingerBreakout(Strategy):
    name = "bollinger_breakout"
    description = "Buy when the close breaks above the upper band; sell the position below the middle band."
    Params = BollingerBreakoutParams
    params: BollingerBreakoutParams

    def _names(self) -> dict[str, str]:
        # Every digit of the deviations, positional (`:g` would round 2.1234567 to 2.12346).
        deviations = np.format_float_positional(self.params.deviations, trim="-")
        base = f"bbands_{self.params.period}_{deviations}"
        return {"upper": f"{base}_upper", "middle": f"{base}_middle"}

    def indicators(self, frame: OhlcvFrame) -> dict[str, FloatArray]:
        columns = _columns(frame, self._names())
        columns["close"] = frame.close
        return columns

    def warmup(self) -> int:
        return _warmup(*self._names().values())

    def on_bar(self, ctx: BarContext) -> list[OrderIntent]:
        close = ctx.value("close")
        if ctx.position == ZERO and close > ctx.value("upper"):
            return [ctx.buy(self.params.quantity)]
        if ctx.position > ZERO and close < ctx.value("middle"):
            return ctx.close_position()
        return []


# --- macd_trend -----------------------------------------------------------------------------------

class MacdTrendParams(StrategyParams):
    fast: int = Field(default=12, ge=2, le=1000)
    slow: int = Field(default=26, ge=3, le=1000, validate_default=True)
    signal: int = Field(default=9, ge=1, le=1000)

    @field_validator("slow")
    @classmethod
    def _slow_above_fast(cls, slow: int, info: ValidationInfo) -> int:
        return _above("slow", slow, "fast", info)


class MacdTrend(Crossover):
    name = "macd_trend"
    description = "Buy when MACD crosses above its signal line; sell the position when it crosses below."
    Params = MacdTrendParams
    params: MacdTrendParams

    def _lines(self) -> tuple[str, str]:
        base = f"macd_{self.params.fast}_{self.params.slow}_{self.params.signal}"
        return base, f"{base}_signal"


BUILT_INS: dict[str, type[Strategy]] = {
    strategy.name: strategy for strategy in (SmaCrossover, RsiReversion, BollingerBreakout, MacdTrend)
}


def strategy_class(name: str, *, field: str = "strategy") -> type[Strategy]:
    found = BUILT_INS.get(name)
    if found is None:
        known = ", ".join(sorted(BUILT_INS))
        raise Invalid(f"unknown strategy {name!r}; known: {known}",
                      errors=[{"field": field, "reason": f"unknown strategy {name!r}"}])
    return found


def build(name: str, params: Mapping[str, Any]) -> Strategy:
    """A strategy from its catalogue name and JSON parameters; 422 naming the bad field."""
    cls = strategy_class(name)
    return cls(parse_params(cls, params))


def catalog() -> list[dict[str, Any]]:
    """Every built-in with its description and the JSON schema of its parameters."""
    return [{"name": cls.name, "description": cls.description, "params": cls.Params.model_json_schema()}
            for cls in BUILT_INS.values()]
