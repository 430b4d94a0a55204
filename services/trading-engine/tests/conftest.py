"""trading-engine under test: the real app on PostgreSQL (a schema per app) and NATS, with the real
database-service (chDB, the bundled SPX history) and data-bridge (no feeds) served in-process for
prices, and the shared JWKS issuer.

user-service's side of the service-token protocol is answered by the shared test issuer. Other suites
share NATS and PostgreSQL, so every app has its own schema and durable prefix, and tests publish and
subscribe on their own symbols only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import nats
import pytest
from data_bridge.main import create_app as create_data_bridge
from data_bridge.settings import Settings as DataBridgeSettings
from database_service.main import create_app as create_database_service
from database_service.settings import Settings as DatabaseServiceSettings
from fastapi import FastAPI
from nats.aio.msg import Msg
from trading_engine.main import create_app
from trading_engine.settings import Settings

from aitrading.events import Event
from aitrading.market.prices import PriceQuote
from aitrading.streams import MARKET
from aitrading.testing import TokenIssuer, durable_bound, running_app, serve_app, shared_warehouse_dir
from aitrading.testing import remove_traces as remove_app_traces

Headers = dict[str, str]


def unique_symbol(prefix: str = "T") -> str:
    return f"{prefix}{uuid4().hex[:8].upper()}"


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
async def database_service_url(tmp_path_factory: pytest.TempPathFactory, database_url: str, nats_url: str,
                               token_issuer: TokenIssuer) -> AsyncIterator[str]:
    """The real database-service on a real socket, with the bundled SPX and NDX history loaded."""
    settings = DatabaseServiceSettings(
        database_url=database_url, nats_url=nats_url, jwks_url=token_issuer.jwks_url,
        data_dir=shared_warehouse_dir(tmp_path_factory), heartbeat_interval_s=60,
        shutdown_grace_s=1, ingest_enabled=False, durable_prefix=f"dbs-te-{uuid4().hex[:10]}")
    async with serve_app(create_database_service(settings)) as url:
        yield url


@pytest.fixture(scope="session")
async def data_bridge_url(database_url: str, nats_url: str, token_issuer: TokenIssuer,
                          database_service_url: str) -> AsyncIterator[str]:
    """The real data-bridge with no feeds: it knows no live quote, so prices fall back to stored closes."""
    settings = DataBridgeSettings(
        database_url=database_url, nats_url=nats_url, jwks_url=token_issuer.jwks_url,
        database_schema=f"data_bridge_te{uuid4().hex[:10]}", default_feeds=[], redis_url=None,
        heartbeat_interval_s=60, shutdown_grace_s=1,
        service_urls={"database-service": database_service_url, "user-service": token_issuer.url},
        service_client_secret=token_issuer.service_secret)
    try:
        async with serve_app(create_data_bridge(settings)) as url:
            yield url
    finally:
        await remove_app_traces(database_url, settings.db_schema, nats_url)


@pytest.fixture(scope="session")
def make_settings(database_url: str, nats_url: str, token_issuer: TokenIssuer, database_service_url: str,
                  data_bridge_url: str) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "nats_url": nats_url, "jwks_url": token_issuer.jwks_url,
            "service_urls": {"database-service": database_service_url, "data-bridge": data_bridge_url,
                             "user-service": token_issuer.url},
            "service_client_secret": token_issuer.service_secret,
            "durable_prefix": f"te-test-{uuid4().hex[:10]}",
            "database_schema": f"te_test_{uuid4().hex[:12]}",
            # Prices are driven by the tests (and the strategy runner), not by what other suites publish.
            "follow_prices": False,
            # Each app runs strategies on its own symbols only.
            "strategy_subject": f"md.bar.*.{unique_symbol('NONE')}",
            "paper_refresh_interval_s": 0.5,
            "reconcile_interval_s": 0.5,
            "heartbeat_interval_s": 60, "shutdown_grace_s": 1,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@asynccontextmanager
async def engine_app(settings: Settings, *,
                     drop: bool = True) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Run one engine app; its schema and durable are removed afterwards unless `drop` is False."""
    app = create_app(settings)
    try:
        async with running_app(app) as client:
            if settings.strategies_enabled:
                await consumer_bound(settings)
            yield app, client
    finally:
        if drop:
            await remove_traces(settings)


async def consumer_bound(settings: Settings) -> None:
    """Wait until the strategy durable exists: it only sees bars published after that."""
    await durable_bound(settings.nats_url, MARKET.name, f"{settings.durable_prefix}-strategy-bars")


async def remove_traces(settings: Settings) -> None:
    await remove_app_traces(settings.database_url, settings.db_schema, settings.nats_url,
                            [(MARKET.name, f"{settings.durable_prefix}-strategy-bars")])


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="module")
async def app_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with engine_app(settings) as running:
        yield running


@pytest.fixture(scope="module")
def app(app_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_client[0]


@pytest.fixture(scope="module")
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


@pytest.fixture
def new_user(token_issuer: TokenIssuer) -> Callable[[], tuple[UUID, Headers]]:
    """A fresh user per call: each test trades on its own account (limits, rate window, positions)."""
    def make() -> tuple[UUID, Headers]:
        user = uuid4()
        return user, bearer(token_issuer.token(sub=user))

    return make


@pytest.fixture
def user_headers(new_user: Callable[[], tuple[UUID, Headers]]) -> Headers:
    return new_user()[1]


@pytest.fixture(scope="module")
def admin_headers(token_issuer: TokenIssuer) -> Headers:
    return bearer(token_issuer.token(roles=("user", "admin")))


@pytest.fixture(scope="session")
def database_service(database_service_url: str) -> Callable[[], httpx.AsyncClient]:
    """A client of database-service itself: importing bars, reading the stored ones."""
    return lambda: httpx.AsyncClient(base_url=database_service_url, timeout=30)


async def set_price(app: FastAPI, symbol: str, price: str | Decimal, *, bid: str | None = None,
                    ask: str | None = None) -> None:
    """A live quote for `symbol`, as if a tick had arrived on md.tick."""
    await app.state.prices.update(PriceQuote(symbol, Decimal(price), datetime.now(UTC),
                                             None if bid is None else Decimal(bid),
                                             None if ask is None else Decimal(ask)))


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


@pytest.fixture
def listen(nats_url: str) -> Callable[[str], AbstractAsyncContextManager[Listener]]:
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


def assert_problem(response: httpx.Response, status: int, *, field: str | None = None,
                   rule: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    if rule is not None:
        assert body.get("rule") == rule, body
    return body
