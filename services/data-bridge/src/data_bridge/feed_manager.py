"""Starting, stopping and listing feeds; each runs as an asyncio task with a status and counters.

Definitions and the desired state live in Postgres, so running feeds come back after a restart. One
instance runs each feed: the one holding the feed's advisory lock (feed_ownership). Every
`feed_claim_interval_s` the manager takes the feeds nobody runs, stops the ones someone stopped or
deleted through another replica, and saves status and counters of its own. WebSocket ingest
connections appear here too, as transient feeds (kind "ingest") while they are connected.

Statuses: starting → running → finished (a replay reached its end) | failed (with the error) |
stopped (someone stopped it). A finished or failed feed stays so until started again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from aitrading.db import Database
from aitrading.errors import Invalid, NotFound
from data_bridge import store
from data_bridge.feed_ownership import FeedLocks
from data_bridge.feeds import Feed, FeedContext, FeedCounters, FeedDeps
from data_bridge.normalization import canonical_symbol
from data_bridge.pipeline import Pipeline
from data_bridge.settings import Settings

_log = structlog.get_logger("data_bridge.feed_manager")

MAX_SYMBOLS = 200
INGEST = "ingest"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runner:
    """A feed running in this instance."""

    feed: Feed
    context: FeedContext
    params: dict[str, Any]
    created_at: datetime
    status: str = "starting"
    error: str | None = None
    started_at: datetime = field(default_factory=_now)
    task: asyncio.Task[None] | None = None
    stopping: bool = False


@dataclass(frozen=True)
class FeedSpec:
    """A validated feed definition."""

    kind: type[Feed]
    symbols: list[str]
    params: BaseModel

    @property
    def venue(self) -> str:
        return self.kind.venue_for(self.params)


def validate(kinds: Mapping[str, type[Feed]], kind: str, symbols: Sequence[Any],
             params: Mapping[str, Any] | None) -> FeedSpec:
    """The definition as a feed will run it, or a 422 naming each bad field."""
    feed_class = kinds.get(kind)
    if feed_class is None:
        accepted = ", ".join(sorted(kinds))
        raise Invalid(f"unknown feed kind {kind!r}; use one of {accepted}",
                      errors=[{"field": "kind", "reason": f"must be one of {accepted}"}])
    if not symbols:
        raise Invalid("a feed needs at least one symbol", errors=[{"field": "symbols", "reason": "empty"}])
    if len(symbols) > MAX_SYMBOLS:
        raise Invalid(f"a feed takes at most {MAX_SYMBOLS} symbols",
                      errors=[{"field": "symbols", "reason": f"more than {MAX_SYMBOLS}"}])
    canonical = [canonical_symbol(s, field=f"symbols.{i}") for i, s in enumerate(symbols)]
    if len(set(canonical)) != len(canonical):
        raise Invalid("a symbol is listed twice", errors=[{"field": "symbols", "reason": "duplicates"}])
    try:
        model = feed_class.Params.model_validate(dict(params or {}))
    except ValidationError as exc:
        errors = [{"field": ".".join(["params", *(str(p) for p in err["loc"])]), "reason": err["msg"]}
                  for err in exc.errors()]
        raise Invalid("; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors) from None
    feed_class.check(canonical, model)
    return FeedSpec(feed_class, canonical, model)


class FeedManager:
    name = "feeds"

    def __init__(self, db: Database, pipeline: Pipeline, deps: FeedDeps, settings: Settings,
                 kinds: Mapping[str, type[Feed]]) -> None:
        self.db = db
        self.pipeline = pipeline
        self.deps = deps
        self.settings = settings
        self.kinds = kinds
        self._running: dict[UUID, Runner] = {}
        self._transient: dict[UUID, tuple[FeedContext, datetime]] = {}
        self.locks = FeedLocks(db)
        self._loop: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._seed_defaults()
        await self.reconcile()
        self._loop = asyncio.create_task(self._reconcile_forever(), name="feed-reconcile")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        # Shutdown leaves the desired state alone: these feeds start again with the next instance, their
        # counters carrying on from here.
        runners = list(self._running.values())
        await asyncio.gather(*(self._halt(runner, status=None) for runner in runners))
        for runner in runners:
            context = runner.context
            await self._save(context.id, runner.status, runner.error, context.counters.as_json())
        await self.locks.close()

    async def check(self) -> None:
        """The database reports its own health; the lock connection is checked every round."""

    def active(self) -> Iterable[FeedContext]:
        """Contexts of feeds that should be delivering data now (for the stale check)."""
        for runner in self._running.values():
            if runner.status == "running":
                yield runner.context
        for context, _ in self._transient.values():
            yield context

    # --- commands -----------------------------------------------------------------------------------

    async def create(self, kind: str, symbols: Sequence[Any],
                     params: Mapping[str, Any] | None) -> dict[str, Any]:
        spec = validate(self.kinds, kind, symbols, params)
        feed_id = uuid4()
        async with self.db.sessionmaker() as session, session.begin():
            row = await store.insert_feed(session, id=feed_id, kind=spec.kind.kind, venue=spec.venue,
                                          symbols=spec.symbols, params=spec.params.model_dump(mode="json"),
                                          synthetic=spec.kind.synthetic, now=_now())
        await self._claim(row)
        return await self.get_feed(feed_id)

    async def list_feeds(self) -> list[dict[str, Any]]:
        async with self.db.sessionmaker() as session:
            rows = await store.all_feeds(session)
        views = [self._view(row) for row in rows]
        views.extend(self._transient_view(context, since) for context, since in self._transient.values())
        return views

    async def get_feed(self, feed_id: UUID) -> dict[str, Any]:
        transient = self._transient.get(feed_id)
        if transient is not None:
            return self._transient_view(*transient)
        async with self.db.sessionmaker() as session:
            row = await store.feed_by_id(session, feed_id)
        if row is None:
            raise NotFound(f"no feed {feed_id}")
        return self._view(row)

    async def stop_feed(self, feed_id: UUID) -> dict[str, Any]:
        self._refuse_transient(feed_id)
        async with self.db.sessionmaker() as session, session.begin():
            row = await store.set_desired(session, feed_id, "stopped", "stopped", _now())
        if row is None:
            raise NotFound(f"no feed {feed_id}")
        runner = self._running.get(feed_id)
        if runner is not None:
            await self._halt(runner, status="stopped")
        return await self.get_feed(feed_id)

    async def start_feed(self, feed_id: UUID) -> dict[str, Any]:
        self._refuse_transient(feed_id)
        if feed_id in self._running:  # already running here
            return await self.get_feed(feed_id)
        async with self.db.sessionmaker() as session, session.begin():
            row = await store.set_desired(session, feed_id, "running", "starting", _now())
        if row is None:
            raise NotFound(f"no feed {feed_id}")
        await self._claim(row)  # here, unless another instance still runs it
        return await self.get_feed(feed_id)

    async def delete(self, feed_id: UUID) -> None:
        self._refuse_transient(feed_id)
        async with self.db.sessionmaker() as session, session.begin():
            found = await store.delete_feed(session, feed_id)
        if not found:
            raise NotFound(f"no feed {feed_id}")
        runner = self._running.get(feed_id)
        if runner is not None:
            await self._halt(runner, status="stopped")

    # --- ingest connections -------------------------------------------------------------------------

    def open_transient(self, venue: str) -> FeedContext:
        context = FeedContext(id=uuid4(), kind=INGEST, venue=venue, symbols=[], synthetic=False,
                              counters=FeedCounters(), live=True)
        self._transient[context.id] = (context, _now())
        self.pipeline.started(context)
        return context

    def close_transient(self, context: FeedContext) -> None:
        self._transient.pop(context.id, None)
        self.pipeline.forget(context.id)

    def _refuse_transient(self, feed_id: UUID) -> None:
        if feed_id in self._transient:
            raise Invalid("an ingest connection is its own feed: close the connection to stop it",
                          errors=[{"field": "id", "reason": "ingest connections cannot be controlled here"}])

    # --- running feeds ------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Take unowned feeds that should run, let go of the ones that should not, save state."""
        try:
            async with self.db.sessionmaker() as session:
                wanted = {row.id: row for row in await store.feeds_to_run(session)}
            await self._ensure_ownership()
        except (SQLAlchemyError, OSError) as exc:  # the database is away: keep what runs, retry later
            _log.warning("cannot reconcile feeds", error=repr(exc))
            return
        for feed_id, runner in list(self._running.items()):
            if feed_id not in wanted and runner.status in ("starting", "running"):
                await self._halt(runner, status="stopped")
        for row in wanted.values():
            if row.id not in self._running:
                await self._claim(row)
        await self._save_all()

    async def _claim(self, row: store.Record) -> None:
        """Run the feed here if no other instance does."""
        if row.id in self._running:
            return
        try:
            spec = validate(self.kinds, row.kind, row.symbols, row.params)
        except Invalid as exc:  # stored by an older version or a kind this build lacks
            await self._save(row.id, "failed", f"cannot start: {exc.detail}", {})
            return
        if not await self._lock(row.id):
            return
        # Re-read under the lock: the last owner may have finished it between our read and our lock.
        async with self.db.sessionmaker() as session:
            current = await store.feed_by_id(session, row.id)
        if current is None or current.desired != "running" or current.status not in store.CLAIMABLE_STATUSES:
            await self._unlock(row.id)
            return
        row = current
        context = FeedContext(id=row.id, kind=row.kind, venue=spec.venue, symbols=spec.symbols,
                              synthetic=spec.kind.synthetic, counters=_counters(row.counters),
                              live=spec.kind.live)
        try:
            feed = spec.kind(context, spec.params, self.pipeline, self.deps)
        except Exception as exc:  # a feed that cannot even be built has failed; the rest run on
            error = f"cannot start: {type(exc).__name__}: {exc}"[:1000]
            _log.warning("feed failed to start", feed=str(row.id), kind=row.kind, error=error)
            await self._save(row.id, "failed", error, context.counters.as_json())
            await self._unlock(row.id)
            return
        runner = Runner(feed, context, dict(row.params), row.created_at)
        self._running[row.id] = runner
        runner.task = asyncio.create_task(self._run(runner), name=f"feed:{row.kind}:{row.id}")

    async def _run(self, runner: Runner) -> None:
        context = runner.context
        self.pipeline.started(context)
        runner.status, runner.error = "running", None
        log = _log.bind(feed=str(context.id), kind=context.kind)
        log.info("feed started", symbols=context.symbols)
        try:
            await runner.feed.run()
            runner.status = "finished"
            log.info("feed finished", ticks=context.counters.ticks, bars=context.counters.bars)
        except asyncio.CancelledError:
            if not runner.stopping:
                raise
        except Exception as exc:  # the feed gave up: record why, keep the service running
            runner.status, runner.error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
            context.counters.error(runner.error)
            log.warning("feed failed", error=runner.error)
        if runner.status in ("finished", "failed"):
            await self._save(context.id, runner.status, runner.error, context.counters.as_json())
            # Done here: let go of it (the stored status keeps it from being claimed again).
            self._running.pop(context.id, None)
            self.pipeline.forget(context.id)
            await self._unlock(context.id)

    async def _halt(self, runner: Runner, *, status: str | None) -> None:
        """Stop a runner here; `status` None leaves the stored status to the next owner."""
        feed_id = runner.context.id
        runner.stopping = True
        if runner.task is not None and not runner.task.done():
            runner.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner.task
        if status is not None:
            runner.status = status
        self._running.pop(feed_id, None)
        self.pipeline.forget(feed_id)
        if status is not None:
            await self._save(feed_id, status, runner.error, runner.context.counters.as_json())
        await self._unlock(feed_id)

    async def _save_all(self) -> None:
        for runner in list(self._running.values()):
            if runner.status in ("starting", "running"):
                await self._save(runner.context.id, runner.status, runner.error,
                                 runner.context.counters.as_json())

    async def _save(self, feed_id: UUID, status: str, error: str | None, counters: dict[str, Any]) -> None:
        try:
            async with self.db.sessionmaker() as session, session.begin():
                await store.save_state(session, feed_id, status=status, error=error, counters=counters,
                                       now=_now())
        except (SQLAlchemyError, OSError) as exc:  # state is saved again next round
            _log.warning("feed state not saved", feed=str(feed_id), error=repr(exc))

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.feed_claim_interval_s)
            try:
                await self.reconcile()
            except Exception:  # this loop is how feeds survive a replica's death: it must go on
                _log.exception("feed reconcile round failed")

    async def _seed_defaults(self) -> None:
        """First boot: create the configured default feeds (once per database, whatever replicas)."""
        async with self.db.sessionmaker() as session, session.begin():
            if not await store.claim_bootstrap(session, "default_feeds", _now()):
                return
            if await store.all_feeds(session):
                return
            for definition in self.settings.default_feeds:
                try:
                    spec = validate(self.kinds, str(definition.get("kind", "")),
                                    definition.get("symbols") or [], definition.get("params") or {})
                except Invalid as exc:
                    _log.error("default feed skipped", definition=definition, error=exc.detail,
                               errors=exc.errors)
                    continue
                await store.insert_feed(session, id=uuid4(), kind=spec.kind.kind, venue=spec.venue,
                                        symbols=spec.symbols, params=spec.params.model_dump(mode="json"),
                                        synthetic=spec.kind.synthetic, now=_now())
                _log.info("default feed created", kind=spec.kind.kind, symbols=spec.symbols)

    # --- ownership ----------------------------------------------------------------------------------

    async def _ensure_ownership(self) -> None:
        if await self.locks.ensure() and self._running:
            # Our locks went with the old connection: another instance may run these now.
            await asyncio.gather(*(self._halt(r, status=None) for r in list(self._running.values())))

    async def _lock(self, feed_id: UUID) -> bool:
        await self._ensure_ownership()
        return await self.locks.take(feed_id)

    async def _unlock(self, feed_id: UUID) -> None:
        await self.locks.release(feed_id)

    # --- views --------------------------------------------------------------------------------------

    def _view(self, row: store.Record) -> dict[str, Any]:
        runner = self._running.get(row.id)
        if runner is not None:
            status, error, counters = runner.status, runner.error, runner.context.counters.as_json()
        else:
            status, error, counters = row.status, row.error, _counters(row.counters).as_json()
        return {"id": row.id, "kind": row.kind, "venue": row.venue, "symbols": list(row.symbols),
                "params": row.params, "status": status, "error": error, "synthetic": row.synthetic,
                "desired": row.desired, "counters": counters, "created_at": row.created_at}

    @staticmethod
    def _transient_view(context: FeedContext, since: datetime) -> dict[str, Any]:
        return {"id": context.id, "kind": context.kind, "venue": context.venue,
                "symbols": list(context.symbols), "params": {}, "status": "running", "error": None,
                "synthetic": context.synthetic, "desired": "running",
                "counters": context.counters.as_json(), "created_at": since}


def _counters(saved: Mapping[str, Any] | None) -> FeedCounters:
    """Counters as last saved, so they keep counting across restarts."""
    saved = saved or {}
    last = saved.get("last_data_at")
    return FeedCounters(ticks=int(saved.get("ticks", 0)), bars=int(saved.get("bars", 0)),
                        errors=int(saved.get("errors", 0)), reconnects=int(saved.get("reconnects", 0)),
                        last_data_at=datetime.fromisoformat(last) if last else None,
                        last_error=saved.get("last_error"))
