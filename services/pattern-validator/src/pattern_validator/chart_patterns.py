"""Chart patterns built from swing pivots (see `swings`): levels, breakouts, double tops and bottoms,
head and shoulders, triangles.

Each detection's time is the bar whose close completes or confirms it, and it uses no later bar. How
confidence is derived (all in [0, 1]):

- `support` / `resistance`: a pivot that touches a level other pivots made (within
  `level_tolerance_atr` ATR), reported when the touch is confirmed. `touch = 1 - 0.6^(touches-1)`
  (2 touches 0.4, 3 → 0.64, 4 → 0.78), scaled by how tightly the touches agree:
  `touch * (0.75 + 0.25 * (1 - spread / tolerance))`. A level is dropped once broken, or when no
  pivot touched it for `level_memory_bars` bars.
- `breakout`: the first close beyond a level of two or more touches by `breakout_margin_atr` ATR
  (up through resistance: bullish; down through support: bearish). `0.4 * touch + 0.3 * min(distance
  beyond the level / ATR, 1) + 0.3 * min(volume / mean volume of the previous bars - 1, 1)`.
- `double_top` / `double_bottom`: peak, trough, peak (or the mirror) with the peaks within
  `peak_tolerance` of the pattern height, the height at least `min_height_atr` ATR; confirmed by the
  first close through the trough (the neckline) before price exceeds the peaks.
  `0.5 * peak match + 0.25 * time symmetry of the two legs + 0.25 * min(height / (2 * minimum), 1)`.
- `head_and_shoulders` / `inverse_head_and_shoulders`: five pivots, the middle one the extreme by at
  least `peak_tolerance` of the height, shoulders within `shoulder_tolerance` of the height, the
  neckline through the two troughs (it may slope); confirmed by the first close through the neckline.
  `0.4 * shoulder match + 0.2 * time symmetry + 0.2 * neckline flatness + 0.2 * head prominence`.
- `ascending_triangle` / `descending_triangle` / `symmetric_triangle`: least-squares lines through
  the last three high and three low pivots; one flat and one converging towards it, or both
  converging, narrowing by at least `triangle_min_convergence`; reported when the sixth pivot
  confirms it (once per triangle), provided the pivots lie within `TRIANGLE_FIT` of the initial width
  of the lines (rms). `0.6 * fit (1 - rms / (TRIANGLE_FIT * initial width)) + 0.4 * narrowing`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aitrading.market.bars import FloatArray, OhlcvFrame
from pattern_validator.detections import Detection, Direction, Kind, clamp01, iso, price
from pattern_validator.swings import Pivot, SwingSettings, average_true_range, pivots

# Pivots may stray from a triangle's lines by this fraction of its initial width (rms) at most.
TRIANGLE_FIT = 0.15

NAMES: tuple[str, ...] = (
    "support", "resistance", "breakout", "double_top", "double_bottom", "head_and_shoulders",
    "inverse_head_and_shoulders", "ascending_triangle", "descending_triangle", "symmetric_triangle",
)


@dataclass(frozen=True, slots=True)
class ChartSettings:
    swings: SwingSettings = field(default_factory=SwingSettings)
    level_tolerance_atr: float = 0.5
    level_memory_bars: int = 250
    breakout_margin_atr: float = 0.25
    volume_bars: int = 20
    peak_tolerance: float = 0.1
    shoulder_tolerance: float = 0.2
    min_height_atr: float = 2.0
    max_pattern_bars: int = 200
    triangle_flat: float = 0.2  # a line moving less than this fraction of the initial width is flat
    triangle_min_convergence: float = 0.3

    @property
    def history_bars(self) -> int:
        """Bars before a detection that can still shape it: the longest pattern or level memory."""
        return max(self.max_pattern_bars * 2, self.level_memory_bars) + self.swings.atr_bars


def detect(frame: OhlcvFrame, settings: ChartSettings | None = None, *, since: int = 0) -> list[Detection]:
    """Every chart-pattern detection in `frame` at bar index `since` or later."""
    settings = settings or ChartSettings()
    if len(frame) < 3 or since >= len(frame):
        return []
    atr = average_true_range(frame, settings.swings.atr_bars)
    found = pivots(frame, atr, settings.swings)
    # Each detector builds only the detections at `since` or later (the live path wants one bar).
    return [
        *_levels_and_breakouts(frame, atr, found, settings, since),
        *_double_patterns(frame, atr, found, settings, +1, since),
        *_double_patterns(frame, atr, found, settings, -1, since),
        *_head_and_shoulders(frame, atr, found, settings, +1, since),
        *_head_and_shoulders(frame, atr, found, settings, -1, since),
        *_triangles(frame, atr, found, settings, since),
    ]


def _point(frame: OhlcvFrame, index: int, value: float) -> dict[str, str]:
    return {"time": iso(int(frame.time_ms[index])), "price": price(value)}


# --- support, resistance and breakouts ----------------------------------------------------------------

@dataclass
class _Level:
    touches: list[Pivot]
    total: float  # sum of the touch prices
    side: int  # +1: price is above the level (support); -1: below it (resistance)
    ends: int = 0  # the bar it is broken on, or the last bar it is remembered on
    broken: bool = False

    @property
    def price(self) -> float:
        return self.total / len(self.touches)


def _touch_score(touches: int) -> float:
    return 1.0 - 0.6 ** (touches - 1)


def _levels_and_breakouts(frame: OhlcvFrame, atr: FloatArray, found: Sequence[Pivot],
                          settings: ChartSettings, since: int) -> list[Detection]:
    close, times, n = frame.close, frame.time_ms, len(frame)
    margin = settings.breakout_margin_atr * atr
    active: list[_Level] = []
    out: list[Detection] = []

    def schedule(level: _Level, after: int) -> None:
        """When `level` (as it now stands) ends: its first close beyond the margin, else forgotten."""
        last = min(n - 1, after + settings.level_memory_bars)
        segment = close[after + 1:last + 1]
        if level.side > 0:
            beyond = np.flatnonzero(segment < level.price - margin[after + 1:last + 1])
        else:
            beyond = np.flatnonzero(segment > level.price + margin[after + 1:last + 1])
        level.broken = bool(beyond.size)
        level.ends = after + 1 + int(beyond[0]) if beyond.size else last

    def retire(until: int) -> None:
        """Close the levels ending before `until` (a break on that very bar counts too)."""
        for level in [lv for lv in active if lv.ends < until or (lv.broken and lv.ends == until)]:
            active.remove(level)
            if level.broken and len(level.touches) >= 2 and level.ends >= since:
                out.append(_breakout(frame, atr, level, level.ends, settings))

    for pivot in found:
        retire(pivot.confirmed)
        tolerance = settings.level_tolerance_atr * float(atr[pivot.index])
        side = -1 if pivot.is_high else +1
        near = [level for level in active if abs(level.price - pivot.price) <= tolerance]
        if not near:
            level = _Level([pivot], pivot.price, side)
            schedule(level, pivot.confirmed)
            active.append(level)
            continue
        level = min(near, key=lambda lv: abs(lv.price - pivot.price))
        level.touches.append(pivot)
        level.total += pivot.price
        level.side = side
        schedule(level, pivot.confirmed)
        if pivot.confirmed < since:
            continue
        prices = np.array([p.price for p in level.touches])
        tightness = 1.0 - clamp01(float(prices.std()) / tolerance) if tolerance > 0 else 1.0
        confidence = _touch_score(len(level.touches)) * (0.75 + 0.25 * tightness)
        name, direction = (("resistance", Direction.BEARISH) if pivot.is_high
                           else ("support", Direction.BULLISH))
        details = {"level": price(level.price), "touches": len(level.touches),
                   "touch_times": [iso(int(times[p.index])) for p in level.touches],
                   "tolerance": price(tolerance)}
        out.append(Detection(int(times[pivot.confirmed]), name, direction, clamp01(confidence), Kind.CHART,
                             details))
    retire(n)
    return out


def _breakout(frame: OhlcvFrame, atr: FloatArray, level: _Level, t: int,
              settings: ChartSettings) -> Detection:
    close = float(frame.close[t])
    beyond = abs(close - level.price) / float(atr[t]) if atr[t] > 0 else 1.0
    previous = frame.volume[max(0, t - settings.volume_bars):t]
    average = float(previous.mean()) if previous.size else 0.0
    ratio = float(frame.volume[t]) / average if average > 0 else None
    volume_score = clamp01(ratio - 1.0) if ratio is not None else 0.0
    confidence = 0.4 * _touch_score(len(level.touches)) + 0.3 * clamp01(beyond) + 0.3 * volume_score
    direction = Direction.BULLISH if level.side < 0 else Direction.BEARISH
    details: dict[str, Any] = {
        "level": price(level.price), "touches": len(level.touches), "close": price(close),
        "touch_times": [iso(int(frame.time_ms[p.index])) for p in level.touches],
        "volume_ratio": None if ratio is None else round(ratio, 4),
    }
    return Detection(int(frame.time_ms[t]), "breakout", direction, clamp01(confidence), Kind.CHART, details)


# --- double tops and bottoms, head and shoulders ------------------------------------------------------

def _first_break(close: FloatArray, beyond: FloatArray, neckline: FloatArray | float, start: int, stop: int,
                 invalid_above: float) -> int | None:
    """First bar in [start, stop) closing below `neckline`, unless `beyond` exceeds `invalid_above` first.

    Arrays are in the pattern's orientation (negated for bottoms), so "below" means "through";
    `neckline` is a level or its value on each bar of [start, stop).
    """
    if start >= stop:
        return None
    breaks = np.flatnonzero(close[start:stop] < neckline)
    if not breaks.size:
        return None
    spoiled = np.flatnonzero(beyond[start:start + int(breaks[0]) + 1] > invalid_above)
    return None if spoiled.size else start + int(breaks[0])


def _oriented(frame: OhlcvFrame, sign: int) -> tuple[FloatArray, FloatArray]:
    """(close, extreme side) with tops as they are and bottoms negated, so one routine serves both."""
    if sign > 0:
        return frame.close, frame.high
    return -frame.close, -frame.low


def _double_patterns(frame: OhlcvFrame, atr: FloatArray, found: Sequence[Pivot], settings: ChartSettings,
                     sign: int, since: int) -> list[Detection]:
    close, extreme = _oriented(frame, sign)
    n = len(frame)
    out: list[Detection] = []
    for first, trough, second in zip(found, found[1:], found[2:], strict=False):
        if first.is_high != (sign > 0) or second.index - first.index > settings.max_pattern_bars:
            continue
        a, b, c = sign * first.price, sign * trough.price, sign * second.price
        height = (a + c) / 2 - b
        minimum = settings.min_height_atr * float(atr[second.index])
        if height <= 0 or height < minimum or abs(a - c) > settings.peak_tolerance * height:
            continue
        stop = min(n, second.confirmed + max(second.index - first.index, settings.swings.swing_bars) + 1)
        if stop <= since:
            continue
        t = _first_break(close, extreme, b, second.confirmed, stop, max(a, c))
        if t is None or t < since:
            continue
        match = 1.0 - abs(a - c) / (settings.peak_tolerance * height)
        legs = (trough.index - first.index, second.index - trough.index)
        symmetry = min(legs) / max(legs)
        depth = clamp01(height / (2 * minimum)) if minimum > 0 else 1.0
        confidence = 0.5 * match + 0.25 * symmetry + 0.25 * depth
        name = "double_top" if sign > 0 else "double_bottom"
        details = {
            "peaks": [_point(frame, first.index, first.price), _point(frame, second.index, second.price)],
            "trough": _point(frame, trough.index, trough.price),
            "neckline": price(trough.price),
            "target": price(sign * (b - height)),
        }
        direction = Direction.BEARISH if sign > 0 else Direction.BULLISH
        out.append(Detection(int(frame.time_ms[t]), name, direction, clamp01(confidence), Kind.CHART,
                             details))
    return out


def _head_and_shoulders(frame: OhlcvFrame, atr: FloatArray, found: Sequence[Pivot], settings: ChartSettings,
                        sign: int, since: int) -> list[Detection]:
    close, extreme = _oriented(frame, sign)
    n = len(frame)
    out: list[Detection] = []
    for k in range(len(found) - 4):
        left, neck1, head, neck2, right = found[k:k + 5]
        if left.is_high != (sign > 0) or right.index - left.index > settings.max_pattern_bars:
            continue
        ls, n1, h, n2, rs = (sign * p.price for p in (left, neck1, head, neck2, right))
        slope = (n2 - n1) / (neck2.index - neck1.index)

        def neck_at(i: int, n1: float = n1, slope: float = slope, origin: int = neck1.index) -> float:
            return n1 + slope * (i - origin)

        height = h - neck_at(head.index)
        prominence = h - max(ls, rs)
        if height < settings.min_height_atr * float(atr[right.index]) or height <= 0:
            continue
        if ls <= neck_at(left.index) or rs <= neck_at(right.index):
            continue
        if (prominence < settings.peak_tolerance * height
                or abs(ls - rs) > settings.shoulder_tolerance * height):
            continue
        stop = min(n, right.confirmed + max(right.index - left.index, settings.swings.swing_bars) + 1)
        if stop <= since:
            continue
        start = right.confirmed
        neckline = n1 + slope * (np.arange(start, stop, dtype=np.float64) - neck1.index)
        t = _first_break(close, extreme, neckline, start, stop, max(ls, rs))
        if t is None or t < since:
            continue
        match = 1.0 - abs(ls - rs) / (settings.shoulder_tolerance * height)
        spans = (head.index - left.index, right.index - head.index)
        symmetry = min(spans) / max(spans)
        flatness = 1.0 - clamp01(abs(n2 - n1) / height)
        standout = clamp01(prominence / (0.5 * height))
        confidence = 0.4 * match + 0.2 * symmetry + 0.2 * flatness + 0.2 * standout
        name = "head_and_shoulders" if sign > 0 else "inverse_head_and_shoulders"
        details = {
            "shoulders": [_point(frame, left.index, left.price), _point(frame, right.index, right.price)],
            "head": _point(frame, head.index, head.price),
            "neckline": [_point(frame, neck1.index, neck1.price), _point(frame, neck2.index, neck2.price)],
            "neckline_at_break": price(sign * neck_at(t)),
            "target": price(sign * (neck_at(t) - height)),
        }
        direction = Direction.BEARISH if sign > 0 else Direction.BULLISH
        out.append(Detection(int(frame.time_ms[t]), name, direction, clamp01(confidence), Kind.CHART,
                             details))
    return out


# --- triangles ----------------------------------------------------------------------------------------

def _line(points: Sequence[Pivot]) -> tuple[float, float, float]:
    """Least-squares (intercept, slope per bar, rms residual) through pivots (plain floats: 3 points)."""
    count = len(points)
    xm = sum(p.index for p in points) / count
    ym = sum(p.price for p in points) / count
    slope = sum((p.index - xm) * (p.price - ym) for p in points) / sum((p.index - xm) ** 2 for p in points)
    intercept = ym - slope * xm
    residual = math.sqrt(sum((p.price - intercept - slope * p.index) ** 2 for p in points) / count)
    return intercept, slope, residual


def _triangles(frame: OhlcvFrame, atr: FloatArray, found: Sequence[Pivot],
               settings: ChartSettings, since: int) -> list[Detection]:
    out: list[Detection] = []
    flat = settings.triangle_flat
    previous: str | None = None  # the triangle the previous pivot belonged to: reported once
    for k in range(5, len(found)):
        group = found[k - 5:k + 1]
        name: str | None = None
        direction = Direction.NEUTRAL
        start, end = group[0].index, group[-1].index
        if end - start <= settings.max_pattern_bars:
            highs = [p for p in group if p.is_high]
            lows = [p for p in group if not p.is_high]
            ah, bh, rh = _line(highs)
            al, bl, rl = _line(lows)
            w0 = (ah + bh * start) - (al + bl * start)
            w1 = (ah + bh * end) - (al + bl * end)
            span = end - start
            rms = math.sqrt((rh ** 2 + rl ** 2) / 2)
            if (w0 >= settings.min_height_atr * float(atr[start]) and w0 > 0 and rms < TRIANGLE_FIT * w0
                    and 0 < w1 <= (1 - settings.triangle_min_convergence) * w0):
                upper, lower = bh * span / w0, bl * span / w0
                if abs(upper) <= flat and lower > flat:
                    name, direction = "ascending_triangle", Direction.BULLISH
                elif abs(lower) <= flat and upper < -flat:
                    name, direction = "descending_triangle", Direction.BEARISH
                elif upper < -flat and lower > flat:
                    name, direction = "symmetric_triangle", Direction.NEUTRAL
        if name is not None and name != previous and group[-1].confirmed >= since:
            fit = 1.0 - rms / (TRIANGLE_FIT * w0)
            narrowing = clamp01((1 - w1 / w0) / 0.7)
            details = {
                "upper": [_point(frame, start, ah + bh * start), _point(frame, end, ah + bh * end)],
                "lower": [_point(frame, start, al + bl * start), _point(frame, end, al + bl * end)],
                "pivot_times": [iso(int(frame.time_ms[p.index])) for p in group],
            }
            out.append(Detection(int(frame.time_ms[group[-1].confirmed]), name, direction,
                                 clamp01(0.6 * fit + 0.4 * narrowing), Kind.CHART, details))
        previous = name
    return out
