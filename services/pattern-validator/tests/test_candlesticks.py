"""Candlestick detection: every TA-Lib pattern, TA-Lib's own answer, direction and confidence."""

from __future__ import annotations

import re

import numpy as np
import pytest
import talib
from pattern_validator import candlesticks
from pattern_validator.candlesticks import CATALOG, Meaning
from pattern_validator.detections import Direction, Kind

from aitrading.market.bars import OhlcvFrame

from .conftest import DAY_MS, START_MS, random_walk


def test_catalog_covers_every_talib_pattern_function_once_with_a_snake_case_name() -> None:
    functions = [p.function for p in CATALOG]
    assert sorted(functions) == sorted(talib.get_function_groups()["Pattern Recognition"])
    assert len(functions) == 61
    names = [p.name for p in CATALOG]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z][a-z_]*[a-z]", name) for name in names)
    assert {p.function: p.name for p in CATALOG}["CDLENGULFING"] == "engulfing"


def test_detections_are_exactly_talib_nonzero_outputs_with_their_sign_as_direction() -> None:
    frame = random_walk(3000, seed=7)
    found = candlesticks.detect(frame)
    by_name = {p.name: p for p in CATALOG}
    got = {(d.time_ms, d.pattern, d.direction) for d in found}
    want = set()
    for pattern in CATALOG:
        output = getattr(talib, pattern.function)(frame.open, frame.high, frame.low, frame.close)
        for i in np.flatnonzero(output):
            if pattern.meaning is Meaning.INDECISION:
                direction = Direction.NEUTRAL
            else:
                direction = Direction.BULLISH if output[i] > 0 else Direction.BEARISH
            want.add((int(frame.time_ms[i]), pattern.name, direction))
    assert got == want
    assert len(found) == len(want)  # one detection per pattern and bar
    assert all(d.kind is Kind.CANDLESTICK and 0 <= d.confidence <= 1 for d in found)
    # A real variety, not a couple of patterns that always fire.
    assert len({d.pattern for d in found}) >= 25
    assert {by_name[d.pattern].meaning for d in found} == set(Meaning)


def test_the_last_bar_from_the_short_tail_equals_the_full_history_run() -> None:
    frame = random_walk(1500, seed=11)
    full = candlesticks.detect(frame)
    for end in range(30, len(frame), 13):
        last = int(frame.time_ms[end - 1])
        want = sorted((d.pattern, d.direction, d.confidence) for d in full if d.time_ms == last)
        tail = candlesticks.detect_last(frame.slice(0, end))
        got = sorted((d.pattern, d.direction, d.confidence) for d in tail)
        assert got == want, end


def _engulfing_after(trend: float) -> OhlcvFrame:
    """Twelve bars moving by `trend` per bar, a small bearish candle, then a bullish engulfing one."""
    closes = [100 + trend * i for i in range(12)]
    opens = [c - trend * 0.5 for c in closes]
    last = closes[-1]
    opens += [last + 0.3, last - 0.8]  # small black body, then a large white one engulfing it
    closes += [last - 0.3, last + 1.2]
    o, c = np.array(opens), np.array(closes)
    h, low = np.maximum(o, c) + 0.1, np.minimum(o, c) - 0.1
    n = len(c)
    return OhlcvFrame(START_MS + np.arange(n, dtype=np.int64) * DAY_MS, o, h, low, c, np.full(n, 1e3))


def test_a_bullish_reversal_after_a_fall_scores_higher_than_after_a_rise() -> None:
    after_fall = [d for d in candlesticks.detect_last(_engulfing_after(-1.0)) if d.pattern == "engulfing"]
    after_rise = [d for d in candlesticks.detect_last(_engulfing_after(+1.0)) if d.pattern == "engulfing"]
    assert len(after_fall) == 1 and len(after_rise) == 1
    assert after_fall[0].direction is Direction.BULLISH
    assert after_fall[0].details is not None and after_fall[0].details["prior_trend"] < -0.9
    assert after_fall[0].confidence == pytest.approx(0.8, abs=0.02)
    assert after_rise[0].confidence == pytest.approx(0.2, abs=0.02)


def test_confirmed_strength_and_continuation_and_indecision_confidence_rules() -> None:
    by_name = {p.name: p for p in CATALOG}
    confidence = candlesticks._confidence
    # TA-Lib's 200 (confirmed) beats its 100 for the same pattern and trend.
    assert confidence(by_name["hikkake"], 200, 0.0) == 0.7
    assert confidence(by_name["hikkake"], 100, 0.0) == 0.5
    # A continuation agrees with a trend its own way.
    assert confidence(by_name["mat_hold"], 100, 1.0) == pytest.approx(0.8)
    assert confidence(by_name["mat_hold"], 100, -1.0) == pytest.approx(0.2)
    # A doji says more after a long move than in a flat market, whichever way the move went.
    assert confidence(by_name["doji"], 100, 0.9) == confidence(by_name["doji"], 100, -0.9) > \
        confidence(by_name["doji"], 100, 0.0)


def test_prior_trend_is_about_one_on_a_steady_rise_and_small_on_a_random_walk() -> None:
    steady = OhlcvFrame(np.arange(40, dtype=np.int64), np.arange(40.0), np.arange(40.0) + 1,
                        np.arange(40.0) - 0.5, np.arange(40.0) + 0.5, np.ones(40))
    # Ten bars each rising by two thirds of its range: about two random-walk deviations.
    assert candlesticks.prior_trend(steady)[20] > 0.95
    walk = candlesticks.prior_trend(random_walk(5000, seed=3))
    assert abs(float(np.mean(walk[10:]))) < 0.1
    assert float(np.mean(np.abs(walk[10:]) > 0.95)) < 0.05
