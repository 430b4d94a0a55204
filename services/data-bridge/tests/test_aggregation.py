"""Bars from ticks: OHLC, volume and alignment match a direct computation; no bar is emitted twice."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal

from data_bridge.aggregation import BarAggregator, ClosedBars, aggregate
from data_bridge.normalization import NormalTick, normalize_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrading.market.bars import Bar
from aitrading.market.timeframes import TIMEFRAMES, Timeframe

DAY0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a day boundary
MINUTE = 60_000


def rows_to_ticks(rows: list[list[object]]) -> list[NormalTick]:
    rejected: Counter[str] = Counter()
    ticks = normalize_rows(rows, rejected)
    assert not rejected
    return ticks


gaps = st.one_of(st.integers(0, 2_000), st.integers(0, 3 * MINUTE), st.integers(0, 5 * 3_600_000))
cents = st.integers(1, 9_999_999)  # prices with two decimals
milli_lots = st.integers(0, 1_000_000)  # sizes with three decimals


@st.composite
def tick_rows(draw: st.DrawFn) -> list[list[object]]:
    count = draw(st.integers(1, 150))
    time_ms = DAY0 + draw(st.integers(0, 86_400_000))
    rows: list[list[object]] = []
    for _ in range(count):
        time_ms += draw(gaps)
        price, size = draw(cents), draw(milli_lots)
        rows.append([time_ms, f"{price // 100}.{price % 100:02d}", f"{size // 1000}.{size % 1000:03d}"])
    return rows


def reference(rows: list[list[object]], timeframe: Timeframe) -> dict[int, Bar]:
    """Bars straight from the definition: first/max/min/last price and summed size per bucket."""
    groups: dict[int, list[list[object]]] = defaultdict(list)
    for row in rows:
        groups[timeframe.bucket_ms(int(row[0]))].append(row)  # type: ignore[call-overload]
    bars = {}
    for bucket, members in groups.items():
        ps = [Decimal(str(r[1])) for r in members]
        bars[bucket] = Bar(bucket, ps[0], max(ps), min(ps), ps[-1], sum((Decimal(str(r[2])) for r in members),
                                                                          Decimal(0)))
    return bars


@settings(max_examples=80, deadline=None)
@given(tick_rows())
def test_bars_are_first_max_min_last_and_summed_volume_of_their_ticks(rows: list[list[object]]) -> None:
    closed = aggregate(rows_to_ticks(rows))
    by_timeframe: dict[Timeframe, list[Bar]] = defaultdict(list)
    for timeframe, bar in closed:
        by_timeframe[timeframe].append(bar)
    for timeframe in TIMEFRAMES:
        expected = reference(rows, timeframe)
        last_bucket = max(expected)  # still open: no later tick has closed it
        emitted = by_timeframe[timeframe]
        times = [bar.time_ms for bar in emitted]
        assert times == sorted(set(times)), "a bar emitted twice or out of order"
        assert all(t % timeframe.ms == 0 for t in times), "a bar not aligned to its bucket"
        assert set(times) == set(expected) - {last_bucket}
        for bar in emitted:
            assert bar == expected[bar.time_ms]
            assert not bar.problems()


@settings(max_examples=60, deadline=None)
@given(tick_rows(), st.lists(st.integers(0, 10 * MINUTE), min_size=1, max_size=20),
       st.integers(0, 5_000))
def test_wall_clock_closes_never_emit_a_bar_twice(rows: list[list[object]], checks: list[int],
                                                  grace_ms: int) -> None:
    """Live feeds: timer closes interleaved with ticks; late ticks stay out, nothing is emitted twice."""
    aggregator = BarAggregator()
    closed: ClosedBars = []
    ticks = rows_to_ticks(rows)
    step = max(1, len(ticks) // len(checks))
    for i in range(0, len(ticks), step):
        aggregator.add(ticks[i:i + step], closed)
        now = ticks[min(i + step, len(ticks)) - 1][0] + checks[(i // step) % len(checks)]
        aggregator.close_due(now, grace_ms, closed)
    aggregator.close_due(ticks[-1][0] + 2 * 86_400_000, grace_ms, closed)  # everything ends eventually
    included = ticks if aggregator.late == 0 else None
    for timeframe in TIMEFRAMES:
        times = [bar.time_ms for tf, bar in closed if tf is timeframe]
        assert times == sorted(set(times)), f"{timeframe}: a bar emitted twice or out of order"
        assert all(t % timeframe.ms == 0 for t in times)
    volume = {tf: sum((bar.volume for t, bar in closed if t is tf), Decimal(0)) for tf in TIMEFRAMES}
    assert len(set(volume.values())) == 1, "every timeframe carries the same volume"
    if included is not None:
        total = sum((Decimal(str(r[2])) for r in rows), Decimal(0))
        assert volume[Timeframe.M1] == total


def test_a_quiet_symbols_bar_closes_on_wall_clock_after_the_grace() -> None:
    aggregator = BarAggregator()
    closed: ClosedBars = []
    aggregator.add(rows_to_ticks([[DAY0 + 1_000, "10.5", "1"], [DAY0 + 2_000, "10.7", "2"]]), closed)
    aggregator.close_due(DAY0 + MINUTE + 1_999, 2_000, closed)
    assert closed == []
    aggregator.close_due(DAY0 + MINUTE + 2_000, 2_000, closed)
    assert closed == [(Timeframe.M1, Bar(DAY0, Decimal("10.5"), Decimal("10.7"), Decimal("10.5"),
                                          Decimal("10.7"), Decimal(3)))]
    # A tick for the closed minute is late: left out, counted; the next minute opens normally.
    aggregator.add(rows_to_ticks([[DAY0 + 59_000, "11", "1"], [DAY0 + MINUTE + 5_000, "12", "1"]]), closed)
    assert aggregator.late == 1
    aggregator.close_due(DAY0 + 5 * MINUTE + 2_000, 2_000, closed)
    assert [(tf, bar.time_ms, bar.close, bar.volume) for tf, bar in closed[1:]] == [
        (Timeframe.M1, DAY0 + MINUTE, Decimal(12), Decimal(1)),
        (Timeframe.M5, DAY0, Decimal(12), Decimal(4)),
    ]


def test_exact_strings_survive_and_ties_beyond_double_precision_are_settled_exactly() -> None:
    closed = aggregate(rows_to_ticks([
        [DAY0, "0.10000000000000000001", "0"],
        [DAY0 + 1, "0.10000000000000000003", "0"],  # the same double as the first
        [DAY0 + 2, "0.10000000000000000002", "0"],
        [DAY0 + MINUTE, "0.2", "0"],
    ]))
    bar = closed[0][1]
    assert bar.high == Decimal("0.10000000000000000003")
    assert bar.low == Decimal("0.10000000000000000001")
    assert bar.close == Decimal("0.10000000000000000002")
