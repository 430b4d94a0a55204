"""The service factory: every service is `create_service(settings, routers=[...], ...)`.

It gives each service the same edges: `/health` (liveness, no I/O), `/ready` (its own dependencies),
`/metrics` (Prometheus), `/info`, request ids, access logs, problem+json errors, the platform
components on `app.state` (settings, db, bus, cache, client, verifier, metrics), a heartbeat to
central-hub on NATS, and a graceful shutdown that stops taking traffic and drains in-flight requests
before the components close.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from aitrading.auth import JwksVerifier
from aitrading.cache import make_cache
from aitrading.client import ServiceClient
from aitrading.db import Database
from aitrading.errors import install_error_handlers
from aitrading.events import Event, EventBus
from aitrading.logging import configure_logging
from aitrading.metrics import CONTENT_TYPE, ServiceMetrics
from aitrading.middleware import InFlight, RequestContextMiddleware
from aitrading.outbox import OutboxRelay
from aitrading.registry import REGISTRY, service_url
from aitrading.settings import ServiceSettings

_log = structlog.get_logger("aitrading.service")
Hook = Callable[[FastAPI], Awaitable[None]]
Configure = Callable[[FastAPI], None]


class Resource(Protocol):
    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> None: ...


def jwks_url(settings: ServiceSettings) -> str:
    return settings.jwks_url or service_url("user-service", settings.service_urls) + "/.well-known/jwks.json"


def create_service(
    settings: ServiceSettings,
    *,
    routers: Sequence[APIRouter] = (),
    migrations: Path | None = None,
    database: bool = True,
    bus: bool = True,
    outbox: bool = False,
    resources: Sequence[Resource] = (),
    configure: Sequence[Configure] = (),
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    description: str = "",
    heartbeat: bool = True,
    app_class: type[FastAPI] = FastAPI,
    verifier: JwksVerifier | None = None,
) -> FastAPI:
    """Build a service app.

    `configure` hooks run once the components exist and before they start (register durable
    consumers there); `on_startup` hooks run after everything started; `on_shutdown` before it stops.
    `app_class` lets a service put raw ASGI in front of FastAPI (the gateway's proxy does);
    `verifier` replaces the JWKS verifier built from settings (user-service verifies its own keys
    in-process).
    """
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    metrics = ServiceMetrics(settings.service_name)
    inflight = InFlight()
    components: list[Resource] = []

    db = Database(settings.database_url, settings.db_schema, migrations=migrations,
                  pool_size=settings.database_pool_size) if database else None
    event_bus = EventBus(settings.nats_url, source=settings.service_name) if bus else None
    cache = make_cache(settings.redis_url, namespace=settings.service_name)
    client = ServiceClient(overrides=settings.service_urls)
    if verifier is None:
        verifier = JwksVerifier(jwks_url(settings), issuer=settings.jwt_issuer,
                                audience=settings.jwt_audience)
    if db is not None:
        components.append(db)
    if event_bus is not None:
        components.append(event_bus)
    if outbox:
        if db is None or event_bus is None:
            raise ValueError("the outbox needs both the database and the event bus")
        components.append(OutboxRelay(db, event_bus))
    components.extend([cache, client, verifier, *resources])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in configure:
            hook(app)
        started: list[Resource] = []
        beat: asyncio.Task[None] | None = None
        stop_beating = asyncio.Event()
        try:
            for component in components:
                await component.start()
                started.append(component)
            for startup in on_startup:
                await startup(app)
            if heartbeat and event_bus is not None:
                beat = asyncio.create_task(_heartbeat(app, event_bus, stop_beating), name="heartbeat")
            _log.info("service started", port=settings.listen_port, version=settings.version)
            yield
        finally:
            inflight.draining = True
            await _drain(inflight, settings.shutdown_grace_s)
            if beat is not None:
                # Stopped, not cancelled: a publish cancelled mid-flush leaves nats-py waiting on a
                # pong that never resolves, which would stall the goodbye below.
                stop_beating.set()
                await beat
                if event_bus is not None and event_bus.connected:
                    with suppress(Exception):
                        await event_bus.publish(_fleet_event(app, "fleet.stopped"))
            for shutdown in on_shutdown:
                await shutdown(app)
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    _log.exception("component failed to stop", component=component.name)
            _log.info("service stopped")

    spec = REGISTRY.get(settings.service_name)
    app = app_class(
        title=settings.service_name,
        version=settings.version,
        description=description or (spec.summary if spec else ""),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.db = db
    app.state.bus = event_bus
    app.state.cache = cache
    app.state.client = client
    app.state.verifier = verifier
    app.state.inflight = inflight
    app.state.components = components
    app.state.instance_id = uuid.uuid4().hex[:12]
    app.state.started_at = datetime.now(UTC)
    app.state.started_monotonic = time.monotonic()

    install_error_handlers(app)
    _install_probes(app, settings, components, inflight, metrics)
    for router in routers:
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"], expose_headers=["X-Request-ID"])
    app.add_middleware(RequestContextMiddleware, metrics=metrics, inflight=inflight)
    return app


async def check_components(components: Sequence[Resource], timeout_s: float = 2.0) -> dict[str, str]:
    async def one(component: Resource) -> tuple[str, str]:
        try:
            await asyncio.wait_for(component.check(), timeout=timeout_s)
            return component.name, "ok"
        except TimeoutError:
            return component.name, "timeout"
        except Exception as exc:
            return component.name, f"failing: {exc.__class__.__name__}: {exc}"[:300]

    return dict(await asyncio.gather(*(one(c) for c in components)))


def _install_probes(app: FastAPI, settings: ServiceSettings, components: Sequence[Resource],
                    inflight: InFlight, metrics: ServiceMetrics) -> None:
    probes = APIRouter(tags=["probes"])

    @probes.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name, "version": settings.version}

    @probes.get("/ready")
    async def ready() -> JSONResponse:
        checks = await check_components(components)
        failing = {name: state for name, state in checks.items() if state != "ok"}
        if inflight.draining:
            failing["service"] = "draining"
        status = 503 if failing else 200
        body = {"status": "unavailable" if failing else "ready", "service": settings.service_name,
                "checks": checks, "failing": failing}
        return JSONResponse(body, status_code=status)

    @probes.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @probes.get("/info")
    async def info() -> dict[str, Any]:
        checks = await check_components(components)
        spec = REGISTRY.get(settings.service_name)
        return {
            "name": settings.service_name,
            "version": settings.version,
            "environment": settings.environment,
            "instance": app.state.instance_id,
            "started_at": app.state.started_at.isoformat(),
            "uptime_s": round(time.monotonic() - app.state.started_monotonic, 3),
            "dependencies": {
                "services": list(spec.depends_on) if spec else [],
                "components": checks,
            },
        }

    app.include_router(probes)


async def _drain(inflight: InFlight, grace_s: float) -> None:
    if not await inflight.wait_idle(grace_s):
        _log.warning("shutdown grace elapsed with requests in flight", in_flight=inflight.count)


def _fleet_event(app: FastAPI, kind: str) -> Event:
    settings: ServiceSettings = app.state.settings
    data = {
        "service": settings.service_name,
        "version": settings.version,
        "instance": app.state.instance_id,
        "host": socket.gethostname(),
        "port": settings.listen_port,
        "pid": os.getpid(),
        "started_at": app.state.started_at.isoformat(),
        "in_flight": app.state.inflight.count,
    }
    return Event.new(kind, f"{kind}.{settings.service_name}", data, source=settings.service_name)


async def _heartbeat(app: FastAPI, bus: EventBus, stop: asyncio.Event) -> None:
    interval = app.state.settings.heartbeat_interval_s
    while not stop.is_set():
        if bus.connected:
            try:
                await bus.publish(_fleet_event(app, "fleet.heartbeat"))
            except Exception as exc:  # a missed beat is harmless; the next one follows
                _log.warning("heartbeat not sent", error=repr(exc))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def run(app: FastAPI) -> None:
    """Serve an app built by `create_service` on its registry port (used by each service's __main__)."""
    settings: ServiceSettings = app.state.settings
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        loop="uvloop",
        http="httptools",
    )


def from_state(attribute: str) -> Callable[[Request], Any]:
    """A dependency giving `app.state.<attribute>`: `Annotated[Thing, Depends(from_state("thing"))]`."""

    def dependency(request: Request) -> Any:
        return getattr(request.app.state, attribute)

    dependency.__name__ = f"app_state_{attribute}"
    return dependency
