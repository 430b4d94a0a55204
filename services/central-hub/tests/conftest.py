"""Fixtures of central-hub: a JWKS issuer, hubs and throwaway services served over real HTTP, real NATS."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from central_hub.main import create_app
from central_hub.settings import Settings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from jwt.algorithms import OKPAlgorithm

from aitrading.service import create_service
from aitrading.settings import ServiceSettings
from aitrading.testing import serve_app

ISSUER = "aitrading-user-service"
AUDIENCE = "aitrading"


@dataclass
class Issuer:
    """The token issuer's side of the protocol: a published Ed25519 key and tokens signed with it."""

    jwks_url: str
    kid: str
    key: Ed25519PrivateKey

    def token(self) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now, "exp": now + 600,
                  "jti": uuid.uuid4().hex, "email": "ops@example.com", "roles": ["user"], "plan": "pro",
                  "typ": "access", "kind": "user"}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[Issuer]:
    key, kid = Ed25519PrivateKey.generate(), f"hub-test-{uuid.uuid4().hex[:8]}"
    jwk = {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "EdDSA", "use": "sig"}
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    async with serve_app(app) as base_url:
        yield Issuer(base_url + "/.well-known/jwks.json", kid, key)


@dataclass
class RunningHub:
    app: FastAPI
    client: httpx.AsyncClient  # authenticated
    url: str


HubFactory = Callable[..., AbstractAsyncContextManager[RunningHub]]


@pytest.fixture
def hub(nats_url: str, issuer: Issuer) -> HubFactory:
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
