"""What a warehouse written only by this process (`Warehouse.cache_scope`, chDB) lets the service keep.

- The stored series (the `symbols` table, one row per series): every bars request asks which series
  answers, one more warehouse round trip than the bars themselves. Dropped by `register_series`.
- Rendered bars answers: feature-engineering and pattern-validator ask for the same recent bars of a
  symbol over and over, and reading them costs 10-20 ms of ClickHouse time. Kept per symbol and
  dropped by every insert of bars of that symbol and every retention change; at most `MAX_AGE_S` old,
  so rows a TTL merge deletes disappear from answers about as late as from the table itself.

A load that raced a write must not store what it read before the write: each read notes the
generation of what it reads first and stores only when the generation is still the same.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from database_service.store import Series
    from database_service.warehouse import Warehouse

MAX_BYTES = 64 * 1024 * 1024  # rendered bars kept in all (a 100,000-bar answer is ~11 MB)
MAX_AGE_S = 60.0


@dataclass
class _Entry:
    body: bytes
    generation: int
    stored_at: float


@dataclass
class WarehouseCache:
    series: dict[str, list[Series]] | None = None  # by symbol
    series_generation: int = 0
    bars_generation: dict[str, int] = field(default_factory=dict)  # symbol → writes seen
    all_bars_generation: int = 0  # retention changes: every symbol
    _bars: OrderedDict[tuple[str, Hashable], _Entry] = field(default_factory=OrderedDict)
    _bytes: int = 0

    def drop_series(self) -> None:
        self.series_generation += 1
        self.series = None

    def bars_version(self, symbol: str) -> int:
        return self.bars_generation.get(symbol, 0) + self.all_bars_generation

    def drop_bars(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self.bars_generation[symbol] = self.bars_generation.get(symbol, 0) + 1
        # Stale entries are skipped on read and pushed out by newer ones.

    def drop_all_bars(self) -> None:
        self.all_bars_generation += 1
        self._bars.clear()
        self._bytes = 0

    def get_bars(self, symbol: str, key: Hashable) -> bytes | None:
        entry = self._bars.get((symbol, key))
        if entry is None:
            return None
        if entry.generation != self.bars_version(symbol) or time.monotonic() - entry.stored_at > MAX_AGE_S:
            self._remove((symbol, key))
            return None
        self._bars.move_to_end((symbol, key))
        return entry.body

    def put_bars(self, symbol: str, key: Hashable, generation: int, body: bytes) -> None:
        if generation != self.bars_version(symbol) or len(body) > MAX_BYTES // 4:
            return
        self._remove((symbol, key))
        self._bars[(symbol, key)] = _Entry(body, generation, time.monotonic())
        self._bytes += len(body)
        while self._bytes > MAX_BYTES:
            self._remove(next(iter(self._bars)))

    def _remove(self, key: tuple[str, Hashable]) -> None:
        entry = self._bars.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body)


# By `Warehouse.cache_scope`: one per chDB folder, which a process keeps open for its lifetime.
_caches: dict[str, WarehouseCache] = {}


def of(wh: Warehouse) -> WarehouseCache | None:
    """The cache of the warehouse's data, or None when another process may write to it too."""
    scope = wh.cache_scope
    if scope is None:
        return None
    cache = _caches.get(scope)
    if cache is None:
        cache = _caches[scope] = WarehouseCache()
    return cache
