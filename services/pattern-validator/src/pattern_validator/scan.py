"""One pass of every detector over a bar frame: candlesticks, chart patterns and the caller's rules.

The frame may start before the range asked for: those earlier bars only warm up indicators and give
chart patterns their history; detections are reported from bar `since` on, newest last.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from aitrading.market import indicators
from aitrading.market.bars import OhlcvFrame
from aitrading.market.indicators import FeatureSpec
from pattern_validator import candlesticks, chart_patterns, rules
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.detections import Detection, Kind, ordered
from pattern_validator.user_rules import CompiledRule

ALL_KINDS: frozenset[Kind] = frozenset(Kind)


def history_needed(kinds: Collection[Kind], compiled: Sequence[CompiledRule], chart: ChartSettings) -> int:
    """Bars to load before the first bar reported so every detector sees what it would live."""
    needs = [0]
    if Kind.CANDLESTICK in kinds:
        needs.append(candlesticks.TAIL_BARS)
    if Kind.CHART in kinds:
        needs.append(chart.history_bars)
    if Kind.RULE in kinds:
        needs.extend(rule.history for rule in compiled)
    return max(needs)


def rule_detections(frame: OhlcvFrame, compiled: Sequence[CompiledRule], *,
                    since: int = 0) -> list[Detection]:
    """`rule:<name>` on every bar from `since` where the rule holds."""
    if not compiled or len(frame) == 0:
        return []
    specs: dict[str, FeatureSpec] = {}
    for rule in compiled:
        for spec in rule.specs:
            specs.setdefault(spec.name, spec)
    features = indicators.compute(frame, list(specs.values()))
    out: list[Detection] = []
    for rule in compiled:
        holds = rules.evaluate(rule.expression, features, len(frame))
        details = {"rule_id": str(rule.id), "expression": rule.expression.text}
        for i in np.flatnonzero(holds[since:]) + since:
            out.append(Detection(int(frame.time_ms[i]), f"rule:{rule.name}", rule.direction, 1.0, Kind.RULE,
                                 details))
    return out


def scan(frame: OhlcvFrame, *, kinds: Collection[Kind] = ALL_KINDS, compiled: Sequence[CompiledRule] = (),
         chart: ChartSettings | None = None, since: int = 0) -> list[Detection]:
    """Every detection of the chosen kinds from bar `since` on, newest last."""
    found: list[Detection] = []
    if Kind.CANDLESTICK in kinds:
        found.extend(candlesticks.detect(frame, since=since))
    if Kind.CHART in kinds:
        found.extend(chart_patterns.detect(frame, chart, since=since))
    if Kind.RULE in kinds:
        found.extend(rule_detections(frame, compiled, since=since))
    return ordered(found)


def detect_last(frame: OhlcvFrame, chart: ChartSettings | None = None) -> list[Detection]:
    """Candlestick and chart detections completed by the last bar of `frame` (the live path)."""
    if len(frame) == 0:
        return []
    last = len(frame) - 1
    return ordered([*candlesticks.detect_last(frame), *chart_patterns.detect(frame, chart, since=last)])
