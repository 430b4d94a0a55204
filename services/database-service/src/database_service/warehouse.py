"""The warehouse connection: one small interface, two backends running the same SQL (`sql.py`).

- `ChdbWarehouse` (default): ClickHouse in-process through chDB, its data under
  `<data_dir>/database-service/warehouse`. chDB is blocking and not thread-safe, so every call runs
  in a worker thread under one process-wide lock. chDB holds one data folder per process: a second
  warehouse on another folder is refused while the first is open.
- `ServerWarehouse`: a ClickHouse server through clickhouse-connect (`CLICKHOUSE_URL`).

Rows are handed over as columns (`sql.Column` kinds: epoch-ms ints for times, plain decimal strings
for prices). chDB reads them straight from a DataFrame with its `Python()` table function and casts
in SQL (the fastest path measured); the server receives them as TabSeparated text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson
import structlog

from aitrading.errors import Unavailable
from database_service import sql

_log = structlog.get_logger("database_service.warehouse")
T = TypeVar("T")

Params = Mapping[str, str | int | None]
Columns = Mapping[str, Sequence[Any]]

# Decimals as JSON strings (exact), 64-bit integers (epoch ms) as JSON numbers.
READ_SETTINGS: dict[str, str | int] = {
    "output_format_json_quote_decimals": 1,
    "output_format_json_quote_64bit_integers": 0,
}


class WarehouseError(Unavailable):
    """The warehouse refused or failed a statement (503 to a caller: nothing it sent was at fault)."""


class Warehouse(Protocol):
    name: str

    @property
    def cache_scope(self) -> str | None:
        """Names the data when every write to it goes through this process (chDB's folder is held by
        one process), so reads may be cached and dropped on writes (`caches`); None when not."""
        ...


    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> None: ...
    async def command(self, statement: str, params: Params | None = None) -> None: ...
    async def rows(self, query: str, params: Params | None = None) -> list[list[Any]]: ...
    async def raw(self, query: str, params: Params | None = None, *, fmt: str) -> bytes: ...
    async def insert(self, target: sql.InsertTarget, columns: Columns, *,
                     token: str | None = None) -> int: ...


def insert_settings(token: str | None) -> dict[str, str | int]:
    settings = dict(sql.INSERT_SETTINGS)
    if token is not None:
        settings["insert_deduplication_token"] = token
    return settings


def _row_count(columns: Columns) -> int:
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


# --- chDB in-process -----------------------------------------------------------------------------

# One embedded engine per process, shared by every ChdbWarehouse on the same folder.
_CHDB_LOCK = threading.Lock()
_chdb_open: dict[str, int] = {}  # folder → open warehouses on it


def _text_param(value: str | int | None) -> str:
    """A query parameter in ClickHouse's escaped text form, as chDB expects it."""
    if value is None:
        return "\\N"
    return str(value)


_CHDB_CAST: dict[sql.ColumnKind, str] = {
    "string": "{name}",
    "uint32": "toUInt32({name})",
    "time_ms": "fromUnixTimestamp64Milli({name}, 'UTC')",
    "uuid": "toUUID({name})",
    "decimal": f"CAST({{name}}, '{sql.DECIMAL}')",
    "nullable_decimal": f"CAST({{name}}, 'Nullable({sql.DECIMAL})')",
    "bool": "CAST({name}, 'Bool')",
}


