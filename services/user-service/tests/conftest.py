"""One running user-service per test module, on real PostgreSQL and NATS; each test rolled back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from user_service.main import create_app
from user_service.settings import Settings

from aitrading.testing import rolled_back, running_app

PASSWORD = "correct horse Battery 9"
SERVICE_SECRET = "shared-service-secret-for-tests"
ADMIN_PASSWORD = "Admin password 123"


@pytest.fixture(scope="module")
def settings(database_url: str, nats_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_url,
        admin_email=f"admin-{uuid4().hex[:10]}@example.com",
        admin_password=ADMIN_PASSWORD,
        service_client_secret=SERVICE_SECRET,
        # Cheap argon2id parameters keep the suite fast; the production defaults are the library's.
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        heartbeat_interval_s=60,
        shutdown_grace_s=2,
    )


def serve(app: FastAPI) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return running_app(app)


@pytest.fixture(scope="session")
def start_app() -> Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Run another instance of the service (a replica) for the length of a block."""
    return serve


@pytest.fixture(scope="module")
async def app_and_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with serve(app) as client:
        yield app, client


@pytest.fixture(scope="module")
def app(app_and_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_and_client[0]


@pytest.fixture
async def db_session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """This test's transaction: every request of the test runs inside it, and it is rolled back."""
    async with rolled_back(app) as session:
        yield session


@pytest.fixture
async def client(app_and_client: tuple[FastAPI, httpx.AsyncClient],
                 db_session: AsyncSession) -> httpx.AsyncClient:
    return app_and_client[1]


@pytest.fixture
def committing_client(app_and_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    """The module's client without the rollback: for what must really commit (outbox events)."""
    return app_and_client[1]


def new_email() -> str:
    return f"user-{uuid4().hex[:12]}@example.com"


SignUp = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def sign_up(client: httpx.AsyncClient) -> SignUp:
    """Register a fresh user and sign in: {email, id, access_token, refresh_token, headers}."""

    async def register_and_login(email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
        email = email or new_email()
        registered = await client.post("/api/v1/auth/register", json={"email": email, "password": password})
        assert registered.status_code == 201, registered.text
        tokens = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        return {"email": email, "id": registered.json()["id"], **body,
                "headers": {"Authorization": f"Bearer {body['access_token']}"}}

    return register_and_login


@pytest.fixture
def admin_headers(client: httpx.AsyncClient, settings: Settings) -> Callable[[], Awaitable[dict[str, str]]]:
    async def sign_in_admin() -> dict[str, str]:
        response = await client.post("/api/v1/auth/login",
                                     json={"email": settings.admin_email, "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return sign_in_admin
