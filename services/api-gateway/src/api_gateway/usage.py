"""Usage events of API calls: one per proxied request, published to NATS in batches.

Subject `usage.api.<service>`, type `usage.api_call`, data `{user_id, plan, method, prefix, service,
status, latency_ms, bytes, time}` (user_id None and plan "anonymous" for calls without credentials;
`bytes` is the response body size; a WebSocket session is one event with method "WS"). The envelope is
the platform's (`aitrading.events.Event` JSON, a fresh id each), so consumers parse it with
`Event.from_bytes`; the subjects fall in the PLATFORM stream, which stores them for usage-monitoring's
durable consumer.

Best-effort by design: the request path only appends a tuple to an in-memory list; a background task
encodes and publishes the list every `usage_flush_interval_s` or as soon as `usage_batch_size` calls
wait. When NATS is down or refuses a batch, or more than `usage_buffer_max` calls are waiting, the
events are dropped and counted (`gateway_usage_events_dropped_total{reason}`), never retried: the
gateway holds no durable store, and a request must never wait for metering. Billing-grade counts come
from the services' own outbox events (orders, AI tokens), not from here.

Why a connection of its own instead of `EventBus.publish_many`: the bus publishes stream subjects
through JetStream, one acknowledged publish after another, which measured about 110 µs of gateway CPU
per event here: the gateway could meter fewer than 2,000 calls a second and dropped the rest under
load. Plain NATS publishes, one flush per batch, cost about 5 µs an event; JetStream stores them all
the same (stream capture is by subject), and the acknowledgement is what best-effort metering gives
up. The batch's flush (a PING/PONG round trip) still confirms that the server took the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from aitrading.jsonutil import dumps
from aitrading.metrics import ServiceMetrics

_log = structlog.get_logger("api_gateway.usage")

EVENT_TYPE = "usage.api_call"
SUBJECT_PREFIX = "usage.api."
ANONYMOUS_PLAN = "anonymous"

# (service, user_id, plan, method, prefix, status, latency_ms, bytes, epoch seconds, request id)
UsageRecord = tuple[str, str | None, str, str, str, int, float, int, float, str | None]


class UsageRecorder:
    name = "usage-events"

    def __init__(self, nats_url: str, metrics: ServiceMetrics, *, source: str, flush_interval_s: float = 1.0,
                 batch_size: int = 500, buffer_max: int = 20_000, flush_timeout_s: float = 5.0,
                 connect_timeout_s: float = 3.0, warn_every_s: float = 30.0) -> None:
        self.nats_url = nats_url
        self.source = source
        self.flush_interval_s = flush_interval_s
        self.batch_size = max(1, batch_size)
        self.buffer_max = max(self.batch_size, buffer_max)
        self.flush_timeout_s = flush_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._nc: NatsClient | None = None
        self._buffer: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._published = metrics.counter("gateway_usage_events_published_total",
                                          "Usage events published to NATS")
        self._dropped = metrics.counter("gateway_usage_events_dropped_total",
                                        "Usage events dropped (best-effort metering)", ("reason",))
        self._dropped_overflow = self._dropped.labels("overflow")
        self._warn_every_s = warn_every_s
        self._warned_at = float("-inf")

    def record(self, service: str, user_id: str | None, plan: str, method: str, prefix: str, status: int,
               latency_ms: float, size: int, request_id: str | None) -> None:
        """Queue one call's usage; O(1), never blocks, never raises."""
        buffer = self._buffer
        if len(buffer) >= self.buffer_max:
            self._dropped_overflow.inc()
            return
        buffer.append((service, user_id, plan, method, prefix, status, latency_ms, size, time.time(),
                       request_id))
        if len(buffer) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        self._stopping = False
        await self._connect()  # one attempt now; the flusher keeps trying while NATS is away
        self._task = asyncio.create_task(self._run(), name="usage-flusher")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is waiting, stop the flusher, close the connection."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush()
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.drain()

    async def check(self) -> None:
        """Always ready: metering is best-effort and never holds traffic back."""

    async def _connect(self) -> None:
        if self._nc is not None:
            return
        try:
            # Once connected, nats-py reconnects by itself forever; the first connection is bounded here
            # (nats-py would keep trying) so that the flusher goes on counting drops meanwhile.
            self._nc = await asyncio.wait_for(
                nats.connect(self.nats_url, name=f"{self.source}-usage", connect_timeout=2,
                             max_reconnect_attempts=-1, reconnect_time_wait=1, allow_reconnect=True),
                timeout=self.connect_timeout_s)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._warn("usage events cannot reach NATS yet; dropping them until it answers", exc)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            if self._nc is None:
                await self._connect()
            await self.flush()

    async def flush(self) -> None:
        """Publish everything waiting, a batch at a time."""
        while self._buffer:
            batch = self._buffer[:self.batch_size]
            del self._buffer[:self.batch_size]
            await self._publish(batch)

    async def _publish(self, batch: list[UsageRecord]) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            self._drop("nats-unavailable", len(batch), None)
            return
        try:
            for record in batch:
                subject, payload = self._encode(record)
                await nc.publish(subject, payload)
            await nc.flush(timeout=max(1, round(self.flush_timeout_s)))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._drop("publish-failed", len(batch), exc)
            return
        self._published.inc(len(batch))

    def _encode(self, record: UsageRecord) -> tuple[str, bytes]:
        service, user_id, plan, method, prefix, status, latency_ms, size, at, request_id = record
        subject = SUBJECT_PREFIX + service
        when = datetime.fromtimestamp(at, UTC)
        envelope = {
            "id": str(uuid.uuid4()), "type": EVENT_TYPE, "source": self.source, "time": when,
            "subject": subject,
            "data": {"user_id": user_id, "plan": plan, "method": method, "prefix": prefix, "service": service,
                     "status": status, "latency_ms": round(latency_ms, 3), "bytes": size,
                     "time": when.isoformat().replace("+00:00", "Z")},
            "request_id": request_id,
        }
        return subject, dumps(envelope)

    def _drop(self, reason: str, count: int, exc: BaseException | None) -> None:
        self._dropped.labels(reason).inc(count)
        self._warn("usage events dropped", exc, reason=reason, count=count)

    def _warn(self, message: str, exc: BaseException | None, **fields: object) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self._warn_every_s:
            self._warned_at = now
            _log.warning(message, error=repr(exc) if exc is not None else None, **fields)
