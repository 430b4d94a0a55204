"""Pure parts, without I/O: feed messages, series resolution, gaps, import parsing, retention values."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import orjson
import pytest
from database_service import sql
from database_service.bar_import import parse_csv, parse_decimal, parse_time
from database_service.events import BarColumns, Malformed, TickColumns
from database_service.gaps import missing
from database_service.ohlcv import iso_times
from database_service.retention import Retention
from database_service.series import best_stored, derivable, resolve, symbol_views
from database_service.store import Series
from database_service.warehouse import tsv_payload
from hypothesis import given
from hypothesis import strategies as st

from aitrading.errors import Invalid
from aitrading.market.timeframes import Timeframe

NIL = sql.NIL_OWNER
MINE = str(uuid4())


def envelope(kind: str, data: dict[str, object]) -> bytes:
    return orjson.dumps({"id": str(uuid4()), "type": kind, "source": "t", "time": "2024-01-01T00:00:00Z",
                         "subject": "md.x", "data": data})


# --- feed messages -------------------------------------------------------------------------------

def test_tick_rows_become_columns_with_their_event_id_and_index() -> None:
    batch = TickColumns()
    raw = envelope("md.ticks", {"symbol": "BTC/USDT", "venue": "binance", "synthetic": False,
                                "ticks": [[1, "100.5", "0.1", "100.4", None], [2, 101, "0", None, "101.2"]]})
    assert batch.add(raw) == 2
    columns = batch.columns()
    assert columns["price"] == ["100.5", "101"] and columns["size"] == ["0.1", "0"]
    assert columns["bid"] == ["100.4", None] and columns["ask"] == [None, "101.2"]
    assert columns["idx"] == [0, 1] and len(set(columns["event_id"])) == 1
    [series] = batch.series.values()
    assert series == Series(NIL, "BTC/USDT", "", "binance", "crypto", False)


@pytest.mark.parametrize("data", [
    {"symbol": "X", "ticks": [[1, "-1", "1", None, None]]},
    {"symbol": "X", "ticks": [[1, "0", "1", None, None]]},
    {"symbol": "X", "ticks": [[1, "1", "-0.5", None, None]]},
    {"symbol": "X", "ticks": [[1, "abc", "1", None, None]]},
    {"symbol": "X", "ticks": [["soon", "1", "1", None, None]]},
    {"symbol": "X", "ticks": [[1, "1e30", "1", None, None]]},
    {"symbol": "X", "ticks": [[1, "1"]]},
    {"symbol": "", "ticks": []},
    {"ticks": []},
    {"symbol": "X", "ticks": "none"},
])
def test_a_tick_message_with_any_bad_row_is_malformed_as_a_whole(data: dict[str, object]) -> None:
    batch = TickColumns()
    with pytest.raises(Malformed):
        batch.add(envelope("md.ticks", data))
    assert len(batch) == 0


def test_non_events_are_malformed() -> None:
    for raw in (b"not json", b"[]", envelope("md.bars", {"symbol": "X", "ticks": []}),
                orjson.dumps({"id": "nope", "type": "md.ticks", "data": {}})):
        with pytest.raises(Malformed):
            TickColumns().add(raw)


def test_feed_prices_keep_twelve_decimals_and_plain_notation() -> None:
    batch = TickColumns()
    batch.add(envelope("md.ticks", {"symbol": "X", "ticks": [[1, "1E-7", "0.1234567890125", None, None],
                                                             [2, 2.5, 3, None, None]]}))
    assert batch.price == ["0.0000001", "2.5"]
    assert batch.size == ["0.123456789012", "3"]  # rounded half-even at 12 places


def test_bars_must_be_aligned_and_consistent() -> None:
    good = [[60_000, "10", "11", "9", "10.5", "7"]]
    batch = BarColumns()
    assert batch.add(envelope("md.bars", {"symbol": "S", "venue": "v", "timeframe": "1m", "bars": good})) == 1
    assert batch.source == [sql.SOURCE_FEED] and batch.owner == [NIL]
    for bars in ([[61_000, "10", "11", "9", "10.5", "7"]], [[60_000, "10", "9.5", "9", "10.5", "7"]],
                 [[60_000, "10", "11", "10.2", "10.5", "7"]]):
        with pytest.raises(Malformed):
            BarColumns().add(envelope("md.bars", {"symbol": "S", "timeframe": "1m", "bars": bars}))
    with pytest.raises(Malformed):
        BarColumns().add(envelope("md.bars", {"symbol": "S", "timeframe": "2m", "bars": good}))


# --- series --------------------------------------------------------------------------------------

def series(owner: str, timeframe: str, venue: str = "v") -> Series:
    return Series(owner, "S", timeframe, venue, "index", False)


def test_the_coarsest_dividing_stored_timeframe_answers() -> None:
    assert best_stored({Timeframe.M1, Timeframe.M5}, Timeframe.H1) == Timeframe.M5
    assert best_stored({Timeframe.M5}, Timeframe.M5) == Timeframe.M5
    assert best_stored({Timeframe.D1}, Timeframe.H1) is None
    assert derivable({Timeframe.H1}) == [Timeframe.H1, Timeframe.H4, Timeframe.D1]


def test_own_series_win_and_public_ones_fill_in() -> None:
    stored = [series(NIL, "1m"), series(MINE, "1d", venue="import")]
    owners = [MINE, NIL]
    day = resolve(stored, owners, Timeframe.D1)
    assert day is not None and day.series.owner == MINE and not day.resampled
    hour = resolve(stored, owners, Timeframe.H1)
    assert hour is not None and hour.series.owner == NIL and hour.stored == Timeframe.M1 and hour.resampled
    assert resolve(stored, [NIL], Timeframe.D1) is not None
    assert resolve([series(MINE, "1d")], [NIL], Timeframe.D1) is None
    [view] = symbol_views(stored, owners)
    assert view.own and view.venue == "import" and view.stored_timeframes == ["1m", "1d"]
    [public_view] = symbol_views(stored, [NIL])
    assert not public_view.own and public_view.venue == "v"


# --- gaps ----------------------------------------------------------------------------------------

def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_weekends_are_not_missing_days_but_weekdays_are() -> None:
    friday, monday, tuesday = ms(2024, 3, 8), ms(2024, 3, 11), ms(2024, 3, 12)
    day = Timeframe.D1.ms
    assert missing(friday + day, monday - day, Timeframe.D1, skip_weekends=True) is None
    gap = missing(friday + day, tuesday - day, Timeframe.D1, skip_weekends=True)
    assert gap is not None and gap.missing_bars == 1
    assert gap.first == gap.last == datetime(2024, 3, 11, tzinfo=UTC)
    crypto = missing(friday + day, monday - day, Timeframe.D1, skip_weekends=False)
    assert crypto is not None and crypto.missing_bars == 2


def test_intraday_gaps_count_bars() -> None:
    gap = missing(ms(2024, 3, 8, 10), ms(2024, 3, 8, 10, 45), Timeframe.M15, skip_weekends=False)
    assert gap is not None and gap.missing_bars == 4


# --- import parsing ------------------------------------------------------------------------------

def test_times_parse_from_iso_or_epoch_ms() -> None:
    assert parse_time("2024-03-04T10:00:00Z") == ms(2024, 3, 4, 10)
    assert parse_time("2024-03-04 10:00:00") == ms(2024, 3, 4, 10)
    assert parse_time("2024-03-04T12:00:00+02:00") == ms(2024, 3, 4, 10)
    assert parse_time("2024-03-04") == ms(2024, 3, 4)
    assert parse_time(ms(2024, 3, 4)) == parse_time(str(ms(2024, 3, 4)))
    for bad in ("tomorrow", "2024-13-01", True, None, 1.5, "3000-01-01"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_decimals_are_exact_or_refused() -> None:
    assert parse_decimal("open", "1.10") == Decimal("1.10")
    assert parse_decimal("open", 0.1) == Decimal("0.1")
    assert parse_decimal("open", "1.000000000000000") == Decimal(1)  # zeros beyond 12 places lose nothing
    for bad in ("1.0000000000001", "NaN", "inf", "x", None, True, "1" * 27):
        with pytest.raises(ValueError):
            parse_decimal("open", bad)


def test_csv_rows_are_named_by_line_with_the_header_as_line_one() -> None:
    text = "time,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,10\n\n2024-01-02,1,2,1.2,1.5,10\n"
    with pytest.raises(Invalid) as refused:
        parse_csv(text, {"symbol": "S", "timeframe": "1d"}, max_rows=10)
    assert refused.value.errors == [{"field": "row 4", "reason": "low is above open, close or high"}]
    upload = parse_csv("Volume,Time,Open,High,Low,Close\n10,2024-01-01,1,2,0.5,1.5\n",
                       {"symbol": "S", "timeframe": "1d"}, max_rows=10)
    assert upload.bars[0].volume == Decimal(10)
    with pytest.raises(Invalid):
        parse_csv("time,open,high,low,close,volume\n" + "2024-01-01,1,2,0.5,1.5,10\n" * 3,
                  {"symbol": "S", "timeframe": "1d"}, max_rows=2)


# --- retention, SQL text, encodings --------------------------------------------------------------

def test_retention_values_are_validated_and_complete() -> None:
    retention = Retention.of(30, {"1m": 365})
    assert retention.bars_days == {"1m": 365, "5m": None, "15m": None, "1h": None, "4h": None, "1d": None}
    assert retention.merged(None, {"5m": 10}, ticks_given=False).ticks_days == 30
    assert retention.merged(None, {}, ticks_given=True).ticks_days is None
    with pytest.raises(Invalid):
        Retention.of(0, {})
    with pytest.raises(Invalid):
        Retention.of(None, {"1w": 3})


def test_ttl_statements_cover_feed_rows_only() -> None:
    statement = sql.bars_ttl({"1m": 365, "5m": None})
    assert statement == ("ALTER TABLE aitrading.bars MODIFY TTL toDateTime(time) + INTERVAL 365 DAY DELETE "
                         "WHERE timeframe = '1m' AND source = 'feed'")
    assert sql.bars_ttl({"1m": None}) == "ALTER TABLE aitrading.bars REMOVE TTL"
    assert sql.ticks_ttl(7).endswith("INTERVAL 7 DAY DELETE")


def test_setting_values_are_quoted_and_names_checked() -> None:
    assert sql.settings_clause({"a_b": 1, "token": "x'y\\"}) == "a_b = 1, token = 'x\\'y\\\\'"
    with pytest.raises(ValueError):
        sql.settings_clause({"a; DROP": 1})


def test_tsv_payload_escapes_and_formats_each_kind() -> None:
    target = sql.InsertTarget("t", (sql.Column("s", "string"), sql.Column("t", "time_ms"),
                                    sql.Column("d", "nullable_decimal"), sql.Column("b", "bool")))
    payload = tsv_payload(target, {"s": ["a\tb"], "t": [1_700_000_000_123], "d": [None], "b": [True]})
    assert payload == b"a\\tb\t2023-11-14 22:13:20.123\t\\N\t1\n"


def test_iso_times_show_milliseconds_only_when_present() -> None:
    assert iso_times([0, 86_400_000]) == ["1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"]
    assert iso_times([250]) == ["1970-01-01T00:00:00.250Z"]


@given(st.decimals(min_value=Decimal("0.000000000001"), max_value=Decimal("1e20"), places=12))
def test_a_feed_price_is_stored_as_the_same_number(price: Decimal) -> None:
    batch = TickColumns()
    batch.add(envelope("md.ticks", {"symbol": "X", "ticks": [[1, str(price), "1", None, None]]}))
    assert Decimal(batch.price[0]) == price
