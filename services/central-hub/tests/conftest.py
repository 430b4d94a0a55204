"""Fixtures of central-hub: a JWKS issuer, hubs and throwaway services served over real HTTP, real NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from central_hub.main import create_app
from central_hub.settings import Settings
from fastapi import FastAPI

from aitrading.service import create_service
from aitrading.settings import ServiceSettings
from aitrading.testing import TokenIssuer, serve_app


@pytest.fixture(scope="module")
def issuer(token_issuer: TokenIssuer) -> TokenIssuer:
    return token_issuer


@dataclass
class RunningHub:
    app: FastAPI
    client: httpx.AsyncClient  # authenticated
    url: str


HubFactory = Callable[..., AbstractAsyncContextManager[RunningHub]]


@pytest.fixture
def hub(nats_url: str, issuer: TokenIssuer) -> HubFactory:
    """Start a hub over real HTTP: `async with hub(deployed_services=[...], ...) as running:`."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[RunningHub]:
        settings = Settings(nats_url=nats_url, jwks_url=issuer.jwks_url, heartbeat_interval_s=60,
                            shutdown_grace_s=1, **overrides)
        app = create_app(settings)
        async with serve_app(app) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {issuer.token()}"}) as client:
            yield RunningHub(app, client, url)

    return start


@dataclass
class RunningService:
    name: str
    app: FastAPI
    url: str
    port: int


ServiceFactory = Callable[[str], AbstractAsyncContextManager[RunningService]]


@pytest.fixture
def fleet_service(nats_url: str) -> ServiceFactory:
    """A throwaway platform service (create_service, no database) heartbeating every 0.5 s."""

    @asynccontextmanager
    async def start(name: str) -> AsyncIterator[RunningService]:
        # Not in the registry, so it needs a port; serve_app picks the real one, told before the next beat.
        settings = ServiceSettings(service_name=name, version="9.9.9", port=1, nats_url=nats_url,
                                   heartbeat_interval_s=0.5, shutdown_grace_s=1)
        app = create_service(settings, database=False)
        async with serve_app(app) as url:
            port = int(url.rsplit(":", 1)[1])
            settings.port = port
            yield RunningService(name, app, url, port)

    return start
