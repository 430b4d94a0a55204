"""Routing, authentication and faithful forwarding through the gateway (in-process, real upstreams)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator

import httpx

from .conftest import CORS_ORIGIN, Identity, bearer, headers_of

PROBLEM = "application/problem+json"


async def test_public_route_passes_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", json={"email": "a@example.com", "password": "x"})
    assert response.status_code == 200
    assert response.json() == {"email": "a@example.com", "authorization": None}
    assert response.headers["x-request-id"]


async def test_protected_route_without_a_token_is_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/orders/echo")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["status"] == 401 and body["request_id"] == response.headers["x-request-id"]


async def test_tampered_token_is_401(client: httpx.AsyncClient, identity: Identity) -> None:
    header, payload, signature = identity.token().split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    for forged in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{signature[::-1]}"):
        response = await client.get("/api/v1/orders/echo", headers=bearer(forged))
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == PROBLEM


async def test_expired_token_is_401(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/api/v1/orders/echo", headers=bearer(identity.token(expires_in=-60)))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_valid_token_is_proxied_with_request_id_and_authorization(client: httpx.AsyncClient,
                                                                         identity: Identity) -> None:
    token = identity.token()
    request_id = f"test-{uuid.uuid4().hex}"
    response = await client.get("/api/v1/orders/echo?symbol=SPX&x=a%20b",
                                headers={**bearer(token), "X-Request-ID": request_id, "X-Custom": "kept"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    echo = response.json()
    seen = headers_of(echo)
    assert echo["method"] == "GET" and echo["path"] == "/api/v1/orders/echo"
    assert echo["query"] == "symbol=SPX&x=a%20b"
    assert seen["authorization"] == [f"Bearer {token}"]
    assert seen["x-request-id"] == [request_id]
    assert seen["x-custom"] == ["kept"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["testserver"]
    # The gateway's own rate-limit headers ride on every limited response.
    assert int(response.headers["ratelimit-limit"]) == 1200
    assert int(response.headers["ratelimit-remaining"]) < 1200


async def test_request_id_is_assigned_when_absent(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/api/v1/orders/echo", headers=bearer(identity.token()))
    assigned = response.headers["x-request-id"]
    assert len(assigned) >= 16
    assert headers_of(response.json())["x-request-id"] == [assigned]


async def test_hop_by_hop_headers_are_not_forwarded(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/api/v1/orders/echo", headers={
        **bearer(identity.token()), "Connection": "keep-alive, X-Private", "X-Private": "secret",
        "Keep-Alive": "timeout=5", "TE": "trailers", "X-Forwarded-For": "203.0.113.9"})
    seen = headers_of(response.json())
    assert "x-private" not in seen and "keep-alive" not in seen and "te" not in seen
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]


async def test_methods_and_bodies_are_forwarded(client: httpx.AsyncClient, identity: Identity) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await client.request(method, "/api/v1/orders/echo", content=b"x" * 1234,
                                        headers=bearer(identity.token()))
        assert response.status_code == 200
        assert response.json()["method"] == method and response.json()["body_bytes"] == 1234


async def test_streamed_upload_arrives_whole(client: httpx.AsyncClient, identity: Identity) -> None:
    blocks = [os.urandom(256 * 1024) for _ in range(12)]  # 3 MiB, sent chunked without a length

    async def body() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    response = await client.post("/api/v1/orders/upload", content=body(), headers=bearer(identity.token()))
    assert response.status_code == 200, response.text
    upload = response.json()
    assert upload["size"] == 3 * 1024 * 1024
    assert upload["sha256"] == hashlib.sha256(b"".join(blocks)).hexdigest()


async def test_streamed_upload_with_a_length_keeps_it(client: httpx.AsyncClient, identity: Identity) -> None:
    blocks = [os.urandom(100_000) for _ in range(5)]

    async def body() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    response = await client.put("/api/v1/orders/echo", content=body(),
                                headers={**bearer(identity.token()), "Content-Length": "500000"})
    assert response.status_code == 200, response.text
    echo = response.json()
    assert echo["body_bytes"] == 500_000
    assert headers_of(echo)["content-length"] == ["500000"]
    assert "transfer-encoding" not in headers_of(echo)


async def test_large_streamed_download_arrives_whole(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/api/v1/orders/big?size=5000000", headers=bearer(identity.token()))
    assert response.status_code == 200
    assert len(response.content) == 5_000_000
    assert "transfer-encoding" not in response.headers or response.headers["transfer-encoding"] == "chunked"


async def test_response_headers_and_cookies_pass_through(client: httpx.AsyncClient,
                                                          identity: Identity) -> None:
    response = await client.get("/api/v1/orders/cookie", headers=bearer(identity.token()))
    assert response.status_code == 200
    assert "session=abc" in response.headers["set-cookie"]
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


async def test_upstream_status_is_preserved(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/api/v1/orders/does-not-exist", headers=bearer(identity.token()))
    assert response.status_code == 404  # the upstream's own 404, not the gateway's
    assert response.headers["content-type"] == "application/json"


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient, identity: Identity) -> None:
    for path in ("/api/v1/nonexistent/things", "/api/v1/revenue/mrr"):  # no owner / owner not routed
        response = await client.get(path, headers=bearer(identity.token()))
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_internal_paths_are_not_reachable(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/internal/secret", headers=bearer(identity.token()))
    assert response.status_code == 404


async def test_slow_upstream_is_504(client: httpx.AsyncClient, identity: Identity) -> None:
    started = time.monotonic()
    response = await client.get("/api/v1/orders/slow?s=3", headers=bearer(identity.token()))
    assert response.status_code == 504
    assert response.headers["content-type"] == PROBLEM
    assert time.monotonic() - started < 2.5
    # One timeout does not open the circuit; the next call goes through.
    assert (await client.get("/api/v1/orders/echo", headers=bearer(identity.token()))).status_code == 200


async def test_service_health_and_jwks_are_public(client: httpx.AsyncClient, identity: Identity) -> None:
    health = await client.get("/services/trading-engine/health")
    assert health.status_code == 200 and health.json()["service"] == "trading-engine"
    unknown = await client.get("/services/no-such-service/health")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"][0]["kid"] == identity.kid


async def test_gateway_probes_answer(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.json() == {"status": "ok", "service": "api-gateway", "version": "0.1.0"}
    metrics = (await client.get("/metrics")).text
    assert "gateway_upstream_duration_seconds_bucket" in metrics
    assert 'gateway_circuit_state{service="trading-engine"}' in metrics


async def test_cors_preflight_for_an_allowed_origin(client: httpx.AsyncClient) -> None:
    response = await client.options("/api/v1/orders/echo", headers={
        "Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    refused = await client.options("/api/v1/orders/echo", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in refused.headers


async def test_cors_headers_on_proxied_answers(client: httpx.AsyncClient, identity: Identity) -> None:
    headers = {**bearer(identity.token()), "Origin": CORS_ORIGIN}
    response = await client.get("/api/v1/orders/echo", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
