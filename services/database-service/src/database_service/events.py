"""What database-service consumes: `md.ticks` and `md.bars` batches from the MARKET stream.

The wire form is aitrading.market.wire's; for speed the envelope is read with orjson and the rows are
checked here directly rather than through pydantic and the Tick/Bar objects. A message that does not
parse, or has a row that cannot be stored (a non-positive price, high below low, an unaligned bar
time), is malformed as a whole: the consumer terminates it and counts it. Bars from feeds are public.
Prices keep up to 12 decimal places (rounded half-even beyond that, as the warehouse stores them).

database-service publishes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import orjson

from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import BARS, TICKS
from database_service.sql import INTEGER_DIGITS, NIL_OWNER, SCALE, SOURCE_FEED
from database_service.store import TICK_SERIES, Series

TICK_SUBJECTS = "md.tick.>"
BAR_SUBJECTS = "md.bar.>"

# Epoch ms the warehouse's DateTime64 holds (1900-01-01 .. 2299-12-31).
EARLIEST_MS, LATEST_MS = -2_208_988_800_000, 10_413_791_999_000
_PLAIN = re.compile(r"\d{1,26}(?:\.\d{1,12})?")
_QUANTUM = Decimal(1).scaleb(-SCALE)
_SYMBOL_MAX = 64


class Malformed(ValueError):
    """A message that can never be stored (terminated, not retried)."""


def _positive(value: Any, what: str, *, zero: bool = False) -> str:
    """A price or size as a plain decimal string the warehouse stores exactly."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        # The common case: already plain, short enough; only the sign of zero needs a look.
        if not zero and not value.strip("0.").strip():
            raise Malformed(f"{what} must be positive")
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Malformed(f"{what} is not a decimal")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise Malformed(f"{what} is not a decimal: {value!r}") from None
    if not number.is_finite() or number < 0 or (number == 0 and not zero):
        raise Malformed(f"{what} must be {'non-negative' if zero else 'positive'}: {value!r}")
    number = number.quantize(_QUANTUM) if number.as_tuple().exponent < -SCALE else number  # type: ignore[operator]
    if number != 0 and number.adjusted() >= INTEGER_DIGITS:
        raise Malformed(f"{what} has more than {INTEGER_DIGITS} integer digits")
    if number == 0 and not zero:
        raise Malformed(f"{what} rounds to zero at {SCALE} decimal places")
    return format(number, "f")


