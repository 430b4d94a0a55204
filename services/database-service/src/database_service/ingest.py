"""The feed consumer: durable JetStream pull consumers that store `md.tick.>` and `md.bar.>` in batches.

Not the library's DurableConsumer (one Postgres transaction per event): here each round fetches up to
`ingest_batch` messages, checks them, writes all their rows in one INSERT per table, and only then
acknowledges them. A failed insert naks the round with a growing delay; a malformed message is
terminated and counted. Nothing is stored twice: a batch redelivered whole carries the same
deduplication token (dropped at insert), and any other redelivery rewrites rows under the same keys,
which ReplacingMergeTree collapses (reads use FINAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from aitrading.errors import Unavailable
from aitrading.events import ensure_stream, retry_delay
from aitrading.metrics import ServiceMetrics
from aitrading.streams import MARKET
from database_service import store
from database_service.events import BAR_SUBJECTS, TICK_SUBJECTS, BarColumns, Malformed, TickColumns
from database_service.settings import Settings
from database_service.store import Series
from database_service.warehouse import Warehouse, WarehouseError

_log = structlog.get_logger("database_service.ingest")


class Batch(Protocol):
    series: dict[tuple[str, str, str], Series]

    def __len__(self) -> int: ...
    def add(self, raw: bytes) -> int: ...
    def columns(self) -> dict[str, list[Any]]: ...


class IngestMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        table = ("table",)
        self.rows = metrics.counter("warehouse_rows_inserted_total", "Rows inserted from the feed", table)
        self.batches = metrics.counter("warehouse_batches_total", "Feed batches inserted", table)
        self.latency = metrics.histogram("warehouse_insert_seconds", "Time to insert one feed batch", table)
        self.rejected = metrics.counter("ingest_messages_rejected_total",
                                        "Feed messages terminated as malformed", ("table",))
        self.failures = metrics.counter("ingest_insert_failures_total",
                                        "Feed batches whose insert failed (redelivered later)", ("table",))


class StreamConsumer:
    """One durable consumer writing one table."""

    def __init__(self, *, table: str, subject: str, durable: str, settings: Settings, warehouse: Warehouse,
                 new_batch: Callable[[], Batch], insert: Callable[[Warehouse, Any, str], Any],
                 known: set[tuple[str, str, str]]) -> None:
        self.table, self.subject, self.durable = table, subject, durable
        self.settings, self.warehouse = settings, warehouse
        self.new_batch, self.insert = new_batch, insert
        self.known = known  # series already in the symbols table, shared by both consumers
        self.metrics: IngestMetrics | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.waiting = False  # parked in a fetch or a back-off sleep: safe to cancel
        self.counters = {"messages": 0, "rows": 0, "batches": 0, "rejected": 0, "failures": 0}
        self._log = _log.bind(consumer=durable, subject=subject)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable, durable_name=self.durable, filter_subject=self.subject,
            deliver_policy=DeliverPolicy.NEW if self.settings.ingest_deliver == "new" else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT, ack_wait=self.settings.ingest_ack_wait_s, max_deliver=-1,
            max_ack_pending=max(self.settings.ingest_batch * 4, 1000),
            inactive_threshold=self.settings.ingest_inactive_threshold_s,
        )

    @property
    def died(self) -> bool:
        task = self.task
        return task is not None and task.done() and not task.cancelled() and task.exception() is not None

    def start(self, js: JetStreamContext) -> None:
        self.stopping = False
        self.task = asyncio.get_running_loop().create_task(self._run(js), name=f"ingest:{self.durable}")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        self.stopping = True
        if self.waiting:
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            self._log.error("consumer had stopped with an error", exc_info=task.exception())

    async def _park(self, awaitable: Any) -> Any:
        if self.stopping:
            with contextlib.suppress(AttributeError):
                awaitable.close()
            raise asyncio.CancelledError
        self.waiting = True
        try:
            return await awaitable
        finally:
            self.waiting = False

    async def _run(self, js: JetStreamContext) -> None:
        failures = 0
        with contextlib.suppress(asyncio.CancelledError):
            while not self.stopping:
                try:
                    sub = await self._bind(js)
                except (nats.errors.Error, TimeoutError) as exc:
                    failures += 1
                    self._log.warning("cannot bind consumer; retrying", error=repr(exc))
                    await self._park(asyncio.sleep(retry_delay(failures)))
                    continue
                failures = 0
                try:
                    while not self.stopping:
                        await self._round(sub)
                except (nats.errors.Error, TimeoutError) as exc:
                    self._log.warning("consumer lost its subscription; rebinding", error=repr(exc))
                    await self._park(asyncio.sleep(1.0))
                finally:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()

    async def _bind(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        await ensure_stream(js, MARKET)
        try:
            await js.add_consumer(MARKET.name, config=self.config())
        except BadRequestError as exc:
            # The durable exists with settings that cannot change (its start policy): use it as it is.
            self._log.warning("durable kept with its existing configuration", error=exc.description)
        return await js.pull_subscribe_bind(durable=self.durable, stream=MARKET.name)

    async def _round(self, sub: JetStreamContext.PullSubscription) -> None:
        try:
            msgs = await self._park(sub.fetch(self.settings.ingest_batch,
                                              timeout=self.settings.ingest_fetch_timeout_s))
        except TimeoutError:
            return
        await self.process(msgs)

    async def process(self, msgs: list[Msg]) -> None:
        """Store the rows of `msgs` in one insert; ack them after it, nak them when it fails."""
        batch = self.new_batch()
        good: list[Msg] = []
        ids: list[str] = []
        for msg in msgs:
            try:
                batch.add(msg.data)
            except Malformed as exc:
                self.counters["rejected"] += 1
                if self.metrics is not None:
                    self.metrics.rejected.labels(self.table).inc()
                self._log.warning("malformed message terminated", nats_subject=msg.subject,
                                  error=str(exc)[:300])
                await _answer(msg.term())
                continue
            good.append(msg)
            seq = msg.metadata.sequence.stream if msg.metadata.sequence else 0
            ids.append(f"{seq}")
        self.counters["messages"] += len(good)
        if not good:
            return
        # The same messages in the same round again (a redelivery of the whole batch): the same token.
        token = f"{self.durable}:" + hashlib.sha256(",".join(ids).encode()).hexdigest()
        started = time.perf_counter()
        try:
            if len(batch):
                await self.insert(self.warehouse, batch.columns(), token)
            await self._register(batch)
        except WarehouseError as exc:
            self.counters["failures"] += 1
            if self.metrics is not None:
                self.metrics.failures.labels(self.table).inc()
            delivery = max(m.metadata.num_delivered or 1 for m in good)
            delay = retry_delay(delivery)
            self._log.error("batch insert failed; redelivery scheduled", error=str(exc)[:300],
                            messages=len(good), retry_in_s=delay)
            for msg in good:
                await _answer(msg.nak(delay=delay))
            await self._park(asyncio.sleep(min(delay, 5.0)))
            return
        elapsed = time.perf_counter() - started
        self.counters["rows"] += len(batch)
        self.counters["batches"] += 1
        if self.metrics is not None:
            self.metrics.rows.labels(self.table).inc(len(batch))
            self.metrics.batches.labels(self.table).inc()
            self.metrics.latency.labels(self.table).observe(elapsed)
        for msg in good:
            await _answer(msg.ack())

    async def _register(self, batch: Batch) -> None:
        new = [s for key, s in batch.series.items() if key not in self.known]
        if new:
            await store.register_series(self.warehouse, new)
            self.known.update(s.key for s in new)


async def _answer(reply: Any) -> None:
    try:
        await reply
    except nats.errors.MsgAlreadyAckdError:
        return  # answered before (a batch handled again): nothing left to say
    except nats.errors.Error as exc:
        # Unanswered: NATS redelivers after ack_wait, and the warehouse keeps one copy of each row.
        _log.warning("could not answer NATS for a message", error=exc.__class__.__name__)


async def _insert_ticks(wh: Warehouse, columns: Any, token: str) -> int:
    return await store.insert_ticks(wh, columns, token=token)


async def _insert_bars(wh: Warehouse, columns: Any, token: str) -> int:
    return await store.insert_bars(wh, columns, token=token)


class MarketIngest:
    """The component (start/stop/check) running both consumers on a NATS connection of its own."""

    name = "market-ingest"

    def __init__(self, settings: Settings, warehouse: Warehouse) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self._nc: NatsClient | None = None
        self.known: set[tuple[str, str, str]] = set()
        prefix = settings.durable_prefix
        self.ticks = StreamConsumer(table="ticks", subject=TICK_SUBJECTS, durable=f"{prefix}-ticks",
                                    settings=settings, warehouse=warehouse, new_batch=TickColumns,
                                    insert=_insert_ticks, known=self.known)
        self.bars = StreamConsumer(table="bars", subject=BAR_SUBJECTS, durable=f"{prefix}-bars",
                                   settings=settings, warehouse=warehouse, new_batch=BarColumns,
                                   insert=_insert_bars, known=self.known)
        self.consumers = (self.ticks, self.bars)

    def use_metrics(self, metrics: ServiceMetrics) -> None:
        shared = IngestMetrics(metrics)
        for consumer in self.consumers:
            consumer.metrics = shared

    async def start(self) -> None:
        self.known.update(await store.known_series(self.warehouse))
        self._nc = await nats.connect(self.settings.nats_url, name=f"{self.settings.service_name}-ingest",
                                      max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=20)
        js = self._nc.jetstream(timeout=10.0)
        for consumer in self.consumers:
            consumer.start(js)

    async def stop(self) -> None:
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.drain()
            await nc.close()

    async def check(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise Unavailable("the feed consumer is not connected to NATS")
        dead = [c.durable for c in self.consumers if c.died]
        if dead:
            raise Unavailable(f"feed consumers stopped: {', '.join(dead)}")
