"""Raw market inputs → normalized ticks: canonical symbol, integer epoch-ms time, decimal values.

The WebSocket ingest path runs every tick through here at 100,000+ ticks/s, so this works on plain
rows with type dispatch and no per-tick models or Decimal arithmetic. A raw row is `[time_ms, price,
size, bid, ask]` (strings or numbers; size, bid and ask optional); a quote-only update (no price)
prints at the mid.

A normalized tick is a tuple `(time_ms, price, size, bid, ask, row)`: doubles for the checks and
comparisons, and `row`, the wire row `[time_ms, price, size, bid, ask]` whose values are the exact
decimal strings (the source's own string when it sent one, so no digit is lost; bid and ask may be
None). Absent quotes read as bid 0 and ask +inf, so `bid > ask` (crossed) needs no None checks.
Decimal objects are made only where a bar or quote needs them, from the exact strings.

A row that cannot be a tick is counted under its reason and dropped, never raised: one bad tick must
not cost the rest of its message.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aitrading.errors import Invalid
from aitrading.market.bars import Tick

NormalTick = tuple[int, float, float, float, float, list[Any]]

# Epoch-ms bounds: a time before 1971 is almost surely seconds sent as milliseconds.
MIN_TIME_MS = 31_536_000_000
MAX_TIME_MS = 32_503_680_000_000  # year 3000
MAX_SYMBOL_LENGTH = 64
INF = math.inf
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9/._\-+=:@^#!&$]*")

# Reasons a raw tick is dropped (also `check` labels of the quality metric).
INVALID_ROW = "invalid_row"
INVALID_TIME = "invalid_time"
INVALID_PRICE = "invalid_price"
INVALID_SIZE = "invalid_size"
INVALID_QUOTE = "invalid_quote"


def canonical_symbol(raw: Any, *, field: str = "symbol") -> str:
    """Upper case, trimmed; pairs keep their '/' (`btc/usdt` → `BTC/USDT`). Invalid raises a 422."""
    symbol = raw.strip().upper() if isinstance(raw, str) else ""
    if not symbol or len(symbol) > MAX_SYMBOL_LENGTH or not _SYMBOL.fullmatch(symbol):
        raise Invalid(f"{raw!r} is not a symbol", errors=[
            {"field": field, "reason": "a symbol is 1-64 letters, digits and /._-+=:@^#!&$"}])
    return symbol


def number(value: Any) -> tuple[float, str] | None:
    """(double, exact decimal string) of a finite number sent as a string, int or float; else None.

    A string is kept as sent: Python's float() and Decimal() read the same numeric syntax, so whatever
    passed float() here is a decimal string every consumer can read exactly.
    """
    kind = type(value)
    try:
        if kind is str:
            as_float = float(value)
            text = value
        elif kind is float:
            as_float, text = value, repr(value)  # the shortest decimal that reads back as this double
        elif kind is int:
            as_float, text = float(value), str(value)
        else:
            return None  # bool, None, lists, objects
    except (ValueError, OverflowError):
        return None
    if as_float != as_float or as_float in (INF, -INF):  # NaN or infinite
        return None
    return as_float, text


def time_ms(value: Any) -> int | None:
    """Epoch milliseconds from an int, a float, a digit string or an ISO 8601 string; else None."""
    kind = type(value)
    if kind is int:
        result = value
    elif kind is float:
        if not math.isfinite(value):
            return None
        result = int(value)
    elif kind is str:
        try:
            result = int(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            result = round(moment.timestamp() * 1000)
    else:
        return None
    return result if MIN_TIME_MS <= result <= MAX_TIME_MS else None


def _mid(bid: str, ask: str) -> tuple[float, str]:
    mid = (Decimal(bid) + Decimal(ask)) / 2
    return float(mid), str(mid)


def normalize_rows(rows: Sequence[Any], rejected: Counter[str]) -> list[NormalTick]:
    """Normalized ticks from raw `[time_ms, price, size, bid, ask]` rows of one symbol.

    Dropped rows are counted in `rejected` by reason. Crossed quotes pass: the quality checks report
    and drop them, for every feed alike.
    """
    out: list[NormalTick] = []
    append = out.append
    for row in rows:
        if type(row) is not list:
            rejected[INVALID_ROW] += 1
            continue
        n = len(row)
        if n < 2 or n > 5:
            rejected[INVALID_ROW] += 1
            continue
        moment = row[0]
        if type(moment) is not int:
            moment = time_ms(moment)
            if moment is None:
                rejected[INVALID_TIME] += 1
                continue
        elif moment < MIN_TIME_MS or moment > MAX_TIME_MS:
            rejected[INVALID_TIME] += 1
            continue
        bid_f, bid_s, ask_f, ask_s = 0.0, None, INF, None
        if n > 3:
            raw_bid = row[3]
            if raw_bid is not None:
                if type(raw_bid) is str:  # the common case, inlined (as for the price below)
                    try:
                        bid_f = float(raw_bid)
                    except ValueError:
                        bid_f = -1.0
                    bid_s = raw_bid
                else:
                    parsed = number(raw_bid)
                    bid_f, bid_s = parsed if parsed is not None else (-1.0, None)
                if not 0.0 < bid_f < INF:
                    rejected[INVALID_QUOTE] += 1
                    continue
            if n > 4:
                raw_ask = row[4]
                if raw_ask is not None:
                    if type(raw_ask) is str:
                        try:
                            ask_f = float(raw_ask)
                        except ValueError:
                            ask_f = -1.0
                        ask_s = raw_ask
                    else:
                        parsed = number(raw_ask)
                        ask_f, ask_s = parsed if parsed is not None else (-1.0, None)
                    if not 0.0 < ask_f < INF:
                        rejected[INVALID_QUOTE] += 1
                        continue
        raw_price = row[1]
        if type(raw_price) is str:  # the common case, inlined
            try:
                price_f = float(raw_price)
            except ValueError:
                rejected[INVALID_PRICE] += 1
                continue
            if not 0.0 < price_f < INF:  # also refuses NaN
                rejected[INVALID_PRICE] += 1
                continue
            price_s = raw_price
        elif raw_price is None:
            if bid_s is None or ask_s is None:  # neither a trade nor a two-sided quote
                rejected[INVALID_PRICE] += 1
                continue
            price_f, price_s = _mid(bid_s, ask_s)
        else:
            parsed = number(raw_price)
            if parsed is None or parsed[0] <= 0.0:
                rejected[INVALID_PRICE] += 1
                continue
            price_f, price_s = parsed
        size_f, size_s = 0.0, "0"
        if n > 2:
            raw_size = row[2]
            if type(raw_size) is str:
                try:
                    size_f = float(raw_size)
                except ValueError:
                    rejected[INVALID_SIZE] += 1
                    continue
                if not 0.0 <= size_f < INF:
                    rejected[INVALID_SIZE] += 1
                    continue
                size_s = raw_size
            elif raw_size is not None:
                parsed = number(raw_size)
                if parsed is None or parsed[0] < 0.0:
                    rejected[INVALID_SIZE] += 1
                    continue
                size_f, size_s = parsed
        if (n == 5 and raw_price is price_s and size_s is row[2] and (bid_s is row[3])
                and (ask_s is row[4])):
            wire = row  # already the wire form: reuse it
        else:
            wire = [moment, price_s, size_s, bid_s, ask_s]
        append((moment, price_f, size_f, bid_f, ask_f, wire))
    return out


def normalize_ticks(ticks: Iterable[Tick], rejected: Counter[str]) -> list[NormalTick]:
    """Normalized ticks from feeds that already speak `Tick`; impossible values counted and dropped."""
    out: list[NormalTick] = []
    for tick in ticks:
        bid, ask = tick.bid, tick.ask
        price_f, size_f = float(tick.price), float(tick.size)
        bid_f = 0.0 if bid is None else float(bid)
        ask_f = INF if ask is None else float(ask)
        if not MIN_TIME_MS <= tick.time_ms <= MAX_TIME_MS:
            rejected[INVALID_TIME] += 1
        elif not 0.0 < price_f < INF:  # also NaN
            rejected[INVALID_PRICE] += 1
        elif not 0.0 <= size_f < INF:
            rejected[INVALID_SIZE] += 1
        elif (bid is not None and not 0.0 < bid_f < INF) or (ask is not None and not 0.0 < ask_f < INF):
            rejected[INVALID_QUOTE] += 1
        else:
            out.append((tick.time_ms, price_f, size_f, bid_f, ask_f,
                        [tick.time_ms, str(tick.price), str(tick.size),
                         None if bid is None else str(bid), None if ask is None else str(ask)]))
    return out


def tick_of(symbol: str, normal: NormalTick) -> Tick:
    """The Decimal `Tick` of a normalized one (for quotes and tests; not on the per-tick path)."""
    row = normal[5]
    return Tick(symbol, row[0], Decimal(row[1]), Decimal(row[2]),
                None if row[3] is None else Decimal(row[3]), None if row[4] is None else Decimal(row[4]))


def tick_from_values(symbol: str, moment: Any, price: Any = None, size: Any = None, bid: Any = None,
                     ask: Any = None) -> Tick | None:
    """One `Tick` from loose values (an exchange or agent message), or None when it cannot be one."""
    normal = normalize_rows([[moment, price, size, bid, ask]], Counter())
    if not normal:
        return None
    try:
        return tick_of(symbol, normal[0])
    except InvalidOperation:
        return None
