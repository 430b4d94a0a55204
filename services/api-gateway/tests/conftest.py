"""The gateway against real upstreams: small FastAPI apps served by uvicorn on free local ports.

- `identity`: speaks user-service's contract for the gateway — the JWKS, the API-key exchange
  (`POST /internal/api-keys/exchange`) and a public `/api/v1/auth/login` — and signs Ed25519 tokens.
  (The real user-service is exercised through the gateway by the fleet tests.)
- `echo` (as trading-engine): reports what it received, streams, reads streamed uploads, sleeps.
- `portfolio` (as portfolio-manager): on a fixed port, so a test can stop and restart it.
- `market` (as data-bridge): a WebSocket echo at /ws/market.
- audit-service is configured at a port where nothing listens: always down.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from api_gateway.main import create_app
from api_gateway.settings import Settings
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from jwt.algorithms import OKPAlgorithm
from pydantic import BaseModel

from aitrading.embedded import free_port
from aitrading.testing import running_app, serve_app

ISSUER = "aitrading-user-service"
AUDIENCE = "aitrading"
KNOWN_API_KEY = "atp_" + uuid.uuid4().hex
CORS_ORIGIN = "https://app.example.com"


@dataclass
class Identity:
    """The issuer: one Ed25519 key, tokens on demand, API keys it knows."""

    kid: str = field(default_factory=lambda: f"ed-{uuid.uuid4().hex[:8]}")
    private: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    api_key_owner: str = field(default_factory=lambda: str(uuid.uuid4()))
    exchanges: int = 0
    url: str = ""

    def jwks(self) -> dict[str, Any]:
        jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        assert isinstance(jwk, dict)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def token(self, *, plan: str = "pro", user_id: str | None = None, expires_in: int = 300) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user_id or str(uuid.uuid4()), "iat": now,
                  "nbf": now - 1, "exp": now + expires_in, "jti": uuid.uuid4().hex, "email": "t@example.com",
                  "roles": ["user"], "plan": plan, "typ": "access", "kind": "user"}
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid})


class ExchangeIn(BaseModel):
    key: str


class LoginIn(BaseModel):
    email: str
    password: str


def identity_app(identity: Identity) -> FastAPI:
    app = FastAPI(title="identity")

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return identity.jwks()

    @app.post("/internal/api-keys/exchange")
    async def exchange(body: ExchangeIn) -> JSONResponse:
        identity.exchanges += 1
        if body.key != KNOWN_API_KEY:
            return JSONResponse({"detail": "unknown API key"}, status_code=401)
        token = identity.token(plan="pro", user_id=identity.api_key_owner, expires_in=600)
        return JSONResponse({"access_token": token, "expires_in": 600})

    @app.post("/api/v1/auth/login")
    async def login(body: LoginIn, request: Request) -> dict[str, Any]:
        return {"email": body.email, "authorization": request.headers.get("authorization")}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "user-service"}

    return app


class Echo(BaseModel):
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body_bytes: int


class Upload(BaseModel):
    sha256: str
    size: int
    chunks: int


def echo_app() -> FastAPI:
    app = FastAPI(title="echo", description="Reports what it received")

    async def echo(request: Request) -> Echo:
        body = await request.body()
        return Echo(method=request.method, path=request.url.path, query=request.url.query,
                    headers=[(k, v) for k, v in request.headers.items()], body_bytes=len(body))

    app.get("/api/v1/orders/echo", response_model=Echo)(echo)
    app.api_route("/api/v1/orders/echo", methods=["POST", "PUT", "DELETE", "PATCH"], response_model=Echo,
                  include_in_schema=False)(echo)

    @app.post("/api/v1/orders/upload", response_model=Upload)
    async def upload(request: Request) -> Upload:
        digest, size, chunks = hashlib.sha256(), 0, 0
        async for chunk in request.stream():
            if chunk:
                digest.update(chunk)
                size += len(chunk)
                chunks += 1
        return Upload(sha256=digest.hexdigest(), size=size, chunks=chunks)

    app.state.stream_outcomes = {}

    @app.get("/api/v1/orders/stream")
    async def stream(chunks: int = 3, gap_s: float = 0.3, tag: str = "") -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            app.state.stream_outcomes[tag] = "streaming"
            try:
                for i in range(chunks):
                    if i:
                        await asyncio.sleep(gap_s)
                    yield f"chunk-{i}\n".encode()
            except BaseException:
                app.state.stream_outcomes[tag] = "stopped"
                raise
            app.state.stream_outcomes[tag] = "finished"

        return StreamingResponse(produce(), media_type="text/plain")

    @app.get("/api/v1/orders/big")
    async def big(size: int = 1_000_000) -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            block = b"x" * 65536
            left = size
            while left > 0:
                yield block[:left]
                left -= len(block)

        return StreamingResponse(produce(), media_type="application/octet-stream")

    @app.get("/api/v1/orders/slow")
    async def slow(s: float = 3.0) -> dict[str, str]:
        await asyncio.sleep(s)
        return {"status": "late"}

    @app.get("/api/v1/orders/cookie")
    async def cookie() -> JSONResponse:
        response = JSONResponse({"ok": True})
        response.set_cookie("session", "abc")
        return response

    @app.get("/internal/secret")
    async def internal() -> dict[str, str]:
        return {"internal": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "trading-engine"}

    return app


def portfolio_app() -> FastAPI:
    app = FastAPI(title="portfolio")

    @app.get("/api/v1/portfolio")
    async def portfolio() -> dict[str, str]:
        return {"cash": "1000.00"}

    return app


def market_app() -> FastAPI:
    app = FastAPI(title="market")

    @app.websocket("/ws/market")
    async def market(websocket: WebSocket) -> None:
        await websocket.accept()
        authorization = websocket.headers.get("authorization", "")
        await websocket.send_json({"hello": websocket.query_params.get("symbols"),
                                   "authorized": authorization.startswith("Bearer "),
                                   "token_in_query": "token" in websocket.query_params})
        try:
            while True:
                message = await websocket.receive_text()
                if message == "bye":
                    await websocket.close(code=4000, reason="bye")
                    return
                await websocket.send_text(f"echo:{message}")
        except WebSocketDisconnect:
            market.disconnects += 1  # type: ignore[attr-defined]

    market.disconnects = 0  # type: ignore[attr-defined]
    app.state.market = market
    return app



@asynccontextmanager
async def serve_on(app: FastAPI, port: int) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a given local port (so it can be stopped and started again)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name=f"serve_on:{port}")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the upstream stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Upstreams:
    identity: Identity
    identity_url: str
    echo_app: FastAPI
    echo_url: str
    portfolio_port: int
    market_app: FastAPI
    market_url: str
    dead_url: str

    def service_urls(self) -> dict[str, str]:
        return {"user-service": self.identity_url, "trading-engine": self.echo_url,
                "portfolio-manager": f"http://127.0.0.1:{self.portfolio_port}",
                "data-bridge": self.market_url, "audit-service": self.dead_url}


@pytest.fixture(scope="session")
async def upstreams() -> AsyncIterator[Upstreams]:
    identity = Identity()
    market = market_app()
    echo = echo_app()
    async with serve_app(identity_app(identity)) as identity_url, serve_app(echo) as echo_url, \
            serve_app(market) as market_url:
        identity.url = identity_url
        yield Upstreams(identity, identity_url, echo, echo_url, free_port(), market, market_url,
                        f"http://127.0.0.1:{free_port()}")


def gateway_settings(upstreams: Upstreams, nats_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "service_urls": upstreams.service_urls(),
        "deployed_services": ["user-service", "trading-engine", "portfolio-manager", "data-bridge",
                             "audit-service"],
        "rate_limit_free": 5,
        "rate_limit_anonymous": 10_000,
        "upstream_timeout_s": 1.0,
        "upstream_connect_timeout_s": 1.0,
        "breaker_failure_threshold": 2,
        "breaker_reset_timeout_s": 0.5,
        "usage_flush_interval_s": 0.3,
        "openapi_cache_ttl_s": 0.5,
        "openapi_fetch_timeout_s": 1.0,
        "cors_origins": [CORS_ORIGIN],
        "heartbeat_interval_s": 60,
        "shutdown_grace_s": 2,
        "log_json": False,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
async def gateway(upstreams: Upstreams, nats_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(gateway_settings(upstreams, nats_url))
    async with running_app(app) as client:
        yield app, client


@pytest.fixture
def client(gateway: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return gateway[1]


@pytest.fixture
def identity(upstreams: Upstreams) -> Identity:
    return upstreams.identity


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def headers_of(echo: dict[str, Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        seen.setdefault(name, []).append(value)
    return seen
