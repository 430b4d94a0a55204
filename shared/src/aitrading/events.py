"""Events over NATS: the envelope, publishing with server-side dedupe, and idempotent durable consumers.

A durable consumer is a JetStream pull consumer whose handler runs in one database transaction that
also records (consumer, event id) in `processed_events`. A redelivered event finds its id there and is
acknowledged without running the handler again, so each event is applied once per consumer, however
often NATS delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from nats.js.errors import BadRequestError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Column, DateTime, MetaData, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading import jsonutil
from aitrading.db import Database
from aitrading.errors import Unavailable
from aitrading.request_context import current_request_id, request_id_var
from aitrading.streams import STREAMS, StreamSpec, stream_for

_log = structlog.get_logger(__name__)
T = TypeVar("T")

STREAM_NAME_IN_USE = 10058  # JetStream API error code: the stream exists with another config
FETCH_TIMEOUT_S = 5.0
RETRY_BASE_S, RETRY_MAX_S = 1.0, 60.0
_DURABLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")

processed_events = Table(
    "processed_events", MetaData(),
    Column("consumer", Text, primary_key=True),
    Column("event_id", Uuid, primary_key=True),
    Column("processed_at", DateTime(timezone=True)),
)


class Event(BaseModel):
    """The envelope of every fact on NATS; `data` holds JSON values (decimals as strings)."""

    model_config = ConfigDict(frozen=True)

    id: UUID = Field(default_factory=uuid4)
    type: str
    source: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str
    data: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = None

    @field_validator("time")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @classmethod
    def new(cls, type: str, subject: str, data: Mapping[str, Any], *, source: str,
            request_id: str | None = None) -> Event:
        # `data` as every consumer will see it: Decimals and UUIDs become strings here, not on the wire.
        return cls(type=type, subject=subject, source=source, data=jsonutil.loads(jsonutil.dumps(dict(data))),
                   request_id=request_id if request_id is not None else current_request_id())

    def to_bytes(self) -> bytes:
        return jsonutil.dumps(self.model_dump())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        """Parse an encoded event; raises ValueError (pydantic ValidationError) when it is not one."""
        return cls.model_validate_json(raw)


class EncodedEvent(NamedTuple):
    """An event ready for the wire; what the outbox stores."""

    subject: str
    event_id: str
    payload: bytes

    @classmethod
    def of(cls, event: Event) -> EncodedEvent:
        return cls(event.subject, str(event.id), event.to_bytes())


class PublishFailed(Unavailable):
    """NATS did not confirm every event; the first `published` of them were stored."""

    def __init__(self, detail: str, *, published: int) -> None:
        super().__init__(detail)
        self.published = published


DurableHandler = Callable[[AsyncSession, Event], Awaitable[None]]
Handler = Callable[[Event], Awaitable[None]]


def _failure(ack: asyncio.Future[Any] | None, flushed: bool) -> str | None:
    """Why one publish is unconfirmed, or None when NATS confirmed it (core publish: the flush did)."""
    if ack is None:
        return None if flushed else "flush failed"
    if not ack.done() or ack.cancelled():
        return "no acknowledgement in time"
    exc = ack.exception()
    return None if exc is None else repr(exc)


def retry_delay(delivery: int) -> float:
    """Redelivery delay after a failed handler: 1 s, 2 s, 4 s ... capped at a minute."""
    return min(RETRY_BASE_S * 2.0 ** max(delivery - 1, 0), RETRY_MAX_S)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create the stream, or update it when it exists with an older configuration."""
    config = spec.config()
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
        await js.update_stream(config)


