"""What data-bridge publishes: `md.ticks`, `md.bars` and `md.quality` (aitrading.market.wire).

Tick batches are encoded straight to the envelope's JSON instead of through the pydantic `Event`
(whose dump walks every row): the bytes are the same envelope `Event.from_bytes` reads, and
`aitrading.market.wire.parse_ticks` reads the data. Bars and quality findings are few and go through
the library's builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import uuid4

from aitrading import jsonutil
from aitrading.events import EncodedEvent
from aitrading.market.bars import Bar
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import TICKS, bars_event, quality_event, tick_subject


@lru_cache(maxsize=65_536)
def _tick_subject(symbol: str) -> str:
    return tick_subject(symbol)


def encode_ticks(symbol: str, venue: str, synthetic: bool, rows: Sequence[list[Any]], *,
                 source: str) -> EncodedEvent:
    """One `md.ticks` event of wire rows `[time_ms, price, size, bid, ask]` (decimal strings)."""
    event_id = str(uuid4())
    subject = _tick_subject(symbol)
    envelope = {"id": event_id, "type": TICKS, "source": source, "time": datetime.now(UTC),
                "subject": subject,
                "data": {"symbol": symbol, "venue": venue, "synthetic": synthetic, "ticks": rows},
                "request_id": None}
    return EncodedEvent(subject, event_id, jsonutil.dumps(envelope))


def encode_bars(symbol: str, venue: str, timeframe: Timeframe, synthetic: bool, bars: Sequence[Bar], *,
                source: str) -> EncodedEvent:
    """One `md.bars` event: closed bars of one symbol and timeframe, oldest first."""
    return EncodedEvent.of(bars_event(symbol, venue, timeframe, bars, source=source, synthetic=synthetic))


def encode_quality(symbol: str, venue: str, check: str, count: int, detail: str, *,
                   source: str) -> EncodedEvent:
    return EncodedEvent.of(quality_event(symbol, venue, check, count, detail, source=source))
