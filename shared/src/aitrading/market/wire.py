"""Market events on NATS: subjects and the batched wire form of ticks, bars and quality findings.

Ticks and bars travel in batches, one event per symbol per flush, as compact rows:

- `md.tick.<SYMBOL>`, type `md.ticks`: `{symbol, venue, synthetic, ticks: [[time_ms, price, size, bid,
  ask], ...]}` with decimal strings (bid/ask may be null);
- `md.bar.<timeframe>.<SYMBOL>`, type `md.bars`: `{symbol, venue, timeframe, synthetic, bars:
  [[time_ms, open, high, low, close, volume], ...]}`, closed bars only, oldest first;
- `md.quality.<SYMBOL>`, type `md.quality`: `{symbol, venue, check, count, detail}`.

`<SYMBOL>` is `subject_token(symbol)` (`BTC/USDT` → `BTC-USDT`); the payload keeps the real symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aitrading.events import Event
from aitrading.market.bars import Bar, Tick
from aitrading.market.timeframes import Timeframe
from aitrading.streams import subject_token

TICKS, BARS, QUALITY = "md.ticks", "md.bars", "md.quality"


def tick_subject(symbol: str) -> str:
    return f"md.tick.{subject_token(symbol)}"


def bar_subject(timeframe: Timeframe | str, symbol: str) -> str:
    return f"md.bar.{Timeframe(timeframe).value}.{subject_token(symbol)}"


def quality_subject(symbol: str) -> str:
    return f"md.quality.{subject_token(symbol)}"


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def tick_row(tick: Tick) -> list[Any]:
    return [tick.time_ms, str(tick.price), str(tick.size), _dec(tick.bid), _dec(tick.ask)]


def bar_row(bar: Bar) -> list[Any]:
    return [bar.time_ms, str(bar.open), str(bar.high), str(bar.low), str(bar.close), str(bar.volume)]


def ticks_event(symbol: str, venue: str, rows: Sequence[Sequence[Any]], *, source: str,
                synthetic: bool = False) -> Event:
    """One batch of tick rows (`tick_row`) of one symbol."""
    return Event(type=TICKS, subject=tick_subject(symbol), source=source,
                 data={"symbol": symbol, "venue": venue, "synthetic": synthetic, "ticks": list(rows)})


def bars_event(symbol: str, venue: str, timeframe: Timeframe, bars: Sequence[Bar], *, source: str,
               synthetic: bool = False) -> Event:
    """Closed bars of one symbol and timeframe, oldest first."""
    return Event(type=BARS, subject=bar_subject(timeframe, symbol), source=source,
                 data={"symbol": symbol, "venue": venue, "timeframe": timeframe.value, "synthetic": synthetic,
                       "bars": [bar_row(b) for b in bars]})


def quality_event(symbol: str, venue: str, check: str, count: int, detail: str, *, source: str) -> Event:
    return Event.new(QUALITY, quality_subject(symbol), {"symbol": symbol, "venue": venue, "check": check,
                                                        "count": count, "detail": detail}, source=source)


@dataclass(frozen=True)
class TickBatch:
    symbol: str
    venue: str
    synthetic: bool
    ticks: list[Tick]


@dataclass(frozen=True)
class BarBatch:
    symbol: str
    venue: str
    timeframe: Timeframe
    synthetic: bool
    bars: list[Bar]


def _opt(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def parse_ticks(event: Event) -> TickBatch:
    """The ticks of an `md.ticks` event; raises ValueError on a malformed one."""
    try:
        data = event.data
        symbol = str(data["symbol"])
        ticks = [Tick(symbol, int(r[0]), Decimal(r[1]), Decimal(r[2]), _opt(r[3]), _opt(r[4]))
                 for r in data["ticks"]]
        return TickBatch(symbol, str(data.get("venue", "")), bool(data.get("synthetic", False)), ticks)
    except (KeyError, IndexError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"malformed md.ticks event: {exc!r}") from exc


def parse_bars(event: Event) -> BarBatch:
    """The bars of an `md.bars` event; raises ValueError on a malformed one."""
    try:
        data = event.data
        bars = [Bar(int(r[0]), Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), Decimal(r[5]))
                for r in data["bars"]]
        return BarBatch(str(data["symbol"]), str(data.get("venue", "")), Timeframe(data["timeframe"]),
                        bool(data.get("synthetic", False)), bars)
    except (KeyError, IndexError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"malformed md.bars event: {exc!r}") from exc
