"""Every statement the service runs on the warehouse, as named functions (the SQL text is in `sql.py`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from database_service import caches, sql
from database_service.warehouse import Columns, Warehouse

TICK_SERIES = ""  # the timeframe of a symbol's tick series in the symbols table


@dataclass(frozen=True)
class Series:
    """One stored series: the bars of (owner, symbol, timeframe), or its ticks (timeframe '')."""

    owner: str
    symbol: str
    timeframe: str
    venue: str
    asset_class: str
    synthetic: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.owner, self.symbol, self.timeframe)


BarRow = tuple[int, str, str, str, str, str]  # time_ms, open, high, low, close, volume (decimal strings)


def _series(row: Sequence[Any]) -> Series:
    return Series(str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), bool(row[5]))


def _bar(row: Sequence[Any]) -> BarRow:
    return (int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), str(row[5]))


async def _all_series(wh: Warehouse, cache: caches.WarehouseCache) -> dict[str, list[Series]]:
    """Every stored series by symbol, in the order of `sql.visible_series` (symbol, owner, timeframe)."""
    if cache.series is not None:
        return cache.series
    generation = cache.series_generation
    by_symbol: dict[str, list[Series]] = {}
    for row in await wh.rows(sql.ALL_SERIES):
        series = _series(row)
        by_symbol.setdefault(series.symbol, []).append(series)
    if cache.series_generation == generation:
        cache.series = by_symbol
    return by_symbol


async def visible_series(wh: Warehouse, owners: Sequence[str], symbol: str | None = None) -> list[Series]:
    cache = caches.of(wh)
    if cache is not None:
        seen = set(owners)
        by_symbol = await _all_series(wh, cache)
        candidates = by_symbol.get(symbol, []) if symbol is not None else [
            s for entries in by_symbol.values() for s in entries]
        return [s for s in candidates if s.owner in seen]
    query, params = sql.visible_series(owners, symbol=symbol is not None)
    if symbol is not None:
        params = {**params, "symbol": symbol}
    return [_series(row) for row in await wh.rows(query, params)]


async def known_series(wh: Warehouse) -> set[tuple[str, str, str]]:
    return {(str(r[0]), str(r[1]), str(r[2])) for r in await wh.rows(sql.KNOWN_SERIES)}


async def register_series(wh: Warehouse, series: Iterable[Series]) -> None:
    items = list(series)
    columns: Columns = {
        "owner": [s.owner for s in items], "symbol": [s.symbol for s in items],
        "timeframe": [s.timeframe for s in items], "venue": [s.venue for s in items],
        "asset_class": [s.asset_class for s in items], "synthetic": [s.synthetic for s in items],
    }
    cache = caches.of(wh)
    try:
        await wh.insert(sql.SYMBOLS, columns)
    finally:
        if cache is not None:
            cache.drop_series()


def _range(owner: str, symbol: str, timeframe: str, start_ms: int,
           end_ms: int) -> dict[str, str | int | None]:
    return {"owner": owner, "symbol": symbol, "timeframe": timeframe, "start": start_ms, "end": end_ms}


async def read_bars(wh: Warehouse, owner: str, symbol: str, timeframe: str, *, start_ms: int, end_ms: int,
                    limit: int, newest_first: bool) -> list[BarRow]:
    params = {**_range(owner, symbol, timeframe, start_ms, end_ms), "limit": limit}
    return [_bar(row) for row in await wh.rows(sql.stored_bars(newest_first=newest_first), params)]


async def read_resampled(wh: Warehouse, owner: str, symbol: str, stored_timeframe: str, *, seconds: int,
                         start_ms: int, end_ms: int, limit: int, newest_first: bool) -> list[BarRow]:
    params = {**_range(owner, symbol, stored_timeframe, start_ms, end_ms), "limit": limit, "seconds": seconds}
    return [_bar(row) for row in await wh.rows(sql.resampled_bars(newest_first=newest_first), params)]


async def bars_json(wh: Warehouse, owner: str, symbol: str, timeframe: str, *, start_ms: int, end_ms: int,
                    limit: int, newest_first: bool, resample_seconds: int | None = None) -> bytes:
    """Bars as the API returns them, oldest first: a JSON array rendered by the warehouse.

    `resample_seconds` aggregates the stored bars into buckets of that many seconds."""
    cache = caches.of(wh)
    key = (owner, timeframe, start_ms, end_ms, limit, newest_first, resample_seconds)
    if cache is not None:
        cached = cache.get_bars(symbol, key)
        if cached is not None:
            return cached
        generation = cache.bars_version(symbol)
    params: dict[str, str | int | None] = {**_range(owner, symbol, timeframe, start_ms, end_ms),
                                           "limit": limit}
    if resample_seconds is None:
        rows_query = sql.stored_bar_rows(newest_first=newest_first)
    else:
        rows_query = sql.resampled_bar_rows(newest_first=newest_first)
        params["seconds"] = resample_seconds
    lines = await wh.raw(sql.bars_as_json(rows_query), params, fmt="JSONEachRow")
    # One object per line; JSON strings never hold a raw newline, so the newlines are the separators.
    body = b"[" + lines.rstrip(b"\n").replace(b"\n", b",") + b"]"
    if cache is not None:
        cache.put_bars(symbol, key, generation, body)
    return body


async def bar_steps(wh: Warehouse, owner: str, symbol: str, stored_timeframe: str, *, step_ms: int,
                    bucketed: bool, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """(previous, next) bar times wherever consecutive bars are more than `step_ms` apart."""
    params = {**_range(owner, symbol, stored_timeframe, start_ms, end_ms), "step": step_ms}
    return [(int(r[0]), int(r[1])) for r in await wh.rows(sql.bar_times(bucketed=bucketed), params)]


async def bar_span(wh: Warehouse, owner: str, symbol: str, stored_timeframe: str, *, step_ms: int,
                   bucketed: bool, start_ms: int, end_ms: int) -> tuple[int, int, int] | None:
    """(first, last, count) of the bar times in range, or None without bars."""
    params = {**_range(owner, symbol, stored_timeframe, start_ms, end_ms), "step": step_ms}
    [row] = await wh.rows(sql.bar_span(bucketed=bucketed), params)
    if int(row[2]) == 0:
        return None
    return int(row[0]), int(row[1]), int(row[2])


async def series_count(wh: Warehouse, owner: str, symbol: str, timeframe: str) -> int:
    [row] = await wh.rows(sql.SERIES_COUNT, {"owner": owner, "symbol": symbol, "timeframe": timeframe})
    return int(row[0])


async def insert_bars(wh: Warehouse, columns: Columns, *, token: str | None = None) -> int:
    cache = caches.of(wh)
    try:
        return await wh.insert(sql.BARS, columns, token=token)
    finally:
        # After the insert: a read that ran beside it may have seen the bars before it.
        if cache is not None:
            cache.drop_bars(set(columns["symbol"]))


async def insert_ticks(wh: Warehouse, columns: Columns, *, token: str | None = None) -> int:
    return await wh.insert(sql.TICKS, columns, token=token)


TickRow = tuple[int, str, str, str | None, str | None, str, int]


async def read_ticks(wh: Warehouse, symbol: str, *, start_ms: int, end_ms: int, limit: int,
                     newest_first: bool) -> list[TickRow]:
    rows = await wh.rows(sql.ticks_of_symbol(newest_first=newest_first),
                         {"symbol": symbol, "start": start_ms, "end": end_ms, "limit": limit})
    return [(int(r[0]), str(r[1]), str(r[2]), None if r[3] is None else str(r[3]),
             None if r[4] is None else str(r[4]), str(r[5]), int(r[6])) for r in rows]


async def stored_retention(wh: Warehouse) -> dict[str, int | None]:
    return {str(r[0]): None if r[1] is None else int(r[1]) for r in await wh.rows(sql.RETENTION)}


async def save_retention(wh: Warehouse, days_by_target: Mapping[str, int | None]) -> None:
    for target, days in days_by_target.items():
        await wh.command(sql.INSERT_RETENTION, {"target": target, "days": days})


async def has_ttl(wh: Warehouse, table: str) -> bool:
    [row] = await wh.rows(sql.HAS_TTL, {"table": table})
    return bool(row[0])


async def apply_ttl(wh: Warehouse, table: str, statement: str, *, materialize: bool) -> None:
    """Set a table's TTL; without `materialize` existing parts keep theirs until merged (cheap).

    Materializing rewrites the TTL of every stored part: it runs as a background mutation, not awaited.
    """
    if statement.endswith("REMOVE TTL") and not await has_ttl(wh, table):
        return  # ClickHouse refuses to remove a TTL that is not there
    cache = caches.of(wh)
    try:
        await wh.command(f"{statement} SETTINGS materialize_ttl_after_modify = {int(materialize)}, "
                         "mutations_sync = 0, alter_sync = 0")
    finally:
        if cache is not None and table == "bars":
            cache.drop_all_bars()
