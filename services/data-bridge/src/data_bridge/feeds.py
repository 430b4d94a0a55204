"""The feed interface: every source of market data (replay, synthetic, CCXT, MT5, WebSocket ingest)
hands its ticks and closed bars to one `FeedSink`, behind which normalization, quality checks, bar
aggregation, quotes and publishing live. A feed only knows its source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from uuid import UUID

from pydantic import BaseModel

from aitrading.market.bars import Bar, Tick
from aitrading.market.history import MarketData
from aitrading.market.timeframes import Timeframe
from data_bridge.settings import Settings

if TYPE_CHECKING:
    from data_bridge.mt5_agents import Mt5Agents


class FeedSink(Protocol):
    """Where every feed hands its data: normalization/quality/aggregation/publishing live behind it."""

    async def ticks(self, feed: FeedContext, ticks: Sequence[Tick]) -> None: ...

    # CLOSED bars delivered by the source itself (replay, exchange candles); ticks are aggregated by
    # the sink.
    async def bars(self, feed: FeedContext, timeframe: Timeframe, symbol: str,
                   bars: Sequence[Bar]) -> None: ...


@dataclass
class FeedCounters:
    ticks: int = 0
    bars: int = 0
    errors: int = 0
    reconnects: int = 0
    last_data_at: datetime | None = None
    last_error: str | None = None

    def error(self, message: str) -> None:
        """Count a recoverable error and remember what it was."""
        self.errors += 1
        self.last_error = message[:500]

    def as_json(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "bars": self.bars, "errors": self.errors,
                "reconnects": self.reconnects,
                "last_data_at": self.last_data_at.isoformat() if self.last_data_at else None,
                "last_error": self.last_error}


@dataclass
class FeedContext:
    id: UUID
    kind: str
    venue: str
    symbols: list[str]
    synthetic: bool
    counters: FeedCounters = field(default_factory=FeedCounters)
    # Live feeds close bars on wall-clock time too; replay and synthetic feeds (simulated time) close
    # them on data time only.
    live: bool = True

    def touch(self) -> None:
        self.counters.last_data_at = datetime.now(UTC)


@dataclass
class FeedDeps:
    """What a feed may use from the app."""

    market: MarketData  # aitrading.market.history, for replay from the warehouse
    mt5_agents: Mt5Agents | None  # the MT5 agent registry, None until wired
    settings: Settings


class Feed(ABC):
    kind: ClassVar[str]  # "replay" | "synthetic" | "ccxt" | "mt5"
    # The feed's parameters, validated at POST /api/v1/feeds (422 naming the field).
    Params: ClassVar[type[BaseModel]]
    # Whether this kind's data is made up (labelled synthetic on every tick, bar, quote and event).
    synthetic: ClassVar[bool] = False
    # Whether the data arrives in real time (bars also close on wall-clock time) or simulated time.
    live: ClassVar[bool] = True

    def __init__(self, context: FeedContext, params: BaseModel, sink: FeedSink, deps: FeedDeps) -> None:
        self.context = context
        self.params = params
        self.sink = sink
        self.deps = deps

    @classmethod
    def venue_for(cls, params: BaseModel) -> str:
        """The venue label of a feed with these parameters ("binance", "replay", "synthetic", "mt5")."""
        return cls.kind

    @classmethod
    def check(cls, symbols: Sequence[str], params: BaseModel) -> None:
        """Refuse (raise aitrading.errors.Invalid naming the field) symbols this kind cannot serve.

        Runs at POST /api/v1/feeds after `Params` validated; the default accepts any symbol.
        """
        return None

    @abstractmethod
    async def run(self) -> None:
        """Run until cancelled (stop) or done (replay end).

        Handles its own reconnects with backoff (counting counters.reconnects); raises only on a
        fatal error (the manager marks the feed failed).
        """
