"""Importing bars: JSON or a CSV upload, every row checked before anything is stored.

A user's import is their own series (it wins over the public one for them, nobody else sees it); an
admin's import is public. Any bad row refuses the whole import with a 422 naming the rows
(`bars[3]` in JSON, `row 5` in CSV where the header is row 1). Rows equal to the bars already stored
are counted as skipped and not written again; the rest go in one insert.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from aitrading.auth import Principal
from aitrading.errors import DomainError, Invalid
from aitrading.market.bars import Bar, datetime_to_ms
from aitrading.market.timeframes import Timeframe
from database_service import store
from database_service.ohlcv import EARLIEST_MS, LATEST_MS
from database_service.series import import_owner, parse_symbol
from database_service.sql import INTEGER_DIGITS, NIL_OWNER, SCALE, SOURCE_IMPORT
from database_service.store import Series
from database_service.warehouse import Warehouse

CSV_COLUMNS = ("time", "open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close", "volume")
MAX_LISTED_ERRORS = 100
_QUANTUM = Decimal(1).scaleb(-SCALE)
_PLAIN = re.compile(r"\d{1,26}(?:\.\d{1,12})?")
DEFAULT_VENUE, DEFAULT_ASSET_CLASS = "import", "unknown"

_DECIMAL = {"type": "string", "description": "decimal (string or number)"}
_JSON_BODY = {"type": "object", "required": ["symbol", "timeframe", "bars"], "properties": {
    "symbol": {"type": "string"}, "timeframe": {"type": "string", "enum": [t.value for t in Timeframe]},
    "venue": {"type": "string"}, "asset_class": {"type": "string"},
    "bars": {"type": "array", "items": {"type": "object", "required": list(CSV_COLUMNS), "properties": {
        "time": {"type": "string", "format": "date-time"}, **{k: _DECIMAL for k in PRICE_FIELDS}}}}}}
_CSV_BODY = {"type": "object", "required": ["file", "symbol", "timeframe"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "CSV: time,open,high,low,close,volume"},
    "symbol": {"type": "string"}, "timeframe": {"type": "string"}, "venue": {"type": "string"},
    "asset_class": {"type": "string"}}}
OPENAPI_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _JSON_BODY}, "multipart/form-data": {"schema": _CSV_BODY}}}}


class TooLarge(DomainError):
    status, title, type_slug = 413, "Content too large", "too-large"


@dataclass(frozen=True)
class Upload:
    symbol: str
    timeframe: Timeframe
    bars: list[Bar]
    venue: str | None
    asset_class: str | None


@dataclass(frozen=True)
class ImportResult:
    symbol: str
    timeframe: Timeframe
    imported: int
    skipped: int
    public: bool


# --- reading the request -------------------------------------------------------------------------

async def _read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"the upload is {int(declared):,} bytes; the limit is {max_bytes:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"the upload exceeds the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _replayed(request: Request, body: bytes) -> Request:
    """The request again, its body served from memory (the size was checked while reading it)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


async def read_request(request: Request, *, max_bytes: int, max_rows: int) -> Upload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_limited(request, max_bytes)
    if content_type == "application/json":
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Invalid(f"the body is not JSON: {exc}",
                          errors=[{"field": "body", "reason": "not JSON"}]) from None
        # Checking hundreds of thousands of rows takes seconds: off the event loop.
        return await asyncio.to_thread(parse_json, document, max_rows=max_rows)
    if content_type == "multipart/form-data":
        form = await _replayed(request, body).form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Invalid("a CSV file is needed in the form field 'file'",
                          errors=[{"field": "file", "reason": "required: the CSV file"}])
        raw = await upload.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Invalid("the CSV file is not UTF-8 text",
                          errors=[{"field": "file", "reason": "must be UTF-8 text"}]) from None
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return await asyncio.to_thread(parse_csv, text, fields, max_rows=max_rows)
    raise _unsupported(content_type)


def _unsupported(content_type: str) -> DomainError:
    error = DomainError(f"unsupported content type {content_type or '(none)'!r}: send application/json, "
                        "or multipart/form-data with a CSV file")
    error.status, error.title, error.type_slug = 415, "Unsupported media type", "unsupported-media-type"
    return error


