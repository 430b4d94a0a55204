"""Pytest plugin of the platform (loaded with `-p aitrading.testing`): real PostgreSQL, NATS and Redis.

`DATABASE_URL`, `NATS_URL` and `REDIS_URL` from the environment are used when set; otherwise the
session starts embedded PostgreSQL and NATS (JetStream) under a temporary folder. Redis has no embedded
server: without `REDIS_URL` the Redis-backed tests are skipped and the in-process backends are tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import nats
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from starlette.types import ASGIApp, Receive, Scope, Send

from aitrading.db import Database, get_session, to_async_url
from aitrading.errors import Unauthorized, install_error_handlers
from aitrading.settings import ServiceSettings

JWT_ISSUER = ServiceSettings.model_fields["jwt_issuer"].default
JWT_AUDIENCE = ServiceSettings.model_fields["jwt_audience"].default


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from aitrading.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("NATS_URL")
    if url:
        yield url
        return
    from aitrading.embedded import EmbeddedNats

    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: Redis-backed behaviour is not tested on this machine")
    return url


def _state_per_request(app: ASGIApp) -> ASGIApp:
    """Give each request its own copy of the lifespan state, as uvicorn does.

    asgi-lifespan hands every request the same state dict, so anything a request stores on
    `request.state` (the verified caller, for one) would leak into the next request.
    """

    async def copy_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "state" in scope:
            scope = {**scope, "state": dict(scope["state"])}
        await app(scope, receive, send)

    return copy_state


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (its real components start) and give a client speaking ASGI to it."""
    async with LifespanManager(_state_per_request(app), startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@asynccontextmanager
async def rolled_back(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """Bind every request session of `app` to one transaction that is rolled back at the end.

    Routes still commit: with `create_savepoint` their commit releases a savepoint inside the outer
    transaction, so a test sees its own writes and leaves nothing behind.
    """
    db: Database = app.state.db
    async with db.engine.connect() as conn:
        outer = await conn.begin()

        def session() -> AsyncSession:
            return AsyncSession(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)

        async def request_session() -> AsyncIterator[AsyncSession]:
            async with session() as s:
                try:
                    yield s
                    await s.commit()
                except BaseException:
                    await s.rollback()
                    raise

        app.dependency_overrides[get_session] = request_session
        try:
            async with session() as test_session:
                yield test_session
        finally:
            app.dependency_overrides.pop(get_session, None)
            await outer.rollback()


@asynccontextmanager
async def serve_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop, on `port` (0: a free one); yields its base URL.

    A fixed port lets a test stop a server and serve again at the same address (a client reconnecting).

    A real socket, unlike ASGITransport: for tests of clients (JWKS fetches, the service client, provider
    adapters) that must see real connections, timeouts and refusals. The server stops on exit.
    """
    import asyncio
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="auto",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"serve_app:{port}")
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
                raise RuntimeError("the test server stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class TokenIssuer:
    """The issuer's side of the token protocol for service tests: a JWKS over real HTTP and tokens.

    `jwks_url` goes into a service's settings (`jwks_url=...`); `token()` mints a user token,
    `token(roles=("user", "admin"))` an admin's, `service_token("feature-engineering")` a service's.
    It also answers user-service's side of the service-token protocol at `service_token_url`
    (`POST /internal/service-token`) for `service_secret`: give a service under test
    `service_urls={"user-service": issuer.url}` and `service_client_secret=issuer.service_secret`.
    """

    url: str
    kid: str
    key: Ed25519PrivateKey
    service_secret: str = "test-service-client-secret"

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks.json"

    def token(self, sub: uuid.UUID | str | None = None, *, roles: tuple[str, ...] = ("user",),
              plan: str = "pro", email: str = "trader@example.com", ttl_s: int = 600) -> str:
        now = int(time.time())
        claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": str(sub or uuid.uuid4()), "iat": now,
                  "exp": now + ttl_s, "jti": uuid.uuid4().hex, "email": email, "roles": list(roles),
                  "plan": plan, "typ": "access", "kind": "user"}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def service_token(self, service: str, ttl_s: int = 600) -> str:
        now = int(time.time())
        claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": f"service:{service}", "iat": now,
                  "exp": now + ttl_s, "jti": uuid.uuid4().hex, "roles": ["service"], "plan": "enterprise",
                  "typ": "access", "kind": "service"}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture(scope="session")
async def token_issuer() -> AsyncIterator[TokenIssuer]:
    """A JWKS endpoint on a real socket with one Ed25519 key, for the whole test session."""
    from jwt.algorithms import OKPAlgorithm

    key, kid = Ed25519PrivateKey.generate(), f"test-{uuid.uuid4().hex[:8]}"
    jwk = {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "EdDSA", "use": "sig"}
    app = FastAPI()

    issuer: TokenIssuer | None = None

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    @app.post("/internal/service-token")
    async def service_token(body: dict[str, str]) -> dict[str, Any]:
        assert issuer is not None
        if body.get("secret") != issuer.service_secret or not body.get("service"):
            raise Unauthorized("the service name or secret is not valid")
        return {"access_token": issuer.service_token(body["service"]), "token_type": "bearer",
                "expires_in": 600}

    install_error_handlers(app)
    async with serve_app(app) as base_url:
        issuer = TokenIssuer(base_url, kid, key)
        yield issuer


async def eventually(check: Callable[[], Any], timeout_s: float = 15.0, interval_s: float = 0.05) -> Any:
    """Poll `check` (plain or async) until it returns something truthy, and return that.

    Fails after `timeout_s` with the last value: for effects that arrive asynchronously (an event
    consumed, a feed's counter moving), where a fixed sleep would be either flaky or slow.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(interval_s)


async def durable_bound(nats_url: str, stream: str, durable: str, within_s: float = 20.0) -> None:
    """Wait until the durable consumer exists on the server: a durable created with deliver "new" only
    sees what is published after that moment."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + within_s
        while True:
            try:
                await js.consumer_info(stream, durable)
                return
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def remove_traces(database_url: str, schema: str, nats_url: str,
                        durables: Iterable[tuple[str, str]] = ()) -> None:
    """Drop an app's schema and its (stream, durable) consumers, so a test run leaves nothing behind."""
    engine = create_async_engine(to_async_url(database_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()
    nc = await nats.connect(nats_url)
    try:
        for stream, durable in durables:
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_consumer(stream, durable)
    finally:
        await nc.close()


def shared_warehouse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one DATA_DIR every in-process database-service of a test session uses.

    chDB holds one warehouse folder per process, so suites that serve database-service in the same
    pytest process share its folder (and the bundled history loaded into it) instead of each opening
    its own.
    """
    path = tmp_path_factory.getbasetemp() / "shared-database-service"
    path.mkdir(exist_ok=True)
    return path
