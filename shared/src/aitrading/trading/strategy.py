"""The strategy interface: parameters as a pydantic model, indicators computed over the bars, and
`on_bar` turning one closed bar into order intents.

The same object runs live (trading-engine, on each closed bar, over a window of recent bars) and in
backtests (over the whole history at once). Indicators are computed once per frame by causal functions
(a value at bar i uses bars ≤ i only), and `on_bar` sees them through a `BarContext` that refuses any
index past the bar being decided — so a strategy cannot look ahead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aitrading.errors import Invalid
from aitrading.market.bars import OhlcvFrame, ms_to_datetime
from aitrading.trading.orders import ZERO, OrderIntent, OrderType, Side

FloatArray = NDArray[np.float64]


class StrategyParams(BaseModel):
    """Every strategy's parameters extend this; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Decimal = Field(default=Decimal(1), gt=0, description="units bought on an entry")


@dataclass(frozen=True)
class BarContext:
    """What a strategy may know when bar `index` has closed."""

    index: int
    frame: OhlcvFrame
    values: Mapping[str, FloatArray]
    position: Decimal                   # signed quantity this strategy holds
    symbol: str

    def value(self, name: str, bars_ago: int = 0) -> float:
        """An indicator's value at this bar (or `bars_ago` bars earlier); NaN before it is warm."""
        if bars_ago < 0:
            raise IndexError("a strategy cannot read a bar that has not closed")
        at = self.index - bars_ago
        return float(self.values[name][at]) if at >= 0 else float("nan")

    @property
    def close(self) -> float:
        return float(self.frame.close[self.index])

    @property
    def time(self) -> datetime:
        return ms_to_datetime(int(self.frame.time_ms[self.index]))

    def buy(self, quantity: Decimal) -> OrderIntent:
        return OrderIntent(symbol=self.symbol, side=Side.BUY, type=OrderType.MARKET, quantity=quantity)

    def sell(self, quantity: Decimal) -> OrderIntent:
        return OrderIntent(symbol=self.symbol, side=Side.SELL, type=OrderType.MARKET, quantity=quantity)

    def close_position(self) -> list[OrderIntent]:
        if self.position > ZERO:
            return [self.sell(self.position)]
        if self.position < ZERO:
            return [self.buy(-self.position)]
        return []


class Strategy(ABC):
    """Subclasses set `name`, `description`, `Params`, and implement `indicators` and `on_bar`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams) -> None:
        self.params = params

    @abstractmethod
    def indicators(self, frame: OhlcvFrame) -> dict[str, FloatArray]:
        """Causal columns aligned with `frame`, NaN while warming up."""

    @abstractmethod
    def warmup(self) -> int:
        """Bars one decision needs, the bar decided on included: live trading decides on at least this many
        recent bars and gets what a decision over the whole history would give."""

    @abstractmethod
    def on_bar(self, ctx: BarContext) -> list[OrderIntent]:
        """The order intents of the bar `ctx.index`, which has just closed."""

    def decide_last(self, frame: OhlcvFrame, position: Decimal, symbol: str) -> list[OrderIntent]:
        """Live use: the intents for the last bar of `frame`."""
        if len(frame) == 0:
            return []
        return self.on_bar(BarContext(len(frame) - 1, frame, self.indicators(frame), position, symbol))


def parse_params(strategy: type[Strategy], params: Mapping[str, Any], *,
                 field: str = "params") -> StrategyParams:
    """The strategy's parameters from JSON; 422 naming each bad field (`params.fast`)."""
    try:
        return strategy.Params.model_validate(dict(params))
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            errors.append({"field": f"{field}.{location}" if location else field, "reason": error["msg"]})
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise Invalid(f"bad parameters for {strategy.name}: {detail}", errors=errors) from None


def crossings(a: FloatArray, b: FloatArray) -> NDArray[np.int8]:
    """+1 where `a` crosses above `b`, -1 where it crosses below, else 0.

    Equality does not count as a side: a cross is judged against the last bar where `a - b` was not 0
    (NaN while either is warming up never crosses).
    """
    diff = a - b
    sign = np.sign(diff)
    sign[np.isnan(diff)] = 0
    # The last non-zero sign up to each bar, carried forward.
    nonzero = sign != 0
    idx = np.where(nonzero, np.arange(len(sign)), -1)
    np.maximum.accumulate(idx, out=idx)
    carried = np.where(idx >= 0, sign[np.maximum(idx, 0)], 0)
    previous = np.concatenate(([0.0], carried[:-1]))
    out = np.zeros(len(sign), dtype=np.int8)
    out[(sign > 0) & (previous < 0)] = 1
    out[(sign < 0) & (previous > 0)] = -1
    return out