# --- parsing and validating ----------------------------------------------------------------------

def _header_fields(symbol: Any, timeframe: Any, venue: Any,
                   asset_class: Any) -> tuple[str, Timeframe, str | None, str | None]:
    errors = []
    if not isinstance(symbol, str):
        errors.append({"field": "symbol", "reason": "required: a string"})
    if not isinstance(timeframe, str):
        accepted = ", ".join(t.value for t in Timeframe)
        errors.append({"field": "timeframe", "reason": f"required: one of {accepted}"})
    for name, value in (("venue", venue), ("asset_class", asset_class)):
        if value is not None and (not isinstance(value, str) or not 1 <= len(value.strip()) <= 32):
            errors.append({"field": name, "reason": "a name of 1-32 characters"})
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors)
    assert isinstance(symbol, str) and isinstance(timeframe, str)
    return (parse_symbol(symbol), Timeframe.parse(timeframe),
            venue.strip() if isinstance(venue, str) else None,
            asset_class.strip().lower() if isinstance(asset_class, str) else None)


def parse_time(value: Any) -> int:
    """Epoch ms from ISO 8601 (naive: UTC) or from epoch milliseconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("time: not a time")
    if isinstance(value, int):
        moment = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        moment = int(value.strip())
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(f"time: {value!r} is not ISO 8601 or epoch milliseconds") from None
        moment = datetime_to_ms(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    else:
        raise ValueError("time: must be ISO 8601 text or epoch milliseconds")
    if not EARLIEST_MS <= moment <= LATEST_MS:
        raise ValueError("time: must lie between 1900-01-01 and 2299-12-31")
    return moment


def parse_decimal(name: str, value: Any) -> Decimal:
    """A price or volume as the warehouse stores it exactly (up to 26 integer and 12 decimal digits)."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return Decimal(value)  # the common case, already within the stored precision
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name}: required, a decimal number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name}: {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{name}: must be a finite number")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE and number != number.quantize(_QUANTUM):
        raise ValueError(f"{name}: more than {SCALE} decimal places")
    if number != 0 and number.adjusted() >= INTEGER_DIGITS:
        raise ValueError(f"{name}: more than {INTEGER_DIGITS} integer digits")
    return number


def parse_bar(values: Mapping[str, Any], timeframe: Timeframe) -> Bar:
    """One bar from its fields; ValueError naming what is wrong."""
    problems = []
    time_ms = None
    try:
        time_ms = parse_time(values.get("time"))
        if timeframe.bucket_ms(time_ms) != time_ms:
            problems.append(f"time: not the start of a {timeframe.value} bar")
    except ValueError as exc:
        problems.append(str(exc))
    prices: dict[str, Decimal] = {}
    for name in PRICE_FIELDS:
        try:
            prices[name] = parse_decimal(name, values.get(name))
        except ValueError as exc:
            problems.append(str(exc))
    if not problems:
        assert time_ms is not None
        bar = Bar(time_ms, **prices)
        problems.extend(bar.problems())
        if not problems:
            return bar
    raise ValueError("; ".join(problems))


def _validated(rows: Sequence[tuple[str, Mapping[str, Any]]], timeframe: Timeframe) -> list[Bar]:
    """Every row checked; Invalid listing the bad ones (and duplicate times) when any is bad."""
    bars: list[Bar] = []
    errors: list[dict[str, str]] = []
    bad = 0
    seen: dict[int, str] = {}
    for label, values in rows:
        try:
            bar = parse_bar(values, timeframe)
        except ValueError as exc:
            bad += 1
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append({"field": label, "reason": str(exc)})
            continue
        if bar.time_ms in seen:
            bad += 1
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append({"field": label, "reason": f"time: duplicate of {seen[bar.time_ms]}"})
            continue
        seen[bar.time_ms] = label
        bars.append(bar)
    if bad:
        listed = "" if bad <= len(errors) else f"; the first {len(errors)} are listed"
        raise Invalid(f"{bad} of {len(rows)} rows are invalid and nothing was imported{listed}",
                      errors=errors)
    if not bars:
        raise Invalid("no bars to import", errors=[{"field": "bars", "reason": "at least one bar is needed"}])
    bars.sort(key=lambda b: b.time_ms)
    return bars


def _too_many(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise Invalid(f"{count:,} rows exceed the limit of {max_rows:,} per import; split the data",
                      errors=[{"field": "bars", "reason": f"at most {max_rows:,} rows per import"}])


def parse_json(document: Any, *, max_rows: int) -> Upload:
    if not isinstance(document, dict):
        raise Invalid("the body must be an object {symbol, timeframe, bars}",
                      errors=[{"field": "body", "reason": "must be an object"}])
    symbol, timeframe, venue, asset_class = _header_fields(document.get("symbol"), document.get("timeframe"),
                                                           document.get("venue"), document.get("asset_class"))
    raw = document.get("bars")
    if not isinstance(raw, list):
        raise Invalid("bars must be a list", errors=[{"field": "bars", "reason": "required: a list of bars"}])
    _too_many(len(raw), max_rows)
    rows = [(f"bars[{i}]", item if isinstance(item, dict) else {}) for i, item in enumerate(raw)]
    return Upload(symbol, timeframe, _validated(rows, timeframe), venue, asset_class)


def parse_csv(text: str, fields: Mapping[str, str], *, max_rows: int) -> Upload:
    symbol, timeframe, venue, asset_class = _header_fields(fields.get("symbol"), fields.get("timeframe"),
                                                           fields.get("venue"), fields.get("asset_class"))
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    names = [h.strip().lower() for h in header or []]
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise Invalid(f"the CSV header must name {','.join(CSV_COLUMNS)}; missing: {', '.join(missing)}",
                      errors=[{"field": "row 1", "reason": f"header lacks {', '.join(missing)}"}])
    index = {c: names.index(c) for c in CSV_COLUMNS}
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for record in reader:
        if not record or all(not cell.strip() for cell in record):
            continue
        _too_many(len(rows) + 1, max_rows)
        values = {c: record[i] if i < len(record) else None for c, i in index.items()}
        rows.append((f"row {reader.line_num}", values))
    return Upload(symbol, timeframe, _validated(rows, timeframe), venue, asset_class)


# --- storing -------------------------------------------------------------------------------------

def _same(bar: Bar, stored: store.BarRow) -> bool:
    return (bar.open, bar.high, bar.low, bar.close, bar.volume) == tuple(Decimal(v) for v in stored[1:])


async def store_upload(wh: Warehouse, principal: Principal, upload: Upload) -> ImportResult:
    owner = import_owner(principal)
    symbol, timeframe, bars = upload.symbol, upload.timeframe, upload.bars
    existing = await store.read_bars(wh, owner, symbol, timeframe.value, start_ms=bars[0].time_ms,
                                     end_ms=bars[-1].time_ms, limit=len(bars) + 1, newest_first=False)
    stored = {row[0]: row for row in existing}
    changed = [b for b in bars if b.time_ms not in stored or not _same(b, stored[b.time_ms])]
    known = [s for s in await store.visible_series(wh, [owner], symbol) if s.timeframe == timeframe.value]
    venue = upload.venue or (known[0].venue if known else DEFAULT_VENUE)
    if changed:
        n = len(changed)
        await store.insert_bars(wh, {
            "owner": [owner] * n, "symbol": [symbol] * n, "timeframe": [timeframe.value] * n,
            "time": [b.time_ms for b in changed],
            **{name: [format(getattr(b, name), "f") for b in changed] for name in PRICE_FIELDS},
            "venue": [venue] * n, "source": [SOURCE_IMPORT] * n, "synthetic": [False] * n,
        })
    if not known or upload.venue or upload.asset_class:
        asset_class = upload.asset_class or (known[0].asset_class if known else DEFAULT_ASSET_CLASS)
        await store.register_series(wh, [Series(owner, symbol, timeframe.value, venue, asset_class, False)])
    return ImportResult(symbol, timeframe, imported=len(changed), skipped=len(bars) - len(changed),
                        public=owner == NIL_OWNER)

