"""The market kernel: timeframe buckets, the wire form of ticks and bars, bar frames."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitrading.errors import Invalid
from aitrading.market.bars import Bar, OhlcvFrame, Tick, datetime_to_ms, ms_to_datetime
from aitrading.market.timeframes import TIMEFRAMES, Timeframe
from aitrading.market.wire import bar_subject, bars_event, parse_bars, parse_ticks, tick_row, ticks_event


@given(st.integers(min_value=0, max_value=4_102_444_800_000), st.sampled_from(TIMEFRAMES))
def test_a_moment_falls_in_the_bucket_that_starts_at_or_before_it(time_ms: int, tf: Timeframe) -> None:
    start = tf.bucket_ms(time_ms)
    assert start <= time_ms < start + tf.ms
    assert start % tf.ms == 0


def test_unknown_timeframe_is_refused_naming_the_field() -> None:
    with pytest.raises(Invalid) as refused:
        Timeframe.parse("7m")
    reason = "must be one of 1m, 5m, 15m, 1h, 4h, 1d"
    assert refused.value.errors == [{"field": "timeframe", "reason": reason}]


def test_ticks_and_bars_survive_the_wire() -> None:
    tick = Tick("BTC/USDT", 1_700_000_000_123, Decimal("42000.5"), Decimal("0.01"), Decimal("42000"), None)
    event = ticks_event("BTC/USDT", "binance", [tick_row(tick)], source="test")
    assert event.subject == "md.tick.BTC-USDT"
    assert parse_ticks(event).ticks == [tick]
    bar = Bar(1_700_000_040_000, Decimal("1.5"), Decimal("2"), Decimal("1"), Decimal("1.75"), Decimal("10"))
    batch = parse_bars(bars_event("SPX", "replay", Timeframe.M1, [bar], source="test"))
    assert (batch.symbol, batch.timeframe, batch.bars) == ("SPX", Timeframe.M1, [bar])
    assert bar_subject("1d", "EUR/USD") == "md.bar.1d.EUR-USD"


def test_impossible_bar_names_its_problems() -> None:
    bar = Bar(0, Decimal(10), Decimal(9), Decimal(8), Decimal(11), Decimal(-1))
    assert bar.problems() == ["high is below open, close or low", "volume is negative"]


def test_frame_append_replaces_a_bar_with_the_same_time() -> None:
    bars = [Bar(i * 60_000, Decimal(1), Decimal(2), Decimal(1), Decimal(i + 1), Decimal(1)) for i in range(3)]
    frame = OhlcvFrame.from_bars(bars)
    again = frame.append([Bar(120_000, Decimal(1), Decimal(2), Decimal(1), Decimal(9), Decimal(1))])
    assert again.close.tolist() == [1.0, 2.0, 9.0]
    assert len(frame.append([Bar(180_000, *(Decimal(1),) * 5)])) == 4


def test_json_bars_read_into_a_frame() -> None:
    moment = ms_to_datetime(86_400_000)
    frame = OhlcvFrame.from_json_bars([{"time": moment.isoformat(), "open": "1", "high": "2", "low": "0.5",
                                        "close": "1.5", "volume": "100"}])
    assert frame.time_ms.tolist() == [datetime_to_ms(moment)] and frame.close.tolist() == [1.5]