class ChdbWarehouse:
    name = "warehouse"

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._session: Any = None

    @property
    def backend(self) -> str:
        return "chdb"

    @property
    def cache_scope(self) -> str | None:
        # Every warehouse object on this folder shares the one engine, so they share caches too.
        return f"chdb:{self.path}"

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        for statement in sql.SCHEMA:
            await self.command(statement)
        _log.info("warehouse started", backend="chdb", path=str(self.path))

    def _open(self) -> None:
        # Imported here, in a worker thread: loading the engine and pandas (for inserts) takes seconds.
        import pandas  # noqa: F401
        from chdb import session

        key = str(self.path)
        with _CHDB_LOCK:
            others = [folder for folder, count in _chdb_open.items() if count and folder != key]
            if others:
                raise WarehouseError(f"chDB keeps one warehouse folder per process; {others[0]} is open, "
                                     f"so {key} cannot be opened beside it")
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self._session = session.Session(key)  # type: ignore[no-untyped-call]
            except Exception as exc:  # chDB raises RuntimeError for a folder it cannot open
                raise WarehouseError(f"the chDB warehouse at {key} cannot be opened: {exc}") from exc
            _chdb_open[key] = _chdb_open.get(key, 0) + 1
            for name, value in READ_SETTINGS.items():
                self._session.query(f"SET {name} = {value}")

    async def stop(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with _CHDB_LOCK:
            if self._session is None:
                return
            key = str(self.path)
            _chdb_open[key] -= 1
            # The engine is process-wide: closing the last session on a folder releases it.
            self._session.close()
            self._session = None
            if not _chdb_open[key]:
                del _chdb_open[key]

    async def check(self) -> None:
        await self.rows(sql.PING)

    async def command(self, statement: str, params: Params | None = None) -> None:
        await self._run(lambda session: session.query(statement, "TabSeparated", params=self._params(params)))

    async def rows(self, query: str, params: Params | None = None) -> list[list[Any]]:
        text_params = self._params(params)
        raw = await self._run(lambda session: session.query(query, "JSONCompact", params=text_params))
        data: list[list[Any]] = orjson.loads(raw.bytes())["data"]
        return data

    async def raw(self, query: str, params: Params | None = None, *, fmt: str) -> bytes:
        """The result as ClickHouse renders it in `fmt` (e.g. JSONEachRow), for responses passed through."""
        text_params = self._params(params)
        result = await self._run(lambda session: session.query(query, fmt, params=text_params))
        data: bytes = result.bytes()
        return data

    async def insert(self, target: sql.InsertTarget, columns: Columns, *, token: str | None = None) -> int:
        count = _row_count(columns)
        if count == 0:
            return 0
        select = ", ".join(_CHDB_CAST[c.kind].format(name=c.name) for c in target.columns)
        statement = f"{target.statement(insert_settings(token))} SELECT {select} FROM Python(stage_frame)"

        def run(session: Any) -> None:
            import pandas as pd

            # chDB's Python() table function finds the DataFrame by this local variable's name.
            stage_frame = pd.DataFrame({c.name: _chdb_column(columns[c.name], c.kind)  # noqa: F841
                                        for c in target.columns})
            session.query(statement, "TabSeparated")

        await self._run(run)
        return count

    @staticmethod
    def _params(params: Params | None) -> dict[str, str] | None:
        return {k: _text_param(v) for k, v in params.items()} if params else None

    async def _run(self, call: Callable[[Any], T]) -> T:
        def locked() -> T:
            with _CHDB_LOCK:
                if self._session is None:
                    raise WarehouseError("the warehouse is not open")
                try:
                    return call(self._session)
                except WarehouseError:
                    raise
                except Exception as exc:  # chDB raises plain RuntimeError/ChdbError for every failure
                    raise WarehouseError(f"warehouse statement failed: {str(exc)[:500]}") from exc

        return await asyncio.to_thread(locked)


def _chdb_column(values: Sequence[Any], kind: sql.ColumnKind) -> Any:
    if kind == "time_ms":
        return np.asarray(values, dtype=np.int64)
    if kind == "uint32":
        return np.asarray(values, dtype=np.int64)
    if kind == "bool":
        return np.asarray(values, dtype=np.bool_)
    return values if isinstance(values, list) else list(values)


# --- ClickHouse server ---------------------------------------------------------------------------

def _tsv_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _tsv_column(values: Sequence[Any], kind: sql.ColumnKind) -> list[str]:
    if kind == "time_ms":
        stamps = np.asarray(values, dtype=np.int64).astype("datetime64[ms]")
        return [s.replace("T", " ") for s in np.datetime_as_string(stamps, unit="ms").tolist()]
    if kind == "bool":
        return ["1" if v else "0" for v in values]
    if kind == "nullable_decimal":
        return ["\\N" if v is None else str(v) for v in values]
    if kind == "string":
        return [_tsv_escape(str(v)) for v in values]
    return [str(v) for v in values]


def tsv_payload(target: sql.InsertTarget, columns: Columns) -> bytes:
    """The rows as TabSeparated text in the target's column order."""
    cells = [_tsv_column(columns[c.name], c.kind) for c in target.columns]
    return ("\n".join("\t".join(row) for row in zip(*cells, strict=True)) + "\n").encode()


class ServerWarehouse:
    """A ClickHouse server over HTTP (clickhouse-connect; its sync client runs in worker threads)."""

    name = "warehouse"

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0, query_timeout_s: float = 300.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.query_timeout_s = query_timeout_s
        self._client: Any = None
        # clickhouse-connect's client is not safe for concurrent use; one statement at a time per app.
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return "clickhouse"

    @property
    def cache_scope(self) -> str | None:
        # Replicas share the server: another one may write at any time, so nothing read is cached.
        return None

    async def start(self) -> None:
        await asyncio.to_thread(self._connect)
        for statement in sql.SCHEMA:
            await self.command(statement)
        _log.info("warehouse started", backend="clickhouse")

    def _connect(self) -> None:
        import clickhouse_connect

        try:
            self._client = clickhouse_connect.get_client(
                dsn=self.url, connect_timeout=self.connect_timeout_s,
                send_receive_timeout=self.query_timeout_s, autogenerate_session_id=False)
        except Exception as exc:  # connection refused, bad credentials, unknown database
            raise WarehouseError(f"ClickHouse is not reachable: {str(exc)[:300]}") from exc

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def check(self) -> None:
        await self.rows(sql.PING)

    async def command(self, statement: str, params: Params | None = None) -> None:
        await self._run(lambda client: client.command(statement, parameters=dict(params or {})))

    async def rows(self, query: str, params: Params | None = None) -> list[list[Any]]:
        raw = await self._run(lambda client: client.raw_query(
            query, parameters=dict(params or {}), settings=READ_SETTINGS, fmt="JSONCompact"))
        data: list[list[Any]] = orjson.loads(raw)["data"]
        return data

    async def raw(self, query: str, params: Params | None = None, *, fmt: str) -> bytes:
        data: bytes = await self._run(lambda client: client.raw_query(
            query, parameters=dict(params or {}), settings=READ_SETTINGS, fmt=fmt))
        return data

    async def insert(self, target: sql.InsertTarget, columns: Columns, *, token: str | None = None) -> int:
        count = _row_count(columns)
        if count == 0:
            return 0
        settings = insert_settings(token)
        # Encoded in the worker thread too: text for 100,000 rows takes a noticeable while.
        await self._run(lambda client: client.raw_insert(
            f"{sql.DATABASE}.{target.table}", target.names, tsv_payload(target, columns), settings=settings,
            fmt="TabSeparated"))
        return count

    async def _run(self, call: Callable[[Any], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._client is None:
                    raise WarehouseError("the warehouse is not connected")
                try:
                    return call(self._client)
                except Exception as exc:  # clickhouse-connect raises its own hierarchy and OSError
                    raise WarehouseError(f"warehouse statement failed: {str(exc)[:500]}") from exc

        return await asyncio.to_thread(locked)


def make_warehouse(clickhouse_url: str | None, data_dir: Path, *, connect_timeout_s: float = 10.0,
                   query_timeout_s: float = 300.0) -> ChdbWarehouse | ServerWarehouse:
    if clickhouse_url:
        return ServerWarehouse(clickhouse_url, connect_timeout_s=connect_timeout_s,
                               query_timeout_s=query_timeout_s)
    return ChdbWarehouse(data_dir / "warehouse")
