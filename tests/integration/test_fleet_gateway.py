"""The foundation driven like a client through the gateway: auth, limits, errors, failure and recovery."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from aitrading.fleet.launcher import Fleet

pytestmark = pytest.mark.slow
PASSWORD = "a-long-enough-passphrase-7"


def register_and_login(gateway: httpx.Client) -> tuple[str, dict[str, str]]:
    email = f"trader-{uuid.uuid4().hex[:10]}@example.com"
    created = gateway.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    tokens = gateway.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return email, tokens.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_register_login_and_me(gateway: httpx.Client) -> None:
    email, tokens = register_and_login(gateway)
    assert tokens["token_type"] == "bearer"
    me = gateway.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    body = me.json()
    assert body["email"] == email
    assert body["plan"] == "free"
    assert "user" in body["roles"]


def test_duplicate_registration_is_409(gateway: httpx.Client) -> None:
    email, _ = register_and_login(gateway)
    again = gateway.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_no_token_is_401_problem(gateway: httpx.Client) -> None:
    response = gateway.get("/api/v1/users/me")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_tampered_token_is_401(gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    header, payload, signature = tokens["access_token"].split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    response = gateway.get("/api/v1/users/me", headers=bearer(f"{header}.{payload}.{flipped}"))
    assert response.status_code == 401


def test_expired_token_signed_by_the_real_key_is_401(fleet: Fleet, gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    key = asyncio.run(signing_key_pem(fleet.database_url, kid))
    claims.update(iat=claims["iat"] - 3600, nbf=claims["iat"] - 3600, exp=int(time.time()) - 60)
    expired = jwt.encode(claims, serialization.load_pem_private_key(key, password=None),
                         algorithm="EdDSA", headers={"kid": kid})
    response = gateway.get("/api/v1/users/me", headers=bearer(expired))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def signing_key_pem(database_url: str, kid: str) -> bytes:
    conn = await asyncpg.connect(database_url)
    try:
        pem = await conn.fetchval("SELECT private_key FROM user_service.signing_keys WHERE kid = $1", kid)
    finally:
        await conn.close()
    return bytes(pem)


def test_refresh_rotates_and_reuse_revokes_the_family(gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    first = tokens["refresh_token"]
    rotated = gateway.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    reused = gateway.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401
    # Reuse revoked the whole family: the token issued by the rotation is dead too.
    after = gateway.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert after.status_code == 401


def test_free_plan_is_limited_with_headers(gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    headers = bearer(tokens["access_token"])
    first = gateway.get("/api/v1/users/me", headers=headers)
    assert first.headers["ratelimit-limit"] == "120"
    statuses = [gateway.get("/api/v1/users/me", headers=headers).status_code for _ in range(125)]
    assert 429 in statuses
    limited = gateway.get("/api/v1/users/me", headers=headers)
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-remaining"] == "0"


def test_unknown_route_is_404_problem(gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    response = gateway.get("/api/v1/no-such-thing", headers=bearer(tokens["access_token"]))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_fleet_health_lists_the_running_services(gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    deadline = time.monotonic() + 15
    while True:
        response = gateway.get("/api/v1/fleet/health", headers=bearer(tokens["access_token"]))
        assert response.status_code == 200
        services = {s["name"]: s for s in response.json()["services"]}
        if all(services.get(n, {}).get("status") == "healthy"
               for n in ("api-gateway", "user-service", "central-hub")) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name in ("api-gateway", "user-service", "central-hub"):
        assert services[name]["status"] == "healthy", services[name]
        assert services[name]["version"]
        assert services[name]["latency_ms"] >= 0


def test_service_health_through_the_gateway(gateway: httpx.Client) -> None:
    response = gateway.get("/services/user-service/health")
    assert response.status_code == 200
    assert response.json()["service"] == "user-service"


def test_stopped_upstream_is_503_quickly_then_recovers(fleet: Fleet, gateway: httpx.Client) -> None:
    _, tokens = register_and_login(gateway)
    headers = bearer(tokens["access_token"])
    fleet.stop_service("central-hub")
    try:
        started = time.monotonic()
        down = gateway.get("/api/v1/fleet/dependencies", headers=headers)
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert time.monotonic() - started < 1.0
    finally:
        fleet.start_service("central-hub")
    deadline = time.monotonic() + 20
    while True:
        up = gateway.get("/api/v1/fleet/dependencies", headers=headers)
        if up.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert up.status_code == 200


def test_api_key_works_at_the_gateway_until_revoked(gateway: httpx.Client) -> None:
    email, tokens = register_and_login(gateway)
    headers = bearer(tokens["access_token"])
    created = gateway.post("/api/v1/api-keys", json={"name": "bot"}, headers=headers)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    me = gateway.get("/api/v1/users/me", headers={"X-API-Key": key})
    assert me.status_code == 200
    assert me.json()["email"] == email
    revoked = gateway.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=headers)
    assert revoked.status_code == 204
    # The gateway reuses an exchange for API_KEY_CACHE_S (2 s here); after that the key is refused.
    deadline = time.monotonic() + 15
    while gateway.get("/api/v1/users/me", headers={"X-API-Key": key}).status_code != 401:
        assert time.monotonic() < deadline, "revoked API key still accepted"
        time.sleep(1)
