"""The latest quote per symbol: last price, bid, ask, time, venue, feed and whether it is synthetic.

Each instance knows the quotes of the feeds it runs. With Redis configured (REDIS_URL), changed quotes
are mirrored there a few times a second under the symbol's token-safe name, so every replica answers
for every feed's symbols; without it the cache is in-process and an instance answers for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import structlog

from aitrading.cache import Cache
from aitrading.errors import NotFound
from aitrading.market.bars import ms_to_datetime
from aitrading.streams import subject_token

_log = structlog.get_logger("data_bridge.quotes")


@dataclass(slots=True)
class Quote:
    symbol: str
    last: Decimal
    bid: Decimal | None
    ask: Decimal | None
    time_ms: int
    venue: str
    feed: UUID | None
    synthetic: bool

    def as_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "last": str(self.last),
                "bid": None if self.bid is None else str(self.bid),
                "ask": None if self.ask is None else str(self.ask),
                "time": ms_to_datetime(self.time_ms).isoformat().replace("+00:00", "Z"),
                "venue": self.venue, "feed": None if self.feed is None else str(self.feed),
                "synthetic": self.synthetic}

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.symbol, str(self.last), _text(self.bid), _text(self.ask), self.time_ms,
                             self.venue, None if self.feed is None else str(self.feed), self.synthetic])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Quote:
        symbol, last, bid, ask, time_ms, venue, feed, synthetic = orjson.loads(raw)
        return cls(symbol, Decimal(last), _decimal(bid), _decimal(ask), int(time_ms), venue,
                   None if feed is None else UUID(feed), bool(synthetic))


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


class QuoteBook:
    name = "quotes"

    def __init__(self, cache: Cache, *, mirror: bool, ttl_s: float, interval_s: float = 0.25) -> None:
        self.cache = cache
        self.mirror = mirror
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self._quotes: dict[str, Quote] = {}
        self._by_token: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def update(self, symbol: str, last: str, bid: str | None, ask: str | None, time_ms: int, venue: str,
               feed: UUID | None, synthetic: bool) -> None:
        """The newest print of a symbol (decimal strings); an older time never replaces a newer quote.

        A trade without a quote keeps the bid and ask last seen.
        """
        current = self._quotes.get(symbol)
        if current is not None and time_ms < current.time_ms and current.feed == feed:
            return
        quote = Quote(symbol, Decimal(last),
                      Decimal(bid) if bid is not None else (current.bid if current else None),
                      Decimal(ask) if ask is not None else (current.ask if current else None),
                      time_ms, venue, feed, synthetic)
        if current is None:
            self._by_token[subject_token(symbol)] = symbol
        self._quotes[symbol] = quote
        if self.mirror:
            self._dirty.add(symbol)

    def local(self) -> list[Quote]:
        return sorted(self._quotes.values(), key=lambda q: q.symbol)

    async def get(self, symbol: str) -> Quote | None:
        """By real symbol (`BTC/USDT`) or token-safe form (`BTC-USDT`), here first, then in the cache."""
        key = symbol.strip().upper()
        quote = self._quotes.get(key) or self._quotes.get(self._by_token.get(key, ""))
        if quote is not None:
            return quote
        if not self.mirror or not key:
            return None
        raw = await self.cache.get(_cache_key(key))
        if raw is None:
            return None
        try:
            return Quote.from_bytes(raw)
        except (ValueError, TypeError) as exc:
            _log.warning("unreadable quote in the cache ignored", symbol=key, error=repr(exc))
            return None

    async def require(self, symbol: str) -> Quote:
        quote = await self.get(symbol)
        if quote is None:
            raise NotFound(f"no quote for {symbol!r}: no feed has delivered it")
        return quote

    async def start(self) -> None:
        if self.mirror:
            self._task = asyncio.create_task(self._mirror(), name="quote-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.write_dirty()

    async def check(self) -> None:
        """The cache reports its own health."""

    async def write_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for symbol in dirty:
            quote = self._quotes.get(symbol)
            if quote is not None:
                await self.cache.set(_cache_key(symbol), quote.to_bytes(), self.ttl_s)

    async def _mirror(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.write_dirty()


def _cache_key(symbol: str) -> str:
    return f"quote:{subject_token(symbol)}"
