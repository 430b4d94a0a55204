"""feature-engineering under test: the real app on PostgreSQL and NATS, the real database-service app
served in-process (chDB in a folder per module, the bundled SPX history), and the shared JWKS issuer.

user-service's side of the service-token protocol (`POST /internal/service-token`) is answered by the
shared test issuer, whose JWKS every app here trusts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from database_service.main import create_app as create_database_service
from database_service.settings import Settings as DatabaseServiceSettings
from fastapi import FastAPI
from feature_engineering.main import create_app
from feature_engineering.settings import Settings

from aitrading.streams import MARKET
from aitrading.testing import (
    TokenIssuer,
    durable_bound,
    remove_traces,
    running_app,
    serve_app,
    shared_warehouse_dir,
)


def unique_symbol(prefix: str = "T") -> str:
    return f"{prefix}{uuid4().hex[:8].upper()}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def database_service_url(tmp_path_factory: pytest.TempPathFactory, database_url: str, nats_url: str,
                               token_issuer: TokenIssuer) -> AsyncIterator[str]:
    """The real database-service on a real socket, with the bundled SPX and NDX history loaded."""
    settings = DatabaseServiceSettings(
        database_url=database_url, nats_url=nats_url, jwks_url=token_issuer.jwks_url,
        data_dir=shared_warehouse_dir(tmp_path_factory), heartbeat_interval_s=60,
        shutdown_grace_s=1, ingest_enabled=False, durable_prefix=f"dbs-fe-{uuid4().hex[:10]}")
    async with serve_app(create_database_service(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def make_settings(database_url: str, nats_url: str, token_issuer: TokenIssuer, database_service_url: str,
                  ) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "nats_url": nats_url, "jwks_url": token_issuer.jwks_url,
            "service_urls": {"database-service": database_service_url, "user-service": token_issuer.url},
            "service_client_secret": token_issuer.service_secret,
            "durable_prefix": f"fe-test-{uuid4().hex[:10]}",
            # Streamed sets of every user shape the streaming set: a schema per app keeps runs apart.
            "database_schema": f"fe_test_{uuid4().hex[:12]}",
            # Each module streams only its own symbols, not the bars other suites publish meanwhile.
            "stream_subject": f"md.bar.*.{unique_symbol('NONE')}",
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
            await _consumer_bound(settings)
            yield app, client
    finally:
        await _remove_traces(settings)


async def _consumer_bound(settings: Settings) -> None:
    """Wait until the durable over md.bar exists: it only sees bars published after that."""
    await durable_bound(settings.nats_url, MARKET.name, f"{settings.durable_prefix}-bars")


async def _remove_traces(settings: Settings) -> None:
    """Drop the app's schema and its durable, so test runs leave nothing behind."""
    await remove_traces(settings.database_url, settings.db_schema, settings.nats_url,
                        [(MARKET.name, f"{settings.durable_prefix}-bars")])


@pytest.fixture(scope="module")
def app(app_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_client[0]


@pytest.fixture(scope="module")
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


@pytest.fixture(scope="module")
def user_id() -> UUID:
    return uuid4()


@pytest.fixture(scope="module")
def user_headers(token_issuer: TokenIssuer, user_id: UUID) -> dict[str, str]:
    return bearer(token_issuer.token(sub=user_id))


@pytest.fixture(scope="module")
def other_headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return bearer(token_issuer.token(sub=uuid4()))


@pytest.fixture(scope="module")
def admin_headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return bearer(token_issuer.token(roles=("user", "admin")))


@pytest.fixture(scope="module")
def database_service(database_service_url: str) -> Callable[[], httpx.AsyncClient]:
    """A client of database-service itself: importing bars, reading the bars the features came from."""
    return lambda: httpx.AsyncClient(base_url=database_service_url, timeout=30)
