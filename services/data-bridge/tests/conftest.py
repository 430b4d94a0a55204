"""Fixtures of data-bridge: apps on real PostgreSQL (a schema per app) and NATS, a JWKS issuer, and a
NATS listener for what the apps publish.

Other suites share the NATS server and the database, so every test uses its own symbols, its own
schema (dropped afterwards) and no default feeds unless it asks for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
import nats
import pytest
import sqlalchemy as sa
from data_bridge.main import create_app
from data_bridge.settings import Settings
from fastapi import FastAPI
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import create_async_engine

from aitrading.db import to_async_url
from aitrading.events import Event
from aitrading.testing import TokenIssuer, serve_app


def new_symbol(prefix: str = "T") -> str:
    return f"{prefix}{uuid4().hex[:8].upper()}"


@pytest.fixture
def symbol() -> Callable[..., str]:
    """A fresh symbol per call (`symbol()`, `symbol("SYN-")`): other suites share the NATS server."""
    return new_symbol


@dataclass
class RunningBridge:
    app: FastAPI
    url: str
    client: httpx.AsyncClient  # signed in as an admin
    settings: Settings

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]


SettingsFactory = Callable[..., Settings]
BridgeFactory = Callable[..., AbstractAsyncContextManager[RunningBridge]]


@pytest.fixture
def make_settings(database_url: str, nats_url: str, token_issuer: TokenIssuer) -> SettingsFactory:
    """Settings of a test app: its own schema, no default feeds, fast flushes, no Redis unless asked."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "nats_url": nats_url, "jwks_url": token_issuer.jwks_url,
            "database_schema": f"data_bridge_t{uuid4().hex[:10]}",
            "default_feeds": [], "redis_url": None, "heartbeat_interval_s": 60, "shutdown_grace_s": 1,
            "tick_flush_ms": 20, "feed_claim_interval_s": 0.5, "log_json": False, "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
async def bridge(make_settings: SettingsFactory, token_issuer: TokenIssuer,
                 database_url: str) -> AsyncIterator[BridgeFactory]:
    """Start data-bridge apps over real HTTP: `async with bridge(**settings) as running:`.

    Schemas of the apps are dropped when the test ends.
    """
    schemas: set[str] = set()

    @asynccontextmanager
    async def start(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[RunningBridge]:
        settings = settings or make_settings(**overrides)
        schemas.add(settings.db_schema)
        app = create_app(settings)
        headers = {"Authorization": f"Bearer {token_issuer.token(roles=('user', 'admin'))}"}
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=headers) as client:
            yield RunningBridge(app, url, client, settings)

    yield start
    engine = create_async_engine(to_async_url(database_url))
    try:
        async with engine.begin() as conn:
            for schema in schemas:
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


@dataclass
class Listener:
    """Events received on a NATS subject filter (core subscription), in arrival order."""

    events: list[Event] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, done: Callable[[list[Event]], bool], timeout_s: float = 10.0) -> list[Event]:
        async def until() -> None:
            while not done(self.events):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), timeout_s)
        return self.events


ListenerFactory = Callable[[str], AbstractAsyncContextManager[Listener]]


@pytest.fixture
def listen(nats_url: str) -> ListenerFactory:
    @asynccontextmanager
    async def subscribe(subject: str) -> AsyncIterator[Listener]:
        listener = Listener()
        nc = await nats.connect(nats_url)

        async def received(msg: Msg) -> None:
            listener.events.append(Event.from_bytes(msg.data))
            listener.arrived.set()

        try:
            await nc.subscribe(subject, cb=received)
            await nc.flush()
            yield listener
        finally:
            await nc.close()

    return subscribe


