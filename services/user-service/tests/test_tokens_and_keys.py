"""Access tokens: their claims, the JWKS, verification with the library verifier, key rotation, and
service credentials."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import httpx
import jwt
import pytest
from user_service.settings import Settings

from aitrading.auth import JwksVerifier, service_principal_id

SERVICE_SECRET = "shared-service-secret-for-tests"


def verifier_for(client: httpx.AsyncClient, settings: Settings) -> JwksVerifier:
    return JwksVerifier("http://testserver/.well-known/jwks.json", issuer=settings.jwt_issuer,
                        audience=settings.jwt_audience, http=client)


async def test_access_token_carries_exactly_the_agreed_claims(sign_up: Any, settings: Settings) -> None:
    user = await sign_up()
    header = jwt.get_unverified_header(user["access_token"])
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    assert header["alg"] == "EdDSA" and header["kid"]
    assert set(claims) == {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "email", "roles", "plan", "typ",
                           "kind"}
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["sub"] == user["id"]
    assert claims["email"] == user["email"]
    assert claims["roles"] == ["user"]
    assert claims["plan"] == "free"
    assert (claims["typ"], claims["kind"]) == ("access", "user")
    assert claims["exp"] - claims["iat"] == 900


async def test_jwks_publishes_the_kid_and_the_library_verifier_accepts_the_token(
        client: httpx.AsyncClient, sign_up: Any, settings: Settings) -> None:
    user = await sign_up()
    kid = jwt.get_unverified_header(user["access_token"])["kid"]
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    keys = {k["kid"]: k for k in response.json()["keys"]}
    assert kid in keys
    assert keys[kid]["kty"] == "OKP" and keys[kid]["crv"] == "Ed25519"
    assert keys[kid]["alg"] == "EdDSA" and keys[kid]["use"] == "sig"
    assert "d" not in keys[kid]  # never the private half

    principal = await verifier_for(client, settings).verify(user["access_token"])
    assert principal.id == UUID(user["id"])
    assert principal.email == user["email"]
    assert principal.roles == frozenset({"user"})
    assert (principal.plan, principal.kind) == ("free", "user")


async def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_kid(
        client: httpx.AsyncClient, sign_up: Any, settings: Settings,
        admin_headers: Callable[[], Awaitable[dict[str, str]]]) -> None:
    user = await sign_up()
    old_kid = jwt.get_unverified_header(user["access_token"])["kid"]
    rotated = await client.post("/api/v1/auth/keys/rotate", headers=await admin_headers())
    assert rotated.status_code == 201
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid

    login = await client.post("/api/v1/auth/login", json={"email": user["email"],
                                                          "password": "correct horse Battery 9"})
    fresh = login.json()["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == new_kid

    published = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_kid} <= published
    verifier = verifier_for(client, settings)
    for token in (user["access_token"], fresh):
        assert (await verifier.verify(token)).id == UUID(user["id"])
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200


async def test_only_an_admin_rotates_keys(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    response = await client.post("/api/v1/auth/keys/rotate", headers=user["headers"])
    assert response.status_code == 403


async def test_service_token_for_a_registry_service(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post("/internal/service-token",
                                 json={"service": "trading-engine", "secret": SERVICE_SECRET})
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 900
    principal = await verifier_for(client, settings).verify(body["access_token"])
    assert principal.kind == "service"
    assert principal.service_name == "trading-engine"
    assert principal.id == service_principal_id("trading-engine")
    assert principal.roles == frozenset({"service"})
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "service:trading-engine"
    assert "email" not in claims
    # A service has no user account.
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 403


@pytest.mark.parametrize(("service", "secret"), [
    ("trading-engine", "wrong secret"),
    ("no-such-service", SERVICE_SECRET),
])
async def test_service_token_refused_for_wrong_secret_or_unknown_service(client: httpx.AsyncClient,
                                                                         service: str, secret: str) -> None:
    response = await client.post("/internal/service-token", json={"service": service, "secret": secret})
    assert response.status_code == 401
    assert response.json()["detail"] == "the service name or secret is not valid"


async def test_a_tampered_token_is_refused(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    head, payload, signature = user["access_token"].split(".")
    forged = ".".join([head, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
