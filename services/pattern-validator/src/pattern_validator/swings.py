"""Swing pivots: the turning points every chart pattern is built from.

A pivot is the extreme of a price leg (the highest high of a rise, the lowest low of a fall). It is
confirmed on the first bar where both hold:

- price has moved away from the extreme by the minimum move: `min_move_atr` * ATR at the extreme,
  or `min_move_pct` % of its price, whichever is larger;
- the extreme has stood for `swing_bars` bars (it is the extreme of a window reaching that far).

Pivots alternate high, low, high, ... and a confirmed pivot never changes afterwards, so a pattern
found at a bar uses only what was known at that bar's close (live and historical runs agree).

ATR here is the plain mean of the true range over `atr_bars` bars (not Wilder's smoothing), so it
depends only on those bars and not on where the series starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import talib

from aitrading.market.bars import FloatArray, OhlcvFrame


@dataclass(frozen=True, slots=True)
class SwingSettings:
    swing_bars: int = 3
    min_move_atr: float = 2.0
    min_move_pct: float = 0.0
    atr_bars: int = 14


@dataclass(frozen=True, slots=True)
class Pivot:
    index: int  # the bar of the extreme
    confirmed: int  # the bar on whose close it became a pivot
    price: float
    is_high: bool


def average_true_range(frame: OhlcvFrame, bars: int) -> FloatArray:
    """Mean true range over the last `bars` bars (fewer at the start of the series, never NaN)."""
    n = len(frame)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    true_range = np.asarray(talib.TRANGE(frame.high, frame.low, frame.close), dtype=np.float64)
    true_range[0] = frame.high[0] - frame.low[0]  # no previous close: the bar's own range
    atr = np.empty(n, dtype=np.float64)
    head = min(bars, n)
    atr[:head] = np.cumsum(true_range[:head]) / np.arange(1, head + 1)
    if n > bars:
        atr[bars:] = np.lib.stride_tricks.sliding_window_view(true_range, bars)[1:].sum(axis=1) / bars
    return atr


def pivots(frame: OhlcvFrame, atr: FloatArray, settings: SwingSettings) -> list[Pivot]:
    """Alternating confirmed pivots of `frame`, oldest first (see the module docstring)."""
    n = len(frame)
    if n < 2:
        return []
    high: list[float] = frame.high.tolist()
    low: list[float] = frame.low.tolist()
    threshold: list[float] = np.maximum(settings.min_move_atr * atr,
                                        settings.min_move_pct / 100.0 * frame.close).tolist()
    wait = settings.swing_bars
    found: list[Pivot] = []

    # Before the first pivot the direction is unknown: track the highest high and the lowest low.
    hi, lo, t = 0, 0, 1
    leg = 0  # +1: a rise whose top is `extreme`; -1: a fall whose bottom is `extreme`
    while t < n and leg == 0:
        if high[t] > high[hi]:
            hi = t
        if low[t] < low[lo]:
            lo = t
        first = min(hi, lo)  # the earlier extreme is the candidate pivot
        move = high[hi] - low[lo]
        if t - first >= wait and move > 0 and move >= threshold[first]:
            leg = -1 if first == hi else +1
            found.append(Pivot(first, t, high[hi] if leg < 0 else low[lo], leg < 0))
        t += 1
    # The extreme of the current leg, and the opposite extreme reached since it (the pullback).
    extreme, pullback = (lo, _argmax(high, lo + 1, t)) if leg < 0 else (hi, _argmin(low, hi + 1, t))

    resume = t
    for t in range(resume, n):
        if leg > 0:
            if high[t] > high[extreme]:
                extreme, pullback = t, -1
            elif pullback < 0 or low[t] < low[pullback]:
                pullback = t
        elif low[t] < low[extreme]:
            extreme, pullback = t, -1
        elif pullback < 0 or high[t] > high[pullback]:
            pullback = t
        # A reversal can confirm one pivot and, on the same bar, the next one too.
        while pullback >= 0 and t - extreme >= wait:
            move = high[extreme] - low[pullback] if leg > 0 else high[pullback] - low[extreme]
            if move <= 0 or move < threshold[extreme]:
                break
            if leg > 0:
                found.append(Pivot(extreme, t, high[extreme], True))
                leg, extreme, pullback = -1, pullback, _argmax(high, pullback + 1, t + 1)
            else:
                found.append(Pivot(extreme, t, low[extreme], False))
                leg, extreme, pullback = +1, pullback, _argmin(low, pullback + 1, t + 1)
    return found


def _argmax(values: list[float], start: int, stop: int) -> int:
    """Index of the largest value in [start, stop), or -1 when the range is empty."""
    if start >= stop:
        return -1
    return max(range(start, stop), key=values.__getitem__)


def _argmin(values: list[float], start: int, stop: int) -> int:
    if start >= stop:
        return -1
    return min(range(start, stop), key=values.__getitem__)