def _time(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not EARLIEST_MS <= value <= LATEST_MS:
        raise Malformed(f"time is not epoch milliseconds in 1900..2299: {value!r}")
    return value


def _envelope(raw: bytes, expected_type: str) -> tuple[str, dict[str, Any]]:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(event, dict) or event.get("type") != expected_type:
        raise Malformed(f"not an {expected_type} event")
    try:
        event_id = str(UUID(str(event.get("id"))))
    except ValueError:
        raise Malformed("the event id is not a UUID") from None
    data = event.get("data")
    if not isinstance(data, dict):
        raise Malformed("the event has no data object")
    return event_id, data


def _label(data: dict[str, Any], key: str, *, required: bool) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > _SYMBOL_MAX:
        raise Malformed(f"{key} is missing or not a name")
    return value.strip()


def asset_class_of(data: dict[str, Any], symbol: str) -> str:
    """The producer's asset class when it says; a BASE/QUOTE pair is crypto (CCXT's form); else unknown."""
    declared = data.get("asset_class")
    if isinstance(declared, str) and declared.strip():
        return declared.strip().lower()[:32]
    return "crypto" if "/" in symbol else "unknown"


@dataclass
class TickColumns:
    """Tick rows of one consumer round, as the warehouse's insert columns."""

    symbol: list[str] = field(default_factory=list)
    venue: list[str] = field(default_factory=list)
    time: list[int] = field(default_factory=list)
    event_id: list[str] = field(default_factory=list)
    idx: list[int] = field(default_factory=list)
    price: list[str] = field(default_factory=list)
    size: list[str] = field(default_factory=list)
    bid: list[str | None] = field(default_factory=list)
    ask: list[str | None] = field(default_factory=list)
    synthetic: list[bool] = field(default_factory=list)
    series: dict[tuple[str, str, str], Series] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    def columns(self) -> dict[str, list[Any]]:
        return {name: getattr(self, name) for name in
                ("symbol", "venue", "time", "event_id", "idx", "price", "size", "bid", "ask", "synthetic")}

    def add(self, raw: bytes) -> int:
        """Check one `md.ticks` message and append its rows (all or none); the number of rows."""
        event_id, data = _envelope(raw, TICKS)
        symbol = _label(data, "symbol", required=True)
        venue = _label(data, "venue", required=False)
        synthetic = bool(data.get("synthetic", False))
        rows = data.get("ticks")
        if not isinstance(rows, list):
            raise Malformed("ticks is not a list")
        columns = _plain_tick_columns(rows)
        if columns is None:
            columns = _checked_tick_columns(rows)
        times, prices, sizes, bids, asks = columns
        n = len(times)
        self.symbol.extend([symbol] * n)
        self.venue.extend([venue] * n)
        self.event_id.extend([event_id] * n)
        self.synthetic.extend([synthetic] * n)
        self.idx.extend(range(n))
        self.time.extend(times)
        self.price.extend(prices)
        self.size.extend(sizes)
        self.bid.extend(bids)
        self.ask.extend(asks)
        if n:
            key = (NIL_OWNER, symbol, TICK_SERIES)
            self.series.setdefault(key, Series(*key, venue, asset_class_of(data, symbol), synthetic))
        return n


TickColumnsOf = tuple[list[int], list[str], list[str], list[str | None], list[str | None]]
_PLAIN_LINES = re.compile(r"(?:\d{1,26}(?:\.\d{1,12})?\n)*\d{1,26}(?:\.\d{1,12})?")
_ZERO_LINE = re.compile(r"^0+(?:\.0+)?$", re.MULTILINE)


def _all_plain(values: list[Any], *, zero: bool) -> bool:
    """Every value a plain decimal string within the stored precision (and non-zero unless allowed).

    One regular expression over the joined column instead of one call per value: the feed's hot path.
    """
    if not values:
        return True
    try:
        joined = "\n".join(values)
    except TypeError:  # a number or null among them
        return False
    return _PLAIN_LINES.fullmatch(joined) is not None and (zero or _ZERO_LINE.search(joined) is None)


def _plain_tick_columns(rows: list[Any]) -> TickColumnsOf | None:
    """The columns of well-formed rows of five, all values plain; None sends the rows to the checked path."""
    if not rows:
        return [], [], [], [], []
    # map/set run in C: a type check per row without a Python call per row.
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {5}:
        return None
    times, prices, sizes, bids, asks = (list(column) for column in zip(*rows, strict=True))
    if set(map(type, times)) != {int} or min(times) < EARLIEST_MS or max(times) > LATEST_MS:
        return None
    if not (_all_plain(prices, zero=False) and _all_plain(sizes, zero=True)
            and _all_plain([b for b in bids if b is not None], zero=False)
            and _all_plain([a for a in asks if a is not None], zero=False)):
        return None
    return times, prices, sizes, bids, asks


def _checked_tick_columns(rows: list[Any]) -> TickColumnsOf:
    """Row by row: normalizes numbers and other decimal spellings, and names the first bad row."""
    times: list[int] = []
    prices: list[str] = []
    sizes: list[str] = []
    bids: list[str | None] = []
    asks: list[str | None] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 3:
            raise Malformed(f"ticks[{i}] is not [time_ms, price, size, bid, ask]")
        bid = row[3] if len(row) > 3 else None
        ask = row[4] if len(row) > 4 else None
        try:
            times.append(_time(row[0]))
            prices.append(_positive(row[1], "price"))
            sizes.append(_positive(row[2], "size", zero=True))
            bids.append(None if bid is None else _positive(bid, "bid"))
            asks.append(None if ask is None else _positive(ask, "ask"))
        except Malformed as exc:
            raise Malformed(f"ticks[{i}]: {exc}") from None
    return times, prices, sizes, bids, asks


@dataclass
class BarColumns:
    """Bar rows of one consumer round (public series), as the warehouse's insert columns."""

    owner: list[str] = field(default_factory=list)
    symbol: list[str] = field(default_factory=list)
    timeframe: list[str] = field(default_factory=list)
    time: list[int] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    high: list[str] = field(default_factory=list)
    low: list[str] = field(default_factory=list)
    close: list[str] = field(default_factory=list)
    volume: list[str] = field(default_factory=list)
    venue: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    synthetic: list[bool] = field(default_factory=list)
    series: dict[tuple[str, str, str], Series] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    def columns(self) -> dict[str, list[Any]]:
        names = ("owner", "symbol", "timeframe", "time", "open", "high", "low", "close", "volume", "venue",
                 "source", "synthetic")
        return {name: getattr(self, name) for name in names}

    def add(self, raw: bytes) -> int:
        """Check one `md.bars` message and append its bars (all or none); the number of bars."""
        _, data = _envelope(raw, BARS)
        symbol = _label(data, "symbol", required=True)
        venue = _label(data, "venue", required=False)
        synthetic = bool(data.get("synthetic", False))
        try:
            timeframe = Timeframe(str(data.get("timeframe")))
        except ValueError:
            raise Malformed(f"unknown timeframe {data.get('timeframe')!r}") from None
        rows = data.get("bars")
        if not isinstance(rows, list):
            raise Malformed("bars is not a list")
        parsed = []
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) < 6:
                raise Malformed(f"bars[{i}] is not [time_ms, open, high, low, close, volume]")
            try:
                time_ms = _time(row[0])
                if timeframe.bucket_ms(time_ms) != time_ms:
                    raise Malformed(f"time is not the start of a {timeframe.value} bar")
                o, h, lo, c = (_positive(row[k], name) for k, name in ((1, "open"), (2, "high"), (3, "low"),
                                                                       (4, "close")))
                v = _positive(row[5], "volume", zero=True)
                do, dh, dl, dc = Decimal(o), Decimal(h), Decimal(lo), Decimal(c)
                if dh < max(do, dc, dl) or dl > min(do, dc, dh):
                    raise Malformed("high/low do not bound open and close")
            except Malformed as exc:
                raise Malformed(f"bars[{i}]: {exc}") from None
            parsed.append((time_ms, o, h, lo, c, v))
        n = len(parsed)
        self.owner.extend([NIL_OWNER] * n)
        self.symbol.extend([symbol] * n)
        self.timeframe.extend([timeframe.value] * n)
        self.venue.extend([venue] * n)
        self.source.extend([SOURCE_FEED] * n)
        self.synthetic.extend([synthetic] * n)
        for time_ms, o, h, lo, c, v in parsed:
            self.time.append(time_ms)
            self.open.append(o)
            self.high.append(h)
            self.low.append(lo)
            self.close.append(c)
            self.volume.append(v)
        if n:
            key = (NIL_OWNER, symbol, timeframe.value)
            self.series.setdefault(key, Series(*key, venue, asset_class_of(data, symbol), synthetic))
        return n
