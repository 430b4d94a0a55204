"""The warehouse in ClickHouse SQL: tables, retention TTLs, the statements the service runs.

One text for both backends (chDB in-process and a ClickHouse server). Values travel as query
parameters (`{name:Type}`), never spliced into the text; only identifiers and numbers this module
builds itself are formatted in.

Tables (database `aitrading`):
- `bars`: one row per bar of a series (owner, symbol, timeframe). ReplacingMergeTree on
  (owner, symbol, timeframe, time) with `ingested_at` as version, so a re-inserted bar replaces the
  stored one; reads use FINAL so a duplicate never shows. The nil owner holds public series.
- `ticks`: feed ticks keyed by (symbol, time, event id, index in the event), so a redelivered event
  replaces its own rows and nothing else.
- `symbols`: one row per stored series (timeframe '' for a tick series): venue, asset class, owner.
- `retention`: the retention chosen by an admin, applied as TTLs on `bars` and `ticks`.

Inserts also carry an `insert_deduplication_token` where the caller has one (the consumer: its
batch's event ids), so a batch redelivered whole is dropped at insert already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

DATABASE = "aitrading"
NIL_OWNER = "00000000-0000-0000-0000-000000000000"
DECIMAL = "Decimal(38, 12)"  # 26 integer digits for index volumes, 12 fractional for crypto prices
SCALE = 12
INTEGER_DIGITS = 26
# Imports, feed and bundled history: retention TTLs apply to feed data only.
SOURCE_FEED, SOURCE_IMPORT, SOURCE_BUNDLED = "feed", "import", "bundled"
# Deduplication window of inserts per table, counted in inserts (the tokens of the latest N are kept).
DEDUP_WINDOW = 10_000

CREATE_DATABASE = f"CREATE DATABASE IF NOT EXISTS {DATABASE}"

CREATE_BARS = f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.bars
(
    owner UUID,
    symbol String,
    timeframe LowCardinality(String),
    time DateTime64(3, 'UTC'),
    open {DECIMAL},
    high {DECIMAL},
    low {DECIMAL},
    close {DECIMAL},
    volume {DECIMAL},
    venue LowCardinality(String),
    source LowCardinality(String),
    synthetic Bool,
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYear(time)
ORDER BY (owner, symbol, timeframe, time)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""

CREATE_TICKS = f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.ticks
(
    symbol String,
    venue LowCardinality(String),
    time DateTime64(3, 'UTC'),
    event_id UUID,
    idx UInt32,
    price {DECIMAL},
    size {DECIMAL},
    bid Nullable({DECIMAL}),
    ask Nullable({DECIMAL}),
    synthetic Bool,
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(time)
ORDER BY (symbol, time, event_id, idx)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""

CREATE_SYMBOLS = f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.symbols
(
    owner UUID,
    symbol String,
    timeframe LowCardinality(String),
    venue LowCardinality(String),
    asset_class LowCardinality(String),
    synthetic Bool,
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (owner, symbol, timeframe)
"""

