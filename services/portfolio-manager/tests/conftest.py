"""portfolio-manager under test: the real app on PostgreSQL and NATS, the real database-service (chDB in a
temporary folder, the bundled SPX and NDX history) and data-bridge (no feeds: it answers quotes with 404,
so prices fall through to stored closes) served on real sockets, and the shared JWKS issuer.

Fills are published on NATS exactly as trading-engine publishes them (see the contract). Each app gets
its own schema and durable prefix, and consumes only the fills subjects of its module's own symbols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from data_bridge.main import create_app as create_data_bridge
from data_bridge.settings import Settings as DataBridgeSettings
from database_service.main import create_app as create_database_service
from database_service.settings import Settings as DatabaseServiceSettings
from fastapi import FastAPI
from portfolio_manager.events import durable_names
from portfolio_manager.main import create_app
from portfolio_manager.settings import Settings

from aitrading.events import Event, EventBus
from aitrading.streams import TRADING, subject_token
from aitrading.testing import TokenIssuer, running_app, serve_app, shared_warehouse_dir
from aitrading.testing import remove_traces as remove_app_traces

PublishFill = Callable[..., Awaitable[Event]]


def unique_symbol(prefix: str = "PM") -> str:
    return f"{prefix}{uuid4().hex[:8].upper()}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fill_data(*, owner: UUID, symbol: str, side: str, quantity: str, price: str, fee: str = "0",
              account: str = "paper", fill_id: UUID | None = None, time: datetime | None = None,
              liquidity: str = "taker") -> dict[str, Any]:
    """The data of a `fill` event as the contract gives it."""
    return {"id": str(fill_id or uuid4()), "order_id": str(uuid4()), "owner_id": str(owner),
            "account": account, "symbol": symbol, "side": side, "quantity": quantity, "price": price,
            "fee": fee, "liquidity": liquidity,
            "time": (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"), "strategy_id": None}


def fill_event(**kwargs: Any) -> Event:
    data = fill_data(**kwargs)
    return Event.new("fill", f"fills.{subject_token(data['symbol'])}", data, source="trading-engine")


@pytest.fixture(scope="session")
async def database_service_url(tmp_path_factory: pytest.TempPathFactory, database_url: str, nats_url: str,
                               token_issuer: TokenIssuer) -> AsyncIterator[str]:
    """The real database-service on a real socket, with the bundled SPX and NDX history loaded."""
    settings = DatabaseServiceSettings(
        database_url=database_url, nats_url=nats_url, jwks_url=token_issuer.jwks_url,
        data_dir=shared_warehouse_dir(tmp_path_factory), heartbeat_interval_s=60,
        shutdown_grace_s=1, ingest_enabled=False, durable_prefix=f"dbs-pm-{uuid4().hex[:10]}")
    async with serve_app(create_database_service(settings)) as url:
        yield url


@pytest.fixture(scope="session")
async def data_bridge_url(database_url: str, nats_url: str, token_issuer: TokenIssuer) -> AsyncIterator[str]:
    """The real data-bridge without feeds: its quote endpoint answers 404 for every symbol."""
    settings = DataBridgeSettings(
        database_url=database_url, nats_url=nats_url, jwks_url=token_issuer.jwks_url,
        database_schema=f"data_bridge_pm{uuid4().hex[:10]}", default_feeds=[], redis_url=None,
        heartbeat_interval_s=60, shutdown_grace_s=1, log_json=False, log_level="WARNING")
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
            "durable_prefix": f"pm-test-{uuid4().hex[:10]}",
            "database_schema": f"pm_test_{uuid4().hex[:12]}",
            # Each module consumes only its own symbols' fills, not what other suites publish meanwhile.
            "fills_subjects": [f"fills.{unique_symbol('NONE')}"],
            "heartbeat_interval_s": 60, "shutdown_grace_s": 1,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="module")
async def app_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    try:
        async with running_app(app) as client:
            yield app, client
    finally:
        await _remove_traces(settings)


@pytest.fixture(scope="session")
def remove_traces() -> Callable[[Settings], Awaitable[None]]:
    return _remove_traces


async def _remove_traces(settings: Settings) -> None:
    """Drop the app's schema and its durables, so test runs leave nothing behind."""
    durables = durable_names(settings.durable_prefix, settings.fills_subjects)
    await remove_app_traces(settings.database_url, settings.db_schema, settings.nats_url,
                            [(TRADING.name, durable) for _, durable in durables])


@pytest.fixture(scope="module")
def app(app_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_client[0]


@pytest.fixture(scope="module")
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


@pytest.fixture(scope="session")
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    """A publisher standing in for trading-engine (fills) and data-bridge (ticks)."""
    bus = EventBus(nats_url, source="portfolio-manager-test")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture(scope="session")
def publish_fill(bus: EventBus) -> PublishFill:
    async def publish(**kwargs: Any) -> Event:
        event = fill_event(**kwargs)
        await bus.publish(event)
        return event

    return publish


@pytest.fixture(scope="session")
def new_user(token_issuer: TokenIssuer) -> Callable[[], tuple[UUID, dict[str, str]]]:
    """A fresh user: its id and bearer headers."""

    def make() -> tuple[UUID, dict[str, str]]:
        user_id = uuid4()
        return user_id, bearer(token_issuer.token(sub=user_id))

    return make


@pytest.fixture(scope="session")
def admin_headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return bearer(token_issuer.token(roles=("user", "admin")))


@pytest.fixture(scope="session")
def database_service(database_service_url: str) -> Callable[[], httpx.AsyncClient]:
    """A client of database-service itself: importing the bars that price and allocate."""
    return lambda: httpx.AsyncClient(base_url=database_service_url, timeout=30)


@pytest.fixture(scope="session")
def import_closes(database_service: Callable[[], httpx.AsyncClient]
                  ) -> Callable[..., Awaitable[None]]:
    """Import daily bars with the given closes (one per day from 2020-01-01) as `headers`' user."""

    async def run(symbol: str, closes: list[Decimal | float | str], headers: dict[str, str],
                  first_day: datetime = datetime(2020, 1, 1, tzinfo=UTC)) -> None:
        day_ms = 86_400_000
        start_ms = int(first_day.timestamp() * 1000)
        rows = []
        for i, close in enumerate(closes):
            c = Decimal(str(close))
            moment = datetime.fromtimestamp((start_ms + i * day_ms) / 1000, UTC)
            time = moment.isoformat().replace("+00:00", "Z")
            rows.append({"time": time, "open": str(c), "high": str(c), "low": str(c), "close": str(c),
                         "volume": "1000"})
        async with database_service() as dbs:
            response = await dbs.post("/api/v1/market/import", headers=headers,
                                      json={"symbol": symbol, "timeframe": "1d", "bars": rows})
        assert response.status_code == 201, response.text

    return run
