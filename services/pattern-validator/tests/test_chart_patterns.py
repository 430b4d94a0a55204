"""Chart patterns on constructed price paths where each is known to be present, and absent on trends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pattern_validator import chart_patterns
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.detections import Detection, Direction, Kind
from pattern_validator.swings import SwingSettings, average_true_range, pivots

from aitrading.market.bars import OhlcvFrame

from .conftest import bar_index, path, random_walk


def found(frame: OhlcvFrame, name: str) -> list[Detection]:
    return [d for d in chart_patterns.detect(frame) if d.pattern == name]


def only(frame: OhlcvFrame, name: str) -> Detection:
    detections = found(frame, name)
    assert len(detections) == 1, [(d.pattern, d.time_ms) for d in chart_patterns.detect(frame)]
    return detections[0]


# --- pivots -------------------------------------------------------------------------------------------

def test_pivots_alternate_at_the_leg_extremes_and_confirm_after_the_reversal() -> None:
    frame = path([(0, 100), (20, 120), (35, 105), (50, 125), (70, 100)])
    atr = average_true_range(frame, 14)
    found_pivots = pivots(frame, atr, SwingSettings())
    assert [(p.index, p.is_high) for p in found_pivots] == [(0, False), (20, True), (35, False), (50, True)]
    assert found_pivots[1].price == pytest.approx(float(frame.high[20]))
    for pivot in found_pivots:
        assert pivot.confirmed >= pivot.index + SwingSettings().swing_bars
        move = abs(pivot.price - (frame.low if pivot.is_high else frame.high)[pivot.confirmed])
        assert move >= 2.0 * atr[pivot.index]


def test_a_straight_line_has_no_pivot_after_its_start() -> None:
    frame = path([(0, 100), (300, 250)])
    found_pivots = pivots(frame, average_true_range(frame, 14), SwingSettings())
    assert [p.index for p in found_pivots] in ([], [0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(50, 599))
def test_pivots_and_patterns_found_on_a_prefix_are_those_of_the_whole_series_up_to_then(seed: int,
                                                                                      cut: int) -> None:
    """Nothing is revised later: what is known at a bar's close never uses a later bar."""
    frame = random_walk(600, seed)
    prefix = frame.slice(0, cut)
    settings_ = SwingSettings()
    whole = pivots(frame, average_true_range(frame, 14), settings_)
    early = pivots(prefix, average_true_range(prefix, 14), settings_)
    assert early == [p for p in whole if p.confirmed < cut]
    last = int(prefix.time_ms[-1])
    expected = sorted((d.time_ms, d.pattern, d.direction, d.confidence)
                      for d in chart_patterns.detect(frame) if d.time_ms <= last)
    got = sorted((d.time_ms, d.pattern, d.direction, d.confidence) for d in chart_patterns.detect(prefix))
    assert got == expected


# --- support, resistance, breakouts -------------------------------------------------------------------

def _range_then_break(volumes: Sequence[float] | None = None) -> OhlcvFrame:
    points = [(0, 100.0)]
    for k in range(1, 8):
        points.append((k * 10, 110.0 if k % 2 else 100.0))
    points.append((80, 125.0))
    return path(points, volumes=volumes)


def test_touches_of_a_level_build_support_and_resistance_with_growing_confidence() -> None:
    frame = _range_then_break()
    resistance = found(frame, "resistance")
    support = found(frame, "support")
    assert [d.details["touches"] for d in resistance if d.details] == [2, 3]
    assert [d.details["touches"] for d in support if d.details] == [2, 3, 4]
    assert all(d.direction is Direction.BEARISH for d in resistance)
    assert all(d.direction is Direction.BULLISH for d in support)
    assert [d.confidence for d in support] == sorted(d.confidence for d in support)
    assert support[-1].confidence > support[0].confidence
    assert resistance[0].details is not None and float(resistance[0].details["level"]) == pytest.approx(110.3)