class EventBus:
    """NATS connection of one service: publishing, core subscriptions and durable consumers."""

    name = "nats"

    def __init__(self, url: str, *, source: str, publish_timeout_s: float = 5.0) -> None:
        self.url = url
        self.source = source
        self.publish_timeout_s = publish_timeout_s
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subscriptions: list[tuple[str, Handler]] = []
        self._consumers: list[DurableConsumer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._log = _log.bind(nats_server=urlsplit(url).hostname, nats_port=urlsplit(url).port)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        self._closing = False
        self._nc = await nats.connect(
            self.url, name=self.source, max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=20,
            drain_timeout=10, error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected, closed_cb=self._on_closed,
        )
        self._js = self._nc.jetstream(timeout=self.publish_timeout_s)
        try:
            await self.ensure_streams()
            for subject, handler in self._subscriptions:
                await self._subscribe_core(subject, handler)
        except BaseException:
            nc, self._nc, self._js = self._nc, None, None
            await nc.close()
            raise
        for consumer in self._consumers:
            consumer.start(self._js)
        self._log.info("event bus started", streams=[s.name for s in STREAMS], consumers=len(self._consumers))

    async def stop(self) -> None:
        """Let consumers finish the event in hand, then drain the connection."""
        self._closing = True
        await asyncio.gather(*(consumer.stop() for consumer in self._consumers))
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                await nc.drain()
        except (nats.errors.Error, TimeoutError) as exc:
            self._log.warning("nats drain failed; closing", error=repr(exc))
        finally:
            await nc.close()

    async def check(self) -> None:
        if not self.connected:
            raise Unavailable("NATS is not connected")
        dead = [consumer.durable for consumer in self._consumers if consumer.died]
        if dead:
            raise Unavailable(f"durable consumers stopped unexpectedly: {', '.join(dead)}")

    async def ensure_streams(self) -> None:
        for spec in STREAMS:
            await ensure_stream(self._jetstream(), spec)

    async def publish(self, event: Event) -> None:
        await self.publish_encoded([EncodedEvent.of(event)])

    async def publish_many(self, events: Sequence[Event]) -> None:
        await self.publish_encoded([EncodedEvent.of(event) for event in events])

    async def publish_encoded(self, messages: Sequence[EncodedEvent]) -> None:
        """Publish in order, pipelined; raise PublishFailed unless NATS confirmed every one.

        Stream subjects go through JetStream with `Nats-Msg-Id` = event id, so a retry after a partial
        failure is deduplicated by the server; other subjects are core publishes confirmed by one flush.
        """
        if not messages:
            return
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            raise PublishFailed("NATS is not connected", published=0)
        acks: list[asyncio.Future[Any] | None] = []
        flushed, failure = False, ""
        try:
            for message in messages:
                if stream_for(message.subject) is None:
                    await nc.publish(message.subject, message.payload)
                    acks.append(None)
                else:
                    acks.append(await js.publish_async(
                        message.subject, message.payload, wait_stall=self.publish_timeout_s,
                        headers={Header.MSG_ID: message.event_id}))
            await nc.flush(timeout=max(int(self.publish_timeout_s), 1))
            flushed = True
            pending = [ack for ack in acks if ack is not None]
            if pending:
                await asyncio.wait(pending, timeout=self.publish_timeout_s)
        except (nats.errors.Error, TimeoutError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # nats-py reports a cancelled wait as a stall; the caller asked to stop, not to retry.
                raise asyncio.CancelledError from exc
            failure = repr(exc)
        failures = [_failure(ack, flushed) for ack in acks]  # also retrieves every exception
        confirmed = next((i for i, reason in enumerate(failures) if reason is not None), len(acks))
        for ack in acks:
            if ack is not None and not ack.done():
                ack.cancel()
        if confirmed < len(messages):
            reason = failure or next((r for r in failures if r is not None), "not sent")
            raise PublishFailed(f"NATS confirmed {confirmed} of {len(messages)} events: {reason}",
                                published=confirmed)

    def subscribe(self, subject: str, handler: Handler) -> None:
        """Core NATS, fire-and-forget: nothing is replayed and a failing handler is only logged."""
        self._subscriptions.append((subject, handler))
        if self._nc is not None:
            self._spawn(self._subscribe_core(subject, handler))

    def subscribe_durable(self, subject: str, durable: str, handler: DurableHandler, *, database: Database,
                          ack_wait_s: float = 30.0, max_deliver: int = 10_000, batch: int = 50,
                          only_new: bool = False, inactive_threshold_s: float | None = None) -> None:
        """A durable pull consumer named `durable` over `subject`, each event applied once in `database`.

        Durable names are global per stream: start them with the service name (`portfolio-manager-fills`);
        replicas of one service share the name and split the work. A brand-new durable reads the history
        the stream still keeps, unless `only_new` (fixed when the durable is first created).
        `inactive_threshold_s` lets the server delete the durable after that long without a client
        (tests, whose durables are unique per run, set it; a deployment's durables stay).
        """
        spec = stream_for(subject)
        if spec is None:
            raise ValueError(f"{subject!r} falls in no JetStream stream; see aitrading.streams.STREAMS")
        if not _DURABLE_NAME.fullmatch(durable):
            raise ValueError(f"durable name {durable!r} must be letters, digits, '-' or '_'")
        consumer = DurableConsumer(spec, subject, durable, handler, database, ack_wait_s=ack_wait_s,
                                   max_deliver=max_deliver, batch=batch, only_new=only_new,
                                   inactive_threshold_s=inactive_threshold_s)
        self._consumers.append(consumer)
        if self._js is not None:
            consumer.start(self._js)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise Unavailable("the event bus is not started")
        return self._js

    async def _subscribe_core(self, subject: str, handler: Handler) -> None:
        async def deliver(msg: Msg) -> None:
            try:
                event = Event.from_bytes(msg.data)
            except ValueError as exc:
                self._log.warning("unparseable message ignored", nats_subject=msg.subject,
                                  error=str(exc)[:300])
                return
            token = request_id_var.set(event.request_id)
            try:
                await handler(event)
            except Exception:  # fire-and-forget: nothing to retry, so log with context and move on
                self._log.exception("event handler failed", nats_subject=msg.subject, event_id=str(event.id),
                                    event_type=event.type)
            finally:
                request_id_var.reset(token)

        assert self._nc is not None
        await self._nc.subscribe(subject, cb=deliver)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_reconnect(self) -> None:
        # The server may have lost its store (a fresh container): put streams back, then consumers.
        try:
            await self.ensure_streams()
        except (nats.errors.Error, TimeoutError) as exc:
            self._log.warning("could not ensure streams after reconnect", error=repr(exc))
        for consumer in self._consumers:
            consumer.rebind()

    async def _on_error(self, exc: Exception) -> None:
        if self._nc is not None and self._nc.is_reconnecting:
            self._log.debug("nats reconnect attempt failed", error=repr(exc))  # once a second in an outage
        else:
            self._log.warning("nats error", error=repr(exc))

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._log.warning("nats disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        self._log.info("nats reconnected")
        self._spawn(self._after_reconnect())

    async def _on_closed(self) -> None:
        self._log.info("nats connection closed")


class _StopRequested(Exception):
    """Raised inside a consumer task instead of starting a wait once stop() was asked."""


class DurableConsumer:
    """One durable pull consumer; created by EventBus.subscribe_durable."""

    def __init__(self, spec: StreamSpec, subject: str, durable: str, handler: DurableHandler,
                 database: Database, *, ack_wait_s: float, max_deliver: int, batch: int,
                 only_new: bool = False, inactive_threshold_s: float | None = None) -> None:
        self.spec, self.subject, self.durable = spec, subject, durable
        self.handler, self.database = handler, database
        self.ack_wait_s, self.max_deliver, self.batch = ack_wait_s, max_deliver, batch
        self.only_new = only_new
        self.inactive_threshold_s = inactive_threshold_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting = False  # parked in a fetch or a back-off sleep: safe to cancel
        self._rebind = False
        self._log = _log.bind(consumer=durable, subject=subject, stream=spec.name)

    def config(self) -> ConsumerConfig:
        # By default a new durable starts from the oldest kept message: events published before it existed
        # (a service deployed after its producers) are not lost.
        return ConsumerConfig(
            name=self.durable, durable_name=self.durable, filter_subject=self.subject,
            deliver_policy=DeliverPolicy.NEW if self.only_new else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver, max_ack_pending=1000,
            inactive_threshold=self.inactive_threshold_s,
        )

    def start(self, js: JetStreamContext) -> None:
        self._stopping, self._rebind = False, False
        self._task = asyncio.get_running_loop().create_task(self._run(js), name=f"consumer:{self.durable}")
        self._task.add_done_callback(self._on_done)

    @property
    def died(self) -> bool:
        return self._task is not None and self._task.done() and not self._task.cancelled() \
            and self._task.exception() is not None

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error("durable consumer stopped unexpectedly", exc_info=task.exception())

    def rebind(self) -> None:
        self._rebind = True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if self._waiting:
            task.cancel()
        await asyncio.wait([task])

    async def _run(self, js: JetStreamContext) -> None:
        failures = 0
        with contextlib.suppress(_StopRequested):
            while not self._stopping:
                try:
                    await ensure_stream(js, self.spec)
                    await js.add_consumer(self.spec.name, config=self.config())
                    sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.spec.name)
                except (nats.errors.Error, TimeoutError) as exc:
                    failures += 1
                    self._log.warning("cannot bind consumer; retrying", error=repr(exc),
                                      retry_in_s=retry_delay(failures))
                    await self._wait(asyncio.sleep(retry_delay(failures)))
                    continue
                failures = 0
                try:
                    await self._pump(sub)
                except (nats.errors.Error, TimeoutError) as exc:
                    self._log.warning("consumer lost its subscription; rebinding", error=repr(exc))
                    await self._wait(asyncio.sleep(RETRY_BASE_S))
                finally:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()

    async def _wait(self, waiting: Coroutine[Any, Any, T]) -> T:
        if self._stopping:
            waiting.close()
            raise _StopRequested
        self._waiting = True
        try:
            return await waiting
        finally:
            self._waiting = False

    async def _pump(self, sub: JetStreamContext.PullSubscription) -> None:
        self._rebind = False
        while not self._rebind:
            try:
                msgs = await self._wait(sub.fetch(self.batch, timeout=FETCH_TIMEOUT_S))
            except TimeoutError:
                continue
            fetched_at = time.monotonic()
            for msg in msgs:
                if self._stopping:  # hand the rest of the batch back for immediate redelivery
                    await self._answer(msg.nak())
                    continue
                if time.monotonic() - fetched_at > self.ack_wait_s / 3:
                    await self._answer(msg.in_progress())
                await self._process(msg)

    async def _process(self, msg: Msg) -> None:
        try:
            event = Event.from_bytes(msg.data)
        except ValueError as exc:
            self._log.error("unparseable message terminated", nats_subject=msg.subject, error=str(exc)[:300])
            await self._answer(msg.term())
            return
        delivery = msg.metadata.num_delivered or 1
        log = self._log.bind(event_id=str(event.id), event_type=event.type, delivery=delivery)
        token = request_id_var.set(event.request_id)
        try:
            applied = await self._apply(event)
        except Exception:  # any handler failure: rolled back, logged, retried later with back-off
            log.exception("event handler failed; redelivery scheduled", retry_in_s=retry_delay(delivery))
            await self._answer(msg.nak(delay=retry_delay(delivery)))
            return
        finally:
            request_id_var.reset(token)
        if not applied:
            log.info("event already applied; acknowledged again")
        await self._answer(msg.ack())

    async def _apply(self, event: Event) -> bool:
        """Run the handler and record the event id in one transaction; False when it was already applied."""
        async with self.database.sessionmaker() as session, session.begin():
            claimed = await session.execute(
                pg_insert(processed_events).values(consumer=self.durable, event_id=event.id)
                .on_conflict_do_nothing().returning(processed_events.c.event_id))
            if claimed.first() is None:
                return False
            await self.handler(session, event)
        return True

    async def _answer(self, reply: Coroutine[Any, Any, None]) -> None:
        try:
            await reply
        except nats.errors.Error as exc:
            # Not acknowledged: NATS redelivers after ack_wait and the ledger makes that a no-op.
            self._log.warning("could not answer NATS for a message", error=repr(exc))
