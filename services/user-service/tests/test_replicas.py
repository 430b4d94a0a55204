"""Two replicas on one database: tokens from one verify on the other, and a lockout holds on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI
from user_service.main import create_app
from user_service.settings import Settings

PASSWORD = "Replica password 1"


@pytest.fixture(scope="module")
async def replica(settings: Settings, app_and_client: object,
                  start_app: Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]],
                  ) -> AsyncIterator[httpx.AsyncClient]:
    """A second instance of the service (started after the first, as a scaled deployment would)."""
    async with start_app(create_app(settings.model_copy())) as client:
        yield client


def credentials() -> dict[str, str]:
    return {"email": f"replica-{uuid4().hex[:12]}@example.com", "password": PASSWORD}


async def test_a_token_from_one_replica_verifies_on_the_other(committing_client: httpx.AsyncClient,
                                                              replica: httpx.AsyncClient) -> None:
    body = credentials()
    registered = await committing_client.post("/api/v1/auth/register", json=body)
    assert registered.status_code == 201
    tokens = (await committing_client.post("/api/v1/auth/login", json=body)).json()
    me = await replica.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == registered.json()["id"]
    # The refresh token rotates on the other replica too.
    renewed = await replica.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200


async def test_failures_on_one_replica_lock_the_email_on_the_other(committing_client: httpx.AsyncClient,
                                                                   replica: httpx.AsyncClient) -> None:
    body = credentials()
    for _ in range(5):
        failed = await committing_client.post("/api/v1/auth/login", json=body)
        assert failed.status_code == 401
    locked = await replica.post("/api/v1/auth/login", json=body)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
