"""The strategy interface and the four built-ins.

Each built-in runs over a synthetic series and must trade exactly where an independent pandas
computation of its signal says; no decision may depend on a later bar; parameters are validated field
by field; the catalogue lists every built-in with its JSON schema.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aitrading.errors import Invalid
from aitrading.market.bars import OhlcvFrame, ms_to_datetime
from aitrading.trading.orders import OrderIntent, OrderType, Side
from aitrading.trading.strategies import BUILT_INS, build, catalog, strategy_class
from aitrading.trading.strategy import BarContext, Strategy, StrategyParams, crossings, parse_params

D = Decimal
SYMBOL = "SYN"
DAY_MS = 86_400_000
Trade = tuple[int, Side, Decimal]


def synthetic(n: int = 420, seed: int = 11) -> OhlcvFrame:
    """Two cycles and a random walk: trends, reversals and overshoots for every built-in to act on."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    cycles = 8 * np.sin(2 * np.pi * i / 40) + 3 * np.sin(2 * np.pi * i / 97)
    close = 100 + cycles + np.cumsum(rng.normal(0, 0.6, n))
    open_ = np.concatenate(([close[0]], close[:-1])) + rng.normal(0, 0.2, n)
    high = np.maximum(open_, close) + np.abs(rng.normal(0, 0.4, n))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, 0.4, n))
    volume = rng.uniform(1_000, 5_000, n)
    days = (1_600_000_000_000 // DAY_MS + i).astype(np.int64)
    return OhlcvFrame(days * DAY_MS, open_, high, low, close, volume)


FRAME = synthetic()
CLOSE = pd.Series(FRAME.close)


def simulate(strategy: Strategy,
             frame: OhlcvFrame) -> tuple[list[Trade], list[Decimal], list[list[OrderIntent]]]:
    """Run bar by bar as the backtester does, filling every intent at once: trades, the position each bar
    was decided with, and each bar's intents."""
    values = strategy.indicators(frame)
    position, trades, positions, decisions = D(0), [], [], []
    for index in range(len(frame)):
        positions.append(position)
        intents = strategy.on_bar(BarContext(index, frame, values, position, SYMBOL))
        decisions.append(intents)
        for intent in intents:
            assert (intent.symbol, intent.type) == (SYMBOL, OrderType.MARKET) and intent.problems() == []
            trades.append((index, intent.side, intent.quantity))
            position += intent.quantity * intent.side.sign
        assert position >= 0, "the built-ins are long-only"
    return trades, positions, decisions


def long_only(enter: pd.Series, leave: pd.Series, quantity: Decimal) -> list[Trade]:
    """Enter `quantity` on an entry signal while flat, leave the whole position on an exit signal."""
    trades: list[Trade] = []
    held = D(0)
    for index in range(len(enter)):
        if held == 0 and bool(enter.iloc[index]):
            trades.append((index, Side.BUY, quantity))
            held = quantity
        elif held > 0 and bool(leave.iloc[index]):
            trades.append((index, Side.SELL, held))
            held = D(0)
    return trades


def pandas_crossings(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Where `a` crosses above `b`, and below, judged against the last bar on which they differed."""
    side = np.sign(a - b)
    before = side.replace(0, np.nan).ffill().shift(1)
    return (side > 0) & (before < 0), (side < 0) & (before > 0)


def seeded_ema(series: pd.Series, span: int, seed_end: int, seed_length: int | None = None) -> pd.Series:
    """TA-Lib's EMA: the mean of the `seed_length` (default `span`) values ending at `seed_end`, then
    the exponential recursion with alpha 2/(span+1)."""
    length = seed_length or span
    start = pd.Series([series.iloc[seed_end - length + 1:seed_end + 1].mean()], index=[seed_end])
    tail = pd.concat([start, series.iloc[seed_end + 1:]])
    return tail.ewm(alpha=2 / (span + 1), adjust=False).mean().reindex(series.index)


def wilder_rsi(close: pd.Series, period: int) -> pd.Series:
    delta = close.diff()
    averages = []
    for moves in (delta.clip(lower=0), (-delta).clip(lower=0)):
        seed = pd.Series([moves.iloc[1:period + 1].mean()], index=[period])
        tail = pd.concat([seed, moves.iloc[period + 1:]])
        averages.append(tail.ewm(alpha=1 / period, adjust=False).mean().reindex(close.index))
    gain, loss = averages
    return 100 - 100 / (1 + gain / loss)


def expected_sma(params: dict[str, Any]) -> list[Trade]:
    fast = CLOSE.rolling(params["fast"]).mean()
    slow = CLOSE.rolling(params["slow"]).mean()
    up, down = pandas_crossings(fast, slow)
    return long_only(up, down, D(params.get("quantity", 1)))


def expected_rsi(params: dict[str, Any]) -> list[Trade]:
    rsi = wilder_rsi(CLOSE, params["period"])
    return long_only(rsi < params["oversold"], rsi > params["overbought"], D(params.get("quantity", 1)))


def expected_bollinger(params: dict[str, Any]) -> list[Trade]:
    middle = CLOSE.rolling(params["period"]).mean()
    upper = middle + params["deviations"] * CLOSE.rolling(params["period"]).std(ddof=0)
    above, below = CLOSE.gt(upper), CLOSE.lt(middle)
    return long_only(above, below, D(params.get("quantity", 1)))


def expected_macd(params: dict[str, Any]) -> list[Trade]:
    fast, slow, signal = params["fast"], params["slow"], params["signal"]
    # Both averages start at the slow one's first value; the signal line at its own first value.
    macd = seeded_ema(CLOSE, fast, slow - 1) - seeded_ema(CLOSE, slow, slow - 1)
    line = seeded_ema(macd, signal, slow + signal - 2)
    macd.iloc[: slow + signal - 2] = np.nan  # TA-Lib shows the MACD line from where its signal line starts
    up, down = pandas_crossings(macd, line)
    return long_only(up, down, D(params.get("quantity", 1)))


CASES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], list[Trade]]]] = [
    ("sma_crossover", {"fast": 5, "slow": 20}, expected_sma),
    ("sma_crossover", {"fast": 10, "slow": 30, "quantity": "2.5"}, expected_sma),
    ("rsi_reversion", {"period": 14, "oversold": 30, "overbought": 70}, expected_rsi),
    ("rsi_reversion", {"period": 7, "oversold": 25, "overbought": 60, "quantity": "0.1"}, expected_rsi),
    ("bollinger_breakout", {"period": 20, "deviations": 2.0}, expected_bollinger),
    ("bollinger_breakout", {"period": 10, "deviations": 1.25}, expected_bollinger),
    ("macd_trend", {"fast": 12, "slow": 26, "signal": 9}, expected_macd),
    ("macd_trend", {"fast": 5, "slow": 35, "signal": 5, "quantity": "3"}, expected_macd),
]


@pytest.mark.parametrize(("name", "params", "expected"), CASES, ids=[f"{n}-{p}" for n, p, _ in CASES])
def test_each_built_in_trades_where_an_independent_computation_of_its_signal_says(
        name: str, params: dict[str, Any], expected: Callable[[dict[str, Any]], list[Trade]]) -> None:
    strategy = build(name, params)
    trades, _, _ = simulate(strategy, FRAME)
    assert len(trades) >= 4, "the synthetic series must give each case entries and exits to compare"
    assert trades == expected(params)
    sides = [side for _, side, _ in trades]
    assert sides[::2] == [Side.BUY] * len(sides[::2]) and sides[1::2] == [Side.SELL] * len(sides[1::2])


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_no_decision_depends_on_a_later_bar(name: str) -> None:
    """Deciding on the frame cut at bar t gives what the whole frame gave at bar t, for every t."""
    frame = FRAME.slice(0, 260)
    strategy = build(name, {})
    _, positions, decisions = simulate(strategy, frame)
    assert any(decisions)
    for t in range(len(frame)):
        assert strategy.decide_last(frame.slice(0, t + 1), positions[t], SYMBOL) == decisions[t], t


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_changing_the_future_does_not_change_the_past(name: str) -> None:
    strategy = build(name, {})
    _, _, decisions = simulate(strategy, FRAME)
    cut = 250
    columns = ("open", "high", "low", "close", "volume")
    wild = OhlcvFrame(FRAME.time_ms, *(FRAME.column(c).copy() for c in columns))
    wild.close[cut:] = wild.close[cut:][::-1] * 3
    wild.high[cut:] = wild.close[cut:] + 1
    wild.low[cut:] = wild.close[cut:] - 1
    _, _, changed = simulate(strategy, wild)
    assert changed[:cut] == decisions[:cut]
    assert changed[cut:] != decisions[cut:]


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_a_window_of_warmup_bars_decides_as_the_whole_history_does(name: str) -> None:
    """Live trading decides on the most recent `warmup()` bars only, the bar decided on included."""
    strategy = build(name, {})
    _, positions, decisions = simulate(strategy, FRAME)
    window = strategy.warmup()
    assert 0 < window < len(FRAME) - 100

    def windowed(size: int) -> list[list[OrderIntent]]:
        return [strategy.decide_last(FRAME.slice(t + 1 - size, t + 1), positions[t], SYMBOL)
                for t in range(window - 1, len(FRAME))]

    assert windowed(window) == decisions[window - 1:]
    if name in ("sma_crossover", "bollinger_breakout"):  # windowed indicators: one bar fewer is too few
        assert windowed(window - 1) != decisions[window - 1:]


def test_the_fast_average_of_one_bar_is_the_close_itself() -> None:
    strategy = build("sma_crossover", {"fast": 1, "slow": 15})
    trades, _, _ = simulate(strategy, FRAME)
    slow = CLOSE.rolling(15).mean()
    up, down = pandas_crossings(CLOSE, slow)
    assert trades and trades == long_only(up, down, D(1))


def test_bollinger_bands_use_every_digit_of_the_deviations() -> None:
    params = {"period": 15, "deviations": 1.2345678}
    strategy = build("bollinger_breakout", params)
    upper = CLOSE.rolling(15).mean() + 1.2345678 * CLOSE.rolling(15).std(ddof=0)
    np.testing.assert_allclose(strategy.indicators(FRAME)["upper"], upper.to_numpy(), rtol=1e-12)
    trades, _, _ = simulate(strategy, FRAME)
    assert trades == expected_bollinger(params)
    assert build("bollinger_breakout", {"deviations": 0.01}).indicators(FRAME)["upper"].shape == (len(FRAME),)


# --- crossings ---------------------------------------------------------------------------------------

def f64(*values: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(values, dtype=np.float64)


@pytest.mark.parametrize(("a", "b", "expected"), [
    (f64(1, 2, 3, 2, 1), f64(2, 2, 2, 2, 2), [0, 0, 1, 0, -1]),   # touch, above, touch, below
    (f64(1, 2, 2, 2, 3), f64(2, 2, 2, 2, 2), [0, 0, 0, 0, 1]),    # equality carries the side below
    (f64(3, 2, 3), f64(2, 2, 2), [0, 0, 0]),                      # touching from above is no cross
    (f64(1, 3, 1, 3), f64(2, 2, 2, 2), [0, 1, -1, 1]),
    (f64(np.nan, np.nan, 3, 1), f64(2, 2, 2, 2), [0, 0, 0, -1]),  # the first value after warm-up is no cross
    (f64(1, np.nan, 3), f64(2, 2, 2), [0, 0, 1]),                 # a gap carries the last side across
    (f64(2, 2, 2), f64(2, 2, 2), [0, 0, 0]),
    (f64(), f64(), []),
])
def test_crossings_judge_against_the_last_bar_where_the_lines_differed(
        a: np.ndarray[Any, np.dtype[np.float64]], b: np.ndarray[Any, np.dtype[np.float64]],
        expected: list[int]) -> None:
    assert crossings(a, b).tolist() == expected


def test_crossings_agree_with_the_pandas_reference_on_a_real_series() -> None:
    fast, slow = CLOSE.rolling(3).mean().round(0), CLOSE.rolling(8).mean().round(0)  # rounded: many ties
    up, down = pandas_crossings(fast, slow)
    expected = (up.astype(int) - down.astype(int)).tolist()
    assert crossings(fast.to_numpy(), slow.to_numpy()).tolist() == expected
    assert up.sum() > 3 and (fast == slow).sum() > 10


# --- the interface -----------------------------------------------------------------------------------

def test_a_bar_context_sees_only_closed_bars() -> None:
    values = {"x": np.arange(5, dtype=np.float64)}
    ctx = BarContext(2, FRAME.slice(0, 5), values, D(3), SYMBOL)
    assert (ctx.value("x"), ctx.value("x", 2), ctx.close) == (2.0, 0.0, float(FRAME.close[2]))
    assert np.isnan(ctx.value("x", 3))
    assert ctx.time == ms_to_datetime(int(FRAME.time_ms[2]))
    with pytest.raises(IndexError, match="has not closed"):
        ctx.value("x", -1)
    assert ctx.close_position() == [OrderIntent(SYMBOL, Side.SELL, OrderType.MARKET, D(3))]
    short = BarContext(2, FRAME, values, D(-2), SYMBOL)
    assert short.close_position() == [OrderIntent(SYMBOL, Side.BUY, OrderType.MARKET, D(2))]
    assert BarContext(2, FRAME, values, D(0), SYMBOL).close_position() == []


def test_an_empty_frame_gives_no_decision() -> None:
    assert build("macd_trend", {}).decide_last(OhlcvFrame.empty(), D(0), SYMBOL) == []


def test_holding_a_position_the_strategy_only_exits() -> None:
    strategy = build("sma_crossover", {"fast": 5, "slow": 20})
    _, _, flat = simulate(strategy, FRAME)
    values = strategy.indicators(FRAME)
    for index in range(len(FRAME)):
        held = strategy.on_bar(BarContext(index, FRAME, values, D(7), SYMBOL))
        assert held in ([], [OrderIntent(SYMBOL, Side.SELL, OrderType.MARKET, D(7))])
        assert not any(i.side is Side.BUY for i in held)
    assert any(flat)


@pytest.mark.parametrize(("name", "params", "fields"), [
    ("sma_crossover", {"fast": 0}, ["params.fast"]),
    ("sma_crossover", {"fast": 30, "slow": 10}, ["params.slow"]),
    ("sma_crossover", {"fast": 40}, ["params.slow"]),                     # against the default slow of 30
    ("sma_crossover", {"fast": "ten"}, ["params.fast"]),
    ("sma_crossover", {"speed": 3}, ["params.speed"]),
    ("rsi_reversion", {"oversold": 80, "overbought": 70}, ["params.overbought"]),
    ("rsi_reversion", {"period": 1, "oversold": 100}, ["params.period", "params.oversold"]),
    ("bollinger_breakout", {"deviations": 0}, ["params.deviations"]),
    ("bollinger_breakout", {"deviations": 0.001}, ["params.deviations"]),
    ("macd_trend", {"fast": 26, "slow": 12}, ["params.slow"]),
    ("macd_trend", {"signal": 0, "quantity": "-1"}, ["params.quantity", "params.signal"]),
])
def test_bad_parameters_name_each_field(name: str, params: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(Invalid) as refused:
        build(name, params)
    assert refused.value.status == 422
    assert sorted(e["field"] for e in refused.value.errors or []) == sorted(fields)
    assert refused.value.detail.startswith(f"bad parameters for {name}: ")


def test_parameters_come_from_json_with_defaults_and_a_chosen_field_name() -> None:
    params = parse_params(strategy_class("sma_crossover"), {"fast": 3, "slow": "7", "quantity": "0.5"})
    assert params.model_dump() == {"fast": 3, "slow": 7, "quantity": D("0.5")}
    assert isinstance(params, StrategyParams)
    with pytest.raises(Invalid) as refused:
        parse_params(strategy_class("rsi_reversion"), {"period": 0}, field="strategy.params")
    assert refused.value.errors == [{"field": "strategy.params.period",
                                     "reason": "Input should be greater than or equal to 2"}]


def test_an_unknown_strategy_is_refused_naming_the_field() -> None:
    with pytest.raises(Invalid) as refused:
        build("buy_the_dip", {})
    assert refused.value.errors == [{"field": "strategy", "reason": "unknown strategy 'buy_the_dip'"}]
    assert "known: bollinger_breakout, macd_trend, rsi_reversion, sma_crossover" in refused.value.detail


def test_the_catalog_lists_the_four_built_ins_with_their_json_schemas() -> None:
    entries = {entry["name"]: entry for entry in catalog()}
    assert set(entries) == {"sma_crossover", "rsi_reversion", "bollinger_breakout", "macd_trend"}
    expected_fields = {"sma_crossover": {"fast", "slow"}, "bollinger_breakout": {"period", "deviations"},
                       "rsi_reversion": {"period", "oversold", "overbought"},
                       "macd_trend": {"fast", "slow", "signal"}}
    for name, entry in entries.items():
        schema = entry["params"]
        assert entry["description"] and schema["type"] == "object"
        assert set(schema["properties"]) == expected_fields[name] | {"quantity"}
        assert schema["additionalProperties"] is False
        for field, spec in schema["properties"].items():
            assert "default" in spec, (name, field)
        # Every default the schema shows builds the strategy.
        build(name, {field: spec["default"] for field, spec in schema["properties"].items()})
    assert entries["sma_crossover"]["params"]["properties"]["fast"]["minimum"] == 1


def test_a_flat_market_is_no_rsi_reading() -> None:
    """TA-Lib's RSI is 0 while no close has moved; rsi_reversion must not read that as oversold."""
    flat = np.full(60, 100.0)
    closes = np.concatenate([flat, 100 - np.arange(1, 21, dtype=np.float64)])  # then a real fall
    days = np.arange(len(closes), dtype=np.int64) * DAY_MS
    frame = OhlcvFrame(days, closes, closes + 1, closes - 1, closes, np.full(len(closes), 1000.0))
    strategy = build("rsi_reversion", {"period": 14})
    trades, _, _ = simulate(strategy, frame)
    rsi = strategy.indicators(frame)["rsi"]
    assert np.isnan(rsi[:60]).all() and rsi[60] == 0
    assert trades == [(60, Side.BUY, D(1))]                 # the first bar with a move, all of it down
    assert strategy.decide_last(frame.slice(0, 40), D(0), SYMBOL) == []
