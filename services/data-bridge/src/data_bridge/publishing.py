"""Batched, acknowledged publishing of market events to NATS JetStream.

Ticks wait per symbol and are flushed every `tick_flush_ms` (or as soon as `tick_batch_max` are
waiting) as one `md.ticks` event per symbol; closed bars and quality findings are queued as they come.
Everything leaves in order through `EventBus.publish_encoded`, which JetStream acknowledges and
deduplicates by event id, so a batch retried after a partial failure is never stored twice. While NATS
refuses, the unsent events are kept and retried with exponential backoff; the queue is bounded by
`publish_buffer_max` rows (ticks + bars), and beyond it the oldest events are dropped and counted.

While NATS accepts but more is waiting than half the bound, producers are held back (`room()`), so a
fast WebSocket client is slowed down by TCP flow control instead of losing ticks; while NATS refuses,
nobody is held back and the bound applies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import structlog

from aitrading.events import EncodedEvent, EventBus, PublishFailed
from aitrading.market.bars import Bar
from aitrading.market.timeframes import Timeframe
from aitrading.metrics import ServiceMetrics
from data_bridge.events import encode_bars, encode_quality, encode_ticks
from data_bridge.settings import Settings

_log = structlog.get_logger("data_bridge.publishing")

# Events handed to NATS per round trip: enough to pipeline, few enough to retry cheaply.
EVENTS_PER_PUBLISH = 64


class Publisher:
    name = "publisher"

    def __init__(self, bus: EventBus | None, settings: Settings, metrics: ServiceMetrics) -> None:
        self.bus = bus
        self.source = settings.service_name
        self.flush_s = settings.tick_flush_ms / 1000
        self.batch_max = settings.tick_batch_max
        self.max_event_bytes = settings.max_event_bytes
        self.buffer_max = settings.publish_buffer_max
        self.retry_initial_s = settings.publish_retry_initial_s
        self.retry_max_s = settings.publish_retry_max_s
        # (symbol, venue, synthetic) → wire rows waiting for the next flush
        self._ticks: dict[tuple[str, str, bool], list[list[Any]]] = {}
        self._waiting_ticks = 0
        self._queue: deque[tuple[EncodedEvent, int, str]] = deque()  # (event, rows, kind)
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = metrics.counter("data_bridge_published_events_total",
                                          "Market events NATS acknowledged", ("kind",))
        self.published_ticks = metrics.counter("data_bridge_published_ticks_total",
                                               "Ticks in acknowledged md.ticks events")
        self.dropped = metrics.counter("data_bridge_publish_dropped_total",
                                       "Rows dropped because the publish buffer was full", ("kind",))
        self.retries = metrics.counter("data_bridge_publish_retries_total",
                                       "Publish rounds NATS did not fully acknowledge")
        self.pending = metrics.gauge("data_bridge_publish_pending_rows", "Rows waiting to be published")

    # --- producers (synchronous: no per-tick awaits) ----------------------------------------------

    def add_ticks(self, symbol: str, venue: str, synthetic: bool, rows: list[list[Any]]) -> None:
        key = (symbol, venue, synthetic)
        waiting = self._ticks.get(key)
        if waiting is None:
            self._ticks[key] = rows
        else:
            waiting.extend(rows)
        self._waiting_ticks += len(rows)
        if len(self._ticks[key]) >= self.batch_max:
            self._wake.set()

    def add_bars(self, symbol: str, venue: str, timeframe: Timeframe, synthetic: bool,
                 bars: Sequence[Bar]) -> None:
        # Ticks of the symbol go first, so a consumer sees the ticks of a bar before the bar.
        self._collect_one((symbol, venue, synthetic))
        self._enqueue(encode_bars(symbol, venue, timeframe, synthetic, bars, source=self.source),
                      len(bars), "bars")

    def add_quality(self, symbol: str, venue: str, check: str, count: int, detail: str) -> None:
        self._enqueue(encode_quality(symbol, venue, check, count, detail, source=self.source), 0, "quality")

    @property
    def backlog(self) -> int:
        """Rows accepted but not yet acknowledged by NATS."""
        return self._waiting_ticks + self._queued_rows

    async def room(self) -> None:
        """Wait while NATS keeps up but the backlog is past half the bound (producers call this)."""
        while not self._failing and self.backlog > self.buffer_max // 2 and not self._stopping:
            self._drained.clear()
            self._wake.set()
            await self._drained.wait()

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="publisher")

    async def stop(self) -> None:
        """Publish what is waiting (bounded by the retry loop's patience), then stop."""
        self._stopping = True
        self._wake.set()
        self._drained.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5.0)
            except TimeoutError:
                _log.warning("publisher stopped with events unsent", rows=self.backlog)
            self._task = None

    async def check(self) -> None:
        """Ready while the event bus is: a backlog alone is not a reason to refuse traffic."""

    async def flush(self) -> None:
        """Publish everything waiting now (tests, shutdown); raises PublishFailed if NATS refuses."""
        self._collect()
        await self._send_queue()

    # --- internals --------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_initial_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            self._collect()
            try:
                await self._send_queue()
                delay = self.retry_initial_s
                self._failing = False
            except PublishFailed as exc:
                self._failing = True
                self._drained.set()  # producers must not wait on an outage: the bound applies now
                self.retries.inc()
                _log.warning("market events not acknowledged; retrying", error=exc.detail,
                             pending_rows=self.backlog, retry_in_s=delay)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
            if self._stopping and not self._queue and not self._ticks:
                return

    def _collect(self) -> None:
        for key in list(self._ticks):
            self._collect_one(key)

    def _collect_one(self, key: tuple[str, str, bool]) -> None:
        rows = self._ticks.pop(key, None)
        if not rows:
            return
        self._waiting_ticks -= len(rows)
        symbol, venue, synthetic = key
        for first in range(0, len(rows), self.batch_max):
            self._enqueue_ticks(symbol, venue, synthetic, rows[first:first + self.batch_max])

    def _enqueue_ticks(self, symbol: str, venue: str, synthetic: bool, rows: list[list[Any]]) -> None:
        event = encode_ticks(symbol, venue, synthetic, rows, source=self.source)
        if len(event.payload) > self.max_event_bytes and len(rows) > 1:
            half = len(rows) // 2  # long decimal strings: split until NATS takes each part
            self._enqueue_ticks(symbol, venue, synthetic, rows[:half])
            self._enqueue_ticks(symbol, venue, synthetic, rows[half:])
            return
        self._enqueue(event, len(rows), "ticks")

    def _enqueue(self, event: EncodedEvent, rows: int, kind: str) -> None:
        self._queue.append((event, rows, kind))
        self._queued_rows += rows
        while self._queued_rows > self.buffer_max and len(self._queue) > 1:
            _, lost, lost_kind = self._queue.popleft()
            self._queued_rows -= lost
            self.dropped.labels(lost_kind).inc(lost)
        self.pending.set(self.backlog)

    async def _send_queue(self) -> None:
        while self._queue:
            if self.bus is None:
                raise PublishFailed("no event bus", published=0)
            batch = [self._queue[i] for i in range(min(EVENTS_PER_PUBLISH, len(self._queue)))]
            try:
                await self.bus.publish_encoded([event for event, _, _ in batch])
            except PublishFailed as exc:
                self._done(batch[:exc.published])
                raise
            self._done(batch)

    def _done(self, sent: list[tuple[EncodedEvent, int, str]]) -> None:
        # The queue may have lost its head to the bound meanwhile: drop only what is still there.
        for item in sent:
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
                _, rows, kind = item
                self._queued_rows -= rows
                self.published.labels(kind).inc()
                if kind == "ticks":
                    self.published_ticks.inc(rows)
        self._signal_room()

    def _signal_room(self) -> None:
        backlog = self.backlog
        self.pending.set(backlog)
        if backlog <= self.buffer_max // 4:
            self._drained.set()
