"""Candlestick patterns: every TA-Lib pattern-recognition function, run over a bar frame.

A non-zero TA-Lib output at a bar is a detection there (the pattern's last candle). TA-Lib's sign gives
the direction (> 0 bullish, < 0 bearish), except for the indecision candles (doji family, spinning top,
high wave, short line), which TA-Lib flags with +100 whatever happens next: those are `neutral`.

Confidence (documented for API clients) combines two pieces of evidence:

- TA-Lib's strength: 100 is the pattern, 200 a pattern TA-Lib saw confirmed by the following bars
  (the hikkake family). Base 0.5, or 0.7 when confirmed.
- The prior trend, measured over the `TREND_BARS` bars before the pattern's first candle as
  `tanh(net close change / (mean bar range * √bars))`, in [-1, 1]: about ±1 for a steady move, near 0
  for a random walk. A reversal pattern is what it claims only after a move the other way (a bullish
  engulfing after a fall); a continuation pattern after a move its own way. `confidence = base + 0.3 *
  agreement`, clamped to [0, 1], so a bullish reversal after a clear fall scores 0.8 (1.0 confirmed)
  and the same candles after a clear rise 0.2. Patterns whose definition carries no trend (kicking,
  marubozu, hikkake, ...) keep the base. Indecision candles score `0.3 + 0.4 * |trend|`: a doji after
  an extended move warns of exhaustion, in a flat market it says little.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import talib

from aitrading.market.bars import FloatArray, OhlcvFrame
from pattern_validator.detections import Detection, Direction, Kind, clamp01

TREND_BARS = 10
CONFIRMED_STRENGTH = 200


class Meaning(StrEnum):
    REVERSAL = "reversal"  # turns the prior trend
    CONTINUATION = "continuation"  # resumes the prior trend
    SIGNAL = "signal"  # directional, whatever the trend before
    INDECISION = "indecision"  # no direction of its own


@dataclass(frozen=True, slots=True)
class CandlePattern:
    function: str  # the TA-Lib function name
    name: str
    candles: int  # how many bars the pattern spans, the last one being the detection bar
    meaning: Meaning


_R, _C, _S, _I = Meaning.REVERSAL, Meaning.CONTINUATION, Meaning.SIGNAL, Meaning.INDECISION

CATALOG: tuple[CandlePattern, ...] = (
    CandlePattern("CDL2CROWS", "two_crows", 3, _R),
    CandlePattern("CDL3BLACKCROWS", "three_black_crows", 3, _R),
    CandlePattern("CDL3INSIDE", "three_inside", 3, _R),
    CandlePattern("CDL3LINESTRIKE", "three_line_strike", 4, _C),
    CandlePattern("CDL3OUTSIDE", "three_outside", 3, _R),
    CandlePattern("CDL3STARSINSOUTH", "three_stars_in_the_south", 3, _R),
    CandlePattern("CDL3WHITESOLDIERS", "three_white_soldiers", 3, _R),
    CandlePattern("CDLABANDONEDBABY", "abandoned_baby", 3, _R),
    CandlePattern("CDLADVANCEBLOCK", "advance_block", 3, _R),
    CandlePattern("CDLBELTHOLD", "belt_hold", 1, _R),
    CandlePattern("CDLBREAKAWAY", "breakaway", 5, _R),
    CandlePattern("CDLCLOSINGMARUBOZU", "closing_marubozu", 1, _S),
    CandlePattern("CDLCONCEALBABYSWALL", "concealing_baby_swallow", 4, _R),
    CandlePattern("CDLCOUNTERATTACK", "counterattack", 2, _R),
    CandlePattern("CDLDARKCLOUDCOVER", "dark_cloud_cover", 2, _R),
    CandlePattern("CDLDOJI", "doji", 1, _I),
    CandlePattern("CDLDOJISTAR", "doji_star", 2, _R),
    CandlePattern("CDLDRAGONFLYDOJI", "dragonfly_doji", 1, _I),
    CandlePattern("CDLENGULFING", "engulfing", 2, _R),
    CandlePattern("CDLEVENINGDOJISTAR", "evening_doji_star", 3, _R),
    CandlePattern("CDLEVENINGSTAR", "evening_star", 3, _R),
    CandlePattern("CDLGAPSIDESIDEWHITE", "gap_side_by_side_white_lines", 3, _C),
    CandlePattern("CDLGRAVESTONEDOJI", "gravestone_doji", 1, _I),
    CandlePattern("CDLHAMMER", "hammer", 1, _R),
    CandlePattern("CDLHANGINGMAN", "hanging_man", 1, _R),
    CandlePattern("CDLHARAMI", "harami", 2, _R),
    CandlePattern("CDLHARAMICROSS", "harami_cross", 2, _R),
    CandlePattern("CDLHIGHWAVE", "high_wave", 1, _I),
    CandlePattern("CDLHIKKAKE", "hikkake", 3, _S),
    CandlePattern("CDLHIKKAKEMOD", "modified_hikkake", 4, _S),
    CandlePattern("CDLHOMINGPIGEON", "homing_pigeon", 2, _R),
    CandlePattern("CDLIDENTICAL3CROWS", "identical_three_crows", 3, _R),
    CandlePattern("CDLINNECK", "in_neck", 2, _C),
    CandlePattern("CDLINVERTEDHAMMER", "inverted_hammer", 1, _R),
    CandlePattern("CDLKICKING", "kicking", 2, _S),
    CandlePattern("CDLKICKINGBYLENGTH", "kicking_by_length", 2, _S),
    CandlePattern("CDLLADDERBOTTOM", "ladder_bottom", 5, _R),
    CandlePattern("CDLLONGLEGGEDDOJI", "long_legged_doji", 1, _I),
    CandlePattern("CDLLONGLINE", "long_line", 1, _S),
    CandlePattern("CDLMARUBOZU", "marubozu", 1, _S),
    CandlePattern("CDLMATCHINGLOW", "matching_low", 2, _R),
    CandlePattern("CDLMATHOLD", "mat_hold", 5, _C),
    CandlePattern("CDLMORNINGDOJISTAR", "morning_doji_star", 3, _R),
    CandlePattern("CDLMORNINGSTAR", "morning_star", 3, _R),
    CandlePattern("CDLONNECK", "on_neck", 2, _C),
    CandlePattern("CDLPIERCING", "piercing", 2, _R),
    CandlePattern("CDLRICKSHAWMAN", "rickshaw_man", 1, _I),
    CandlePattern("CDLRISEFALL3METHODS", "rising_falling_three_methods", 5, _C),
    CandlePattern("CDLSEPARATINGLINES", "separating_lines", 2, _C),
    CandlePattern("CDLSHOOTINGSTAR", "shooting_star", 1, _R),
    CandlePattern("CDLSHORTLINE", "short_line", 1, _I),
    CandlePattern("CDLSPINNINGTOP", "spinning_top", 1, _I),
    CandlePattern("CDLSTALLEDPATTERN", "stalled_pattern", 3, _R),
    CandlePattern("CDLSTICKSANDWICH", "stick_sandwich", 3, _R),
    CandlePattern("CDLTAKURI", "takuri", 1, _R),
    CandlePattern("CDLTASUKIGAP", "tasuki_gap", 3, _C),
    CandlePattern("CDLTHRUSTING", "thrusting", 2, _C),
    CandlePattern("CDLTRISTAR", "tristar", 3, _R),
    CandlePattern("CDLUNIQUE3RIVER", "unique_three_river", 3, _R),
    CandlePattern("CDLUPSIDEGAP2CROWS", "upside_gap_two_crows", 3, _R),
    CandlePattern("CDLXSIDEGAP3METHODS", "gap_three_methods", 3, _C),
)
NAMES: tuple[str, ...] = tuple(p.name for p in CATALOG)

_FUNCTIONS: dict[str, Callable[..., Any]] = {p.function: getattr(talib, p.function) for p in CATALOG}
# Bars TA-Lib needs before the first bar it can answer for (its averaging periods), per function.
_ABSTRACT = importlib.import_module("talib.abstract")  # typed as a module: its Function is not in stubs
_LOOKBACK: dict[str, int] = {p.function: int(_ABSTRACT.Function(p.function).lookback) for p in CATALOG}
# Bars that decide the outcome at the last bar: TA-Lib's lookback plus the trend before the pattern.
TAIL_BARS = max(max(_LOOKBACK.values()), max(p.candles for p in CATALOG) + TREND_BARS) + 1


def prior_trend(frame: OhlcvFrame, bars: int = TREND_BARS) -> FloatArray:
    """Trend ending at each bar's close, in [-1, 1]; 0 where fewer than `bars` bars precede it.

    `tanh(Δclose over bars / (mean high-low range over those bars * √bars))`: the net move in units of
    the move a random walk with that bar range would make, squashed.
    """
    n = len(frame)
    trend = np.zeros(n, dtype=np.float64)
    if n <= bars:
        return trend
    close = frame.close
    # A sum per window, not a running cumsum: the same bars give bit-identical answers whatever
    # came before them, so the streaming tail and a full-history run agree exactly.
    windows = np.lib.stride_tricks.sliding_window_view(frame.high - frame.low, bars)
    mean_range = windows[1:].sum(axis=1) / bars  # bars i-bars+1 .. i, for i >= bars
    move = close[bars:] - close[:-bars]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = move / (mean_range * np.sqrt(bars))
    trend[bars:] = np.tanh(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0))
    return trend


def _confidence(pattern: CandlePattern, strength: float, trend_before: float) -> float:
    if pattern.meaning is Meaning.INDECISION:
        return clamp01(0.3 + 0.4 * abs(trend_before))
    base = 0.7 if abs(strength) >= CONFIRMED_STRENGTH else 0.5
    sign = 1.0 if strength > 0 else -1.0
    if pattern.meaning is Meaning.REVERSAL:
        agreement = -sign * trend_before
    elif pattern.meaning is Meaning.CONTINUATION:
        agreement = sign * trend_before
    else:
        agreement = 0.0
    return clamp01(base + 0.3 * agreement)


def _direction(pattern: CandlePattern, strength: float) -> Direction:
    if pattern.meaning is Meaning.INDECISION:
        return Direction.NEUTRAL
    return Direction.BULLISH if strength > 0 else Direction.BEARISH


def raw_outputs(frame: OhlcvFrame) -> dict[str, np.ndarray[Any, np.dtype[np.int32]]]:
    """TA-Lib's own output per pattern function (the reference the detections are built from)."""
    o, h, low, c = frame.open, frame.high, frame.low, frame.close
    return {fn: np.asarray(f(o, h, low, c), dtype=np.int32) for fn, f in _FUNCTIONS.items()}


def detect(frame: OhlcvFrame, *, since: int = 0) -> list[Detection]:
    """Every candlestick detection in `frame` at bar index `since` or later."""
    if len(frame) == 0:
        return []
    trend = prior_trend(frame)
    times = frame.time_ms
    found: list[Detection] = []
    for pattern, output in zip(CATALOG, raw_outputs(frame).values(), strict=True):
        for i in np.flatnonzero(output[since:]) + since:
            strength = float(output[i])
            first = i - pattern.candles + 1
            trend_before = float(trend[first - 1]) if first >= 1 else 0.0
            details = {"talib": pattern.function, "strength": int(strength), "meaning": pattern.meaning.value,
                       "prior_trend": round(trend_before, 4)}
            found.append(Detection(int(times[i]), pattern.name, _direction(pattern, strength),
                                   _confidence(pattern, strength, trend_before), Kind.CANDLESTICK, details))
    return found


def detect_last(frame: OhlcvFrame) -> list[Detection]:
    """Detections at the last bar only, from the few bars that decide them (the streaming path)."""
    tail = frame.tail(TAIL_BARS)
    return detect(tail, since=len(tail) - 1)