CREATE_RETENTION = f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.retention
(
    target LowCardinality(String),
    days Nullable(UInt32),
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY target
"""

SCHEMA: tuple[str, ...] = (CREATE_DATABASE, CREATE_BARS, CREATE_TICKS, CREATE_SYMBOLS, CREATE_RETENTION)


# --- inserts -------------------------------------------------------------------------------------

ColumnKind = Literal["string", "uint32", "time_ms", "uuid", "decimal", "nullable_decimal", "bool"]


@dataclass(frozen=True)
class Column:
    """A column as the service hands it over: `time_ms` epoch ms ints, decimals as plain strings."""

    name: str
    kind: ColumnKind


@dataclass(frozen=True)
class InsertTarget:
    table: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def statement(self, settings: Mapping[str, str | int]) -> str:
        """`INSERT INTO t (cols) SETTINGS ...`; the backend appends its SELECT or FORMAT part."""
        clause = f" SETTINGS {settings_clause(settings)}" if settings else ""
        return f"INSERT INTO {DATABASE}.{self.table} ({', '.join(self.names)}){clause}"


def settings_clause(settings: Mapping[str, str | int]) -> str:
    parts = []
    for key, value in settings.items():
        if not key.replace("_", "").isalnum():
            raise ValueError(f"not a setting name: {key!r}")
        parts.append(f"{key} = {value}" if isinstance(value, int) else f"{key} = {quote(value)}")
    return ", ".join(parts)


def quote(value: str) -> str:
    """A ClickHouse string literal (only for setting values this service builds, never user data)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


BARS = InsertTarget("bars", (
    Column("owner", "uuid"), Column("symbol", "string"), Column("timeframe", "string"),
    Column("time", "time_ms"), Column("open", "decimal"), Column("high", "decimal"), Column("low", "decimal"),
    Column("close", "decimal"), Column("volume", "decimal"), Column("venue", "string"),
    Column("source", "string"), Column("synthetic", "bool"),
))
TICKS = InsertTarget("ticks", (
    Column("symbol", "string"), Column("venue", "string"), Column("time", "time_ms"),
    Column("event_id", "uuid"), Column("idx", "uint32"), Column("price", "decimal"),
    Column("size", "decimal"),
    Column("bid", "nullable_decimal"), Column("ask", "nullable_decimal"), Column("synthetic", "bool"),
))
SYMBOLS = InsertTarget("symbols", (
    Column("owner", "uuid"), Column("symbol", "string"), Column("timeframe", "string"),
    Column("venue", "string"), Column("asset_class", "string"), Column("synthetic", "bool"),
))

# Inserts may span many months or years of history (an import, a catch-up after downtime).
INSERT_SETTINGS: dict[str, str | int] = {"max_partitions_per_insert_block": 10_000}


# --- reads ---------------------------------------------------------------------------------------

def owners_condition(owners: Sequence[str]) -> tuple[str, dict[str, str]]:
    """`owner IN (...)` over parameters o0, o1, ...: the series a caller may see."""
    names = [f"o{i}" for i in range(len(owners))]
    return (f"owner IN ({', '.join(f'{{{n}:UUID}}' for n in names)})",
            dict(zip(names, owners, strict=True)))


def visible_series(owners: Sequence[str], *, symbol: bool) -> tuple[str, dict[str, str]]:
    condition, params = owners_condition(owners)
    where = f"{condition} AND symbol = {{symbol:String}}" if symbol else condition
    return (f"SELECT toString(owner), symbol, timeframe, venue, asset_class, synthetic "
            f"FROM {DATABASE}.symbols FINAL WHERE {where} ORDER BY symbol, owner, timeframe", params)


ALL_SERIES = (f"SELECT toString(owner), symbol, timeframe, venue, asset_class, synthetic "
              f"FROM {DATABASE}.symbols FINAL ORDER BY symbol, owner, timeframe")
KNOWN_SERIES = f"SELECT toString(owner), symbol, timeframe FROM {DATABASE}.symbols FINAL"

_SERIES = ("owner = {owner:UUID} AND symbol = {symbol:String} AND timeframe = {timeframe:String} "
           "AND time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
           "AND time <= fromUnixTimestamp64Milli({end:Int64}, 'UTC')")


def stored_bars(*, newest_first: bool) -> str:
    """Stored bars of one series in [start, end], `limit` of them from the oldest or the newest end."""
    order = "DESC" if newest_first else "ASC"
    return (f"SELECT toUnixTimestamp64Milli(time), open, high, low, close, volume "
            f"FROM {DATABASE}.bars FINAL WHERE {_SERIES} ORDER BY time {order} LIMIT {{limit:UInt32}}")


def resampled_bars(*, newest_first: bool) -> str:
    """Bars of a finer stored series aggregated into buckets of `seconds` (epoch-aligned, UTC)."""
    order = "DESC" if newest_first else "ASC"
    return (
        f"SELECT toUnixTimestamp(bucket) * 1000, argMin(open, time), max(high), min(low), "
        f"argMax(close, time), sum(volume) "
        f"FROM {DATABASE}.bars FINAL WHERE {_SERIES} "
        f"GROUP BY toStartOfInterval(time, INTERVAL {{seconds:UInt32}} SECOND) AS bucket "
        f"ORDER BY bucket {order} LIMIT {{limit:UInt32}}"
    )


# Times as the API writes them: ISO 8601 UTC, milliseconds only when some bar of the answer has them.
# %f prints six digits: the first 23 characters end at the milliseconds.
_ISO_TIME = ("if(max(t % 1000 != 0) OVER (), "
             "concat(substring(formatDateTime(fromUnixTimestamp64Milli(t, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f'), "
             "1, 23), 'Z'), "
             "formatDateTime(fromUnixTimestamp64Milli(t, 'UTC'), '%Y-%m-%dT%H:%i:%SZ'))")


def bars_as_json(rows_query: str) -> str:
    """The bars of `rows_query` (columns t, o, h, l, c, v) oldest first, one API bar object per row.

    Read as JSONEachRow they are the response's bar objects already: times formatted here, decimals
    quoted by `output_format_json_quote_decimals` (trailing zeros dropped, exactly as stored)."""
    return (f"SELECT {_ISO_TIME} AS time, o AS open, h AS high, l AS low, c AS close, v AS volume "
            f"FROM ({rows_query}) ORDER BY t ASC")


def stored_bar_rows(*, newest_first: bool) -> str:
    """`stored_bars` with named columns t, o, h, l, c, v (for `bars_as_json`)."""
    order = "DESC" if newest_first else "ASC"
    return (f"SELECT toUnixTimestamp64Milli(time) AS t, open AS o, high AS h, low AS l, close AS c, "
            f"volume AS v FROM {DATABASE}.bars FINAL WHERE {_SERIES} "
            f"ORDER BY time {order} LIMIT {{limit:UInt32}}")


def resampled_bar_rows(*, newest_first: bool) -> str:
    """`resampled_bars` with named columns t, o, h, l, c, v (for `bars_as_json`)."""
    order = "DESC" if newest_first else "ASC"
    return (
        f"SELECT toUnixTimestamp(bucket) * 1000 AS t, argMin(open, time) AS o, max(high) AS h, "
        f"min(low) AS l, argMax(close, time) AS c, sum(volume) AS v "
        f"FROM {DATABASE}.bars FINAL WHERE {_SERIES} "
        f"GROUP BY toStartOfInterval(time, INTERVAL {{seconds:UInt32}} SECOND) AS bucket "
        f"ORDER BY bucket {order} LIMIT {{limit:UInt32}}"
    )


def bar_times(*, bucketed: bool) -> str:
    """Consecutive distinct bar (or bucket) times with a step longer than `step_ms` between them."""
    moment = ("intDiv(toUnixTimestamp64Milli(time), {step:Int64}) * {step:Int64}" if bucketed
              else "toUnixTimestamp64Milli(time)")
    # DISTINCT rather than FINAL: only the times matter, and duplicates of a time collapse anyway.
    return (
        f"SELECT prev, t FROM ("
        f"  SELECT t, lagInFrame(t, 1, t) OVER (ORDER BY t ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev"
        f"  FROM (SELECT DISTINCT {moment} AS t FROM {DATABASE}.bars WHERE {_SERIES})"
        f") WHERE t - prev > {{step:Int64}} ORDER BY t"
    )


def bar_span(*, bucketed: bool) -> str:
    moment = ("intDiv(toUnixTimestamp64Milli(time), {step:Int64}) * {step:Int64}" if bucketed
              else "toUnixTimestamp64Milli(time)")
    # uniqExact rather than FINAL: the number of distinct bar times is the number of bars.
    return f"SELECT min({moment}), max({moment}), uniqExact({moment}) FROM {DATABASE}.bars WHERE {_SERIES}"


SERIES_COUNT = (f"SELECT count() FROM {DATABASE}.bars FINAL WHERE owner = {{owner:UUID}} "
                f"AND symbol = {{symbol:String}} AND timeframe = {{timeframe:String}}")

def ticks_of_symbol(*, newest_first: bool) -> str:
    order = "DESC" if newest_first else "ASC"
    return (f"SELECT toUnixTimestamp64Milli(time), price, size, bid, ask, toString(event_id), idx "
            f"FROM {DATABASE}.ticks FINAL WHERE symbol = {{symbol:String}} "
            f"AND time >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC') "
            f"AND time <= fromUnixTimestamp64Milli({{end:Int64}}, 'UTC') "
            f"ORDER BY time {order}, event_id {order}, idx {order} LIMIT {{limit:UInt32}}")

RETENTION = f"SELECT target, days FROM {DATABASE}.retention FINAL ORDER BY target"
INSERT_RETENTION = (f"INSERT INTO {DATABASE}.retention (target, days) "
                    f"SELECT {{target:String}}, {{days:Nullable(UInt32)}}")
HAS_TTL = (f"SELECT position(create_table_query, ' TTL ') > 0 FROM system.tables "
           f"WHERE database = '{DATABASE}' AND name = {{table:String}}")
PING = "SELECT 1"


# --- retention as TTL ----------------------------------------------------------------------------

def bars_ttl(days_by_timeframe: Mapping[str, int | None]) -> str:
    """The bars table's TTL: feed bars of a timeframe older than its days are deleted at merges."""
    rules = [
        f"toDateTime(time) + INTERVAL {int(days)} DAY DELETE "
        f"WHERE timeframe = {quote(timeframe)} AND source = {quote(SOURCE_FEED)}"
        for timeframe, days in sorted(days_by_timeframe.items()) if days is not None
    ]
    return _ttl_statement("bars", rules)


def ticks_ttl(days: int | None) -> str:
    rules = [] if days is None else [f"toDateTime(time) + INTERVAL {int(days)} DAY DELETE"]
    return _ttl_statement("ticks", rules)


def _ttl_statement(table: str, rules: list[str]) -> str:
    if not rules:
        return f"ALTER TABLE {DATABASE}.{table} REMOVE TTL"
    return f"ALTER TABLE {DATABASE}.{table} MODIFY TTL {', '.join(rules)}"