def test_a_close_through_resistance_is_a_bullish_breakout_and_volume_raises_its_confidence() -> None:
    n = 81
    quiet = only(_range_then_break([1000.0] * n), "breakout")
    breakout_bar = bar_index(_range_then_break(), quiet.time_ms)
    loud_volumes = [1000.0] * n
    loud_volumes[breakout_bar] = 3000.0
    loud = only(_range_then_break(loud_volumes), "breakout")
    assert quiet.direction is Direction.BULLISH and quiet.kind is Kind.CHART
    frame = _range_then_break()
    assert frame.close[breakout_bar] > 110.3 + 0.25 * average_true_range(frame, 14)[breakout_bar]
    assert frame.close[breakout_bar - 1] <= 110.3 + 0.25 * average_true_range(frame, 14)[breakout_bar - 1]
    assert quiet.details is not None and quiet.details["touches"] == 3
    assert quiet.details["volume_ratio"] == pytest.approx(1.0)
    assert loud.details is not None and loud.details["volume_ratio"] == pytest.approx(3.0)
    assert loud.confidence == pytest.approx(quiet.confidence + 0.3)


def test_a_single_touch_makes_no_level_and_a_broken_level_is_gone() -> None:
    # Up, pull back, then straight through the only high: one touch, no level, no breakout.
    frame = path([(0, 100), (20, 120), (30, 110), (60, 150)])
    assert found(frame, "breakout") == []
    assert found(frame, "resistance") == []


# --- double tops and bottoms --------------------------------------------------------------------------

def test_double_top_is_confirmed_by_the_close_below_the_trough() -> None:
    frame = path([(0, 100), (30, 130), (45, 115), (60, 130), (80, 105)])
    top = only(frame, "double_top")
    assert top.direction is Direction.BEARISH
    at = bar_index(frame, top.time_ms)
    assert frame.close[at] < 114.7 <= frame.close[at - 1]
    assert top.details is not None
    assert [float(p["price"]) for p in top.details["peaks"]] == pytest.approx([130.3, 130.3])
    assert float(top.details["target"]) == pytest.approx(114.7 - 15.6)
    assert top.confidence > 0.9  # equal peaks, symmetric legs, deep trough
    assert found(frame, "double_bottom") == []


def test_double_bottom_mirrors_the_top() -> None:
    frame = path([(0, 130), (30, 100), (45, 115), (60, 100), (80, 125)])
    bottom = only(frame, "double_bottom")
    assert bottom.direction is Direction.BULLISH
    assert frame.close[bar_index(frame, bottom.time_ms)] > 115.3
    assert found(frame, "double_top") == []


def test_unequal_peaks_or_a_shallow_trough_are_not_a_double_top() -> None:
    assert found(path([(0, 100), (30, 130), (45, 115), (60, 140), (80, 105)]), "double_top") == []
    assert found(path([(0, 100), (30, 130), (40, 128), (50, 130), (80, 105)]), "double_top") == []


def test_lopsided_double_top_scores_below_a_symmetric_one() -> None:
    symmetric = only(path([(0, 100), (30, 130), (45, 115), (60, 130), (80, 105)]), "double_top")
    lopsided = only(path([(0, 100), (30, 130), (40, 115), (70, 131), (90, 105)]), "double_top")
    assert lopsided.confidence < symmetric.confidence


def test_a_double_top_without_the_neckline_break_is_not_reported() -> None:
    frame = path([(0, 100), (30, 130), (45, 115), (60, 130), (75, 118), (90, 135)])
    assert found(frame, "double_top") == []


# --- head and shoulders -------------------------------------------------------------------------------

def test_head_and_shoulders_is_confirmed_by_the_neckline_break() -> None:
    frame = path([(0, 100), (20, 120), (30, 110), (45, 135), (60, 110), (75, 120), (95, 95)])
    pattern = only(frame, "head_and_shoulders")
    assert pattern.direction is Direction.BEARISH
    assert frame.close[bar_index(frame, pattern.time_ms)] < 109.7
    assert pattern.details is not None
    assert float(pattern.details["head"]["price"]) == pytest.approx(135.3)
    assert pattern.confidence > 0.9
    assert found(frame, "inverse_head_and_shoulders") == []


def test_inverse_head_and_shoulders_mirrors_it() -> None:
    frame = path([(0, 130), (20, 110), (30, 120), (45, 95), (60, 120), (75, 110), (95, 135)])
    pattern = only(frame, "inverse_head_and_shoulders")
    assert pattern.direction is Direction.BULLISH
    assert found(frame, "head_and_shoulders") == []


def test_shoulders_far_apart_in_height_are_not_head_and_shoulders() -> None:
    frame = path([(0, 100), (20, 112), (30, 110), (45, 135), (60, 110), (75, 128), (95, 95)])
    assert found(frame, "head_and_shoulders") == []


# --- triangles ----------------------------------------------------------------------------------------

TRIANGLES = {
    "ascending_triangle": [(0, 100), (20, 130), (35, 110), (50, 130), (60, 118), (70, 130), (77, 124),
                           (84, 130), (90, 140)],
    "descending_triangle": [(0, 130), (20, 100), (35, 120), (50, 100), (60, 112), (70, 100), (77, 106),
                            (84, 100), (90, 90)],
    "symmetric_triangle": [(0, 100), (20, 140), (35, 105), (50, 134), (62, 111), (74, 128), (84, 116),
                           (92, 123), (100, 110)],
}


@pytest.mark.parametrize("name", list(TRIANGLES))
def test_each_triangle_is_found_once_from_converging_lines(name: str) -> None:
    frame = path(TRIANGLES[name])
    detections = [d for d in chart_patterns.detect(frame) if d.pattern.endswith("_triangle")]
    assert [d.pattern for d in detections] == [name]
    triangle = detections[0]
    assert triangle.direction is {"ascending_triangle": Direction.BULLISH,
                                  "descending_triangle": Direction.BEARISH,
                                  "symmetric_triangle": Direction.NEUTRAL}[name]
    assert triangle.confidence > 0.8  # the constructed pivots lie on their lines
    assert triangle.details is not None and len(triangle.details["pivot_times"]) == 6
    upper = [float(p["price"]) for p in triangle.details["upper"]]
    lower = [float(p["price"]) for p in triangle.details["lower"]]
    assert upper[1] - lower[1] < 0.7 * (upper[0] - lower[0])


def test_parallel_channel_is_not_a_triangle() -> None:
    points = [(0, 100.0)]
    for k in range(1, 9):
        points.append((k * 10, 100.0 + k * 3 + (15.0 if k % 2 else 0.0)))
    assert [d for d in chart_patterns.detect(path(points)) if d.pattern.endswith("_triangle")] == []


# --- straight trends ----------------------------------------------------------------------------------

def _zigzag_trend(sign: int) -> OhlcvFrame:
    """Up 12 over 8 bars, back 5 over 4 bars, thirty times (or the mirror): a clean trend."""
    points, price, bar = [(0, 100.0)], 100.0, 0
    for _ in range(30):
        bar, price = bar + 8, price + sign * 12
        points.append((bar, price))
        bar, price = bar + 4, price - sign * 5
        points.append((bar, price))
    return path(points)


@pytest.mark.parametrize("frame", [path([(0, 100), (400, 300)]), path([(0, 300), (400, 100)]),
                                   _zigzag_trend(+1), _zigzag_trend(-1)],
                         ids=["line-up", "line-down", "zigzag-up", "zigzag-down"])
def test_no_chart_pattern_on_a_straight_trend(frame: OhlcvFrame) -> None:
    assert chart_patterns.detect(frame) == []


def test_the_zigzag_trend_has_pivots_all_the_same() -> None:
    frame = _zigzag_trend(+1)
    assert len(pivots(frame, average_true_range(frame, 14), SwingSettings())) >= 50


def test_settings_scale_what_counts_as_a_swing() -> None:
    frame = path([(0, 100), (20, 130), (30, 126), (45, 140)])  # a 4-point pullback
    loose = ChartSettings(swings=SwingSettings(min_move_atr=1.0))
    strict = ChartSettings(swings=SwingSettings(min_move_atr=3.0))
    atr = average_true_range(frame, 14)
    assert len(pivots(frame, atr, loose.swings)) > len(pivots(frame, atr, strict.swings))


def test_empty_and_tiny_frames_detect_nothing() -> None:
    assert chart_patterns.detect(OhlcvFrame.empty()) == []
    assert chart_patterns.detect(path([(0, 100), (1, 101)])) == []
    assert np.isfinite(average_true_range(path([(0, 100), (1, 101)]), 14)).all()
