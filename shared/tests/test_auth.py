"""JWT verification against a JWKS served by a real local HTTP server, and the FastAPI dependencies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from aitrading.auth import (
    AdminUser,
    CurrentUser,
    JwksVerifier,
    KeySet,
    Principal,
    service_principal_id,
)
from aitrading.errors import Unauthorized, Unavailable, install_error_handlers
from aitrading.request_context import current_authorization
from aitrading.testing import serve_app

ISSUER = "aitrading-user-service"
AUDIENCE = "aitrading"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        codec = OKPAlgorithm if self.algorithm == "EdDSA" else RSAAlgorithm
        jwk = codec.to_jwk(self.private.public_key(), as_dict=True)
        assert isinstance(jwk, dict)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, **overrides: Any) -> str:
        return jwt.encode(claims(**overrides), self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid})


def new_ed25519() -> SigningKey:
    return SigningKey(f"ed-{uuid.uuid4().hex[:8]}", "EdDSA", ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey(f"rsa-{uuid.uuid4().hex[:8]}", "RS256",
                      rsa.generate_private_key(public_exponent=65537, key_size=2048))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 300,
        "jti": uuid.uuid4().hex, "email": "trader@example.com", "roles": ["user"], "plan": "pro",
        "typ": "access", "kind": "user",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@dataclass
class JwksServer:
    """The issuer side: serves whatever keys it holds now, and counts fetches."""

    keys: list[SigningKey] = field(default_factory=list)
    hits: int = 0
    delay_s: float = 0.0
    url: str = ""

    async def document(self) -> dict[str, Any]:
        self.hits += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return {"keys": [k.public_jwk() for k in self.keys]}


def issuer_app(current: dict[str, JwksServer]) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return await current["server"].document()

    return app


@pytest.fixture(scope="module")
async def issuer_host() -> AsyncIterator[tuple[str, dict[str, JwksServer]]]:
    """One real HTTP server for the module; each test gets its own issuer state behind it."""
    current: dict[str, JwksServer] = {}
    async with serve_app(issuer_app(current)) as base_url:
        yield base_url + "/.well-known/jwks.json", current


@pytest.fixture
def issuer(issuer_host: tuple[str, dict[str, JwksServer]]) -> JwksServer:
    url, current = issuer_host
    current["server"] = JwksServer(keys=[new_ed25519()], url=url)
    return current["server"]


@pytest.fixture
async def verifier(issuer: JwksServer) -> AsyncIterator[JwksVerifier]:
    v = JwksVerifier(issuer.url, issuer=ISSUER, audience=AUDIENCE, min_refresh_interval_s=0.2)
    yield v
    await v.stop()


async def test_valid_eddsa_token_gives_the_principal(issuer: JwksServer, verifier: JwksVerifier) -> None:
    user_id = uuid.uuid4()
    token = issuer.keys[0].sign(sub=str(user_id), roles=["user", "admin"], plan="enterprise")

    principal = await verifier.verify(token)

    assert principal.id == user_id
    assert principal.email == "trader@example.com"
    assert principal.roles == frozenset({"user", "admin"})
    assert principal.plan == "enterprise"
    assert principal.kind == "user"
    assert principal.token == token
    assert principal.is_admin and principal.has_role("user") and not principal.has_role("support")
    assert principal.claims["typ"] == "access"


async def test_valid_rs256_token_verifies(issuer: JwksServer, verifier: JwksVerifier,
                                          rsa_key: SigningKey) -> None:
    issuer.keys.append(rsa_key)
    principal = await verifier.verify(rsa_key.sign(roles=[]))
    assert principal.roles == frozenset() and not principal.is_admin


async def test_service_token_maps_to_a_stable_service_id(issuer: JwksServer, verifier: JwksVerifier) -> None:
    token = issuer.keys[0].sign(sub="service:trading-engine", kind="service", roles=["service"], email=None)
    principal = await verifier.verify(token)
    assert principal.kind == "service" and principal.is_service
    assert principal.id == service_principal_id("trading-engine") == service_principal_id("trading-engine")
    assert principal.service_name == "trading-engine"
    assert principal.email is None


async def test_keys_are_fetched_once_and_cached(issuer: JwksServer, verifier: JwksVerifier) -> None:
    for _ in range(5):
        await verifier.verify(issuer.keys[0].sign())
    assert issuer.hits == 1


async def test_a_verified_token_is_remembered_until_it_expires(issuer: JwksServer) -> None:
    verifier = JwksVerifier(issuer.url, issuer=ISSUER, audience=AUDIENCE, leeway_s=0)
    try:
        expires = int(time.time()) + 2
        token = issuer.keys[0].sign(exp=expires)
        first = await verifier.verify(token)
        assert await verifier.verify(token) is first
        await asyncio.sleep(expires - time.time() + 0.1)
        with pytest.raises(Unauthorized, match="expired"):
            await verifier.verify(token)
    finally:
        await verifier.stop()


async def test_expired_token_is_refused(issuer: JwksServer, verifier: JwksVerifier) -> None:
    now = int(time.time())
    token = issuer.keys[0].sign(iat=now - 600, nbf=now - 600, exp=now - 60)
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(token)


async def test_expiry_within_leeway_is_accepted(issuer: JwksServer, verifier: JwksVerifier) -> None:
    now = int(time.time())
    await verifier.verify(issuer.keys[0].sign(iat=now - 600, nbf=now - 600, exp=now - 2))


async def test_tampered_payload_is_refused(issuer: JwksServer, verifier: JwksVerifier) -> None:
    header, payload, signature = issuer.keys[0].sign(roles=["user"]).split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["roles"] = ["user", "admin"]
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="signature"):
        await verifier.verify(f"{header}.{forged}.{signature}")


async def test_token_signed_by_an_unpublished_key_with_a_known_kid_is_refused(
        issuer: JwksServer, verifier: JwksVerifier) -> None:
    impostor = SigningKey(issuer.keys[0].kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(Unauthorized, match="signature"):
        await verifier.verify(impostor.sign())


async def test_wrong_audience_is_refused(issuer: JwksServer, verifier: JwksVerifier) -> None:
    with pytest.raises(Unauthorized, match="audience"):
        await verifier.verify(issuer.keys[0].sign(aud="someone-else"))


async def test_wrong_issuer_is_refused(issuer: JwksServer, verifier: JwksVerifier) -> None:
    with pytest.raises(Unauthorized, match="issuer"):
        await verifier.verify(issuer.keys[0].sign(iss="https://evil.example"))


async def test_refresh_token_is_not_an_access_token(issuer: JwksServer, verifier: JwksVerifier) -> None:
    with pytest.raises(Unauthorized, match="not an access token"):
        await verifier.verify(issuer.keys[0].sign(typ="refresh"))


async def test_token_without_expiry_is_refused(issuer: JwksServer, verifier: JwksVerifier) -> None:
    with pytest.raises(Unauthorized, match="exp"):
        await verifier.verify(issuer.keys[0].sign(exp=None))


def part(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


async def test_alg_none_is_refused(issuer: JwksServer, verifier: JwksVerifier) -> None:
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT', 'kid': issuer.keys[0].kid})}.{part(claims())}."
    with pytest.raises(Unauthorized, match="'none' is not accepted"):
        await verifier.verify(unsigned)
    assert issuer.hits == 0  # refused before any key lookup


async def test_hmac_with_the_public_key_as_secret_is_refused(issuer: JwksServer, verifier: JwksVerifier,
                                                              rsa_key: SigningKey) -> None:
    issuer.keys.append(rsa_key)
    await verifier.refresh()
    # Signed by hand: PyJWT itself refuses to use a public key as an HMAC secret.
    secret = json.dumps(rsa_key.public_jwk()).encode()
    signing_input = f"{part({'alg': 'HS256', 'kid': rsa_key.kid})}.{part(claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(Unauthorized, match="HS256"):
        await verifier.verify(forged)


async def test_algorithm_must_match_the_key_type(issuer: JwksServer, verifier: JwksVerifier,
                                                 rsa_key: SigningKey) -> None:
    # An RS256 signature presented under the kid of the Ed25519 key.
    issuer.keys.append(rsa_key)
    token = jwt.encode(claims(), rsa_key.private, algorithm="RS256", headers={"kid": issuer.keys[0].kid})
    with pytest.raises(Unauthorized, match="algorithm"):
        await verifier.verify(token)


async def test_garbage_is_refused_as_malformed(verifier: JwksVerifier) -> None:
    with pytest.raises(Unauthorized, match="malformed"):
        await verifier.verify("not-a-jwt")


async def test_key_rotation_is_picked_up_without_restart(issuer: JwksServer, verifier: JwksVerifier) -> None:
    old = issuer.keys[0]
    old_token = old.sign()
    await verifier.verify(old_token)
    await asyncio.sleep(0.25)  # past min_refresh_interval_s

    new = new_ed25519()
    issuer.keys = [new]  # the issuer rotates: new key, new kid, old key withdrawn
    principal = await verifier.verify(new.sign(plan="free"))

    assert principal.plan == "free"
    assert issuer.hits == 2
    assert verifier.keys is not None and verifier.keys.kids == {new.kid}
    with pytest.raises(Unauthorized, match="unknown"):  # no longer trusted, though verified before
        await verifier.verify(old_token)


async def test_unknown_kid_refreshes_once_for_concurrent_callers(issuer: JwksServer,
                                                                 verifier: JwksVerifier) -> None:
    await verifier.verify(issuer.keys[0].sign())
    await asyncio.sleep(0.25)
    new = new_ed25519()
    issuer.keys.append(new)
    issuer.delay_s = 0.1

    principals = await asyncio.gather(*(verifier.verify(new.sign()) for _ in range(20)))

    assert len(principals) == 20
    assert issuer.hits == 2


async def test_unknown_kid_refreshes_are_rate_limited(issuer: JwksServer) -> None:
    verifier = JwksVerifier(issuer.url, issuer=ISSUER, audience=AUDIENCE, min_refresh_interval_s=60)
    try:
        await verifier.verify(issuer.keys[0].sign())
        stranger = new_ed25519()
        for _ in range(10):
            with pytest.raises(Unauthorized, match="unknown"):
                await verifier.verify(stranger.sign())
        assert issuer.hits == 1
    finally:
        await verifier.stop()


async def test_unreachable_issuer_without_keys_is_unavailable() -> None:
    async with serve_app(FastAPI()) as base_url:
        pass  # the server is stopped: its port now refuses connections
    verifier = JwksVerifier(base_url + "/.well-known/jwks.json", issuer=ISSUER, audience=AUDIENCE)
    try:
        with pytest.raises(Unavailable, match="signing keys"):
            await verifier.verify(new_ed25519().sign())
    finally:
        await verifier.stop()


async def test_cached_keys_keep_verifying_when_the_issuer_goes_away() -> None:
    server = JwksServer(keys=[new_ed25519()])
    async with serve_app(issuer_app({"server": server})) as base_url:
        verifier = JwksVerifier(base_url + "/.well-known/jwks.json", issuer=ISSUER, audience=AUDIENCE,
                                cache_ttl_s=0, min_refresh_interval_s=0)
        await verifier.verify(server.keys[0].sign())
    try:
        for _ in range(3):  # stale keys trigger background refreshes, which fail; verification goes on
            await verifier.verify(server.keys[0].sign())
            await asyncio.sleep(0.02)
    finally:
        await verifier.stop()


def test_keyset_ignores_keys_it_cannot_verify_with() -> None:
    ed = new_ed25519()
    document = {"keys": [
        ed.public_jwk(),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**new_ed25519().public_jwk(), "use": "enc"},
        {**new_ed25519().public_jwk(), "kid": None},
        {"kty": "OKP", "crv": "Ed25519", "kid": "broken", "x": "!!"},
    ]}
    assert KeySet.from_jwks(document).kids == {ed.kid}


# --- FastAPI dependencies -------------------------------------------------------------------------


def protected_app(verifier: JwksVerifier) -> FastAPI:
    app = FastAPI()
    app.state.verifier = verifier
    install_error_handlers(app)

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, Any]:
        return {"id": str(user.id), "plan": user.plan, "forwarded": current_authorization()}

    @app.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"id": str(user.id)}

    return app


@pytest.fixture
async def api(verifier: JwksVerifier) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=protected_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_current_user_comes_from_the_bearer_token(issuer: JwksServer, api: httpx.AsyncClient) -> None:
    user_id = uuid.uuid4()
    token = issuer.keys[0].sign(sub=str(user_id))
    response = await api.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"id": str(user_id), "plan": "pro", "forwarded": f"Bearer {token}"}


async def test_missing_token_is_401_problem(api: httpx.AsyncClient) -> None:
    response = await api.get("/me")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in response.json()["detail"]


async def test_non_bearer_scheme_is_401(api: httpx.AsyncClient) -> None:
    response = await api.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


async def test_invalid_token_is_401(issuer: JwksServer, api: httpx.AsyncClient) -> None:
    token = issuer.keys[0].sign(aud="elsewhere")
    response = await api.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "audience" in response.json()["detail"]


async def test_admin_route_needs_the_admin_role(issuer: JwksServer, api: httpx.AsyncClient) -> None:
    user = issuer.keys[0].sign(roles=["user"])
    admin_id = uuid.uuid4()
    admin = issuer.keys[0].sign(sub=str(admin_id), roles=["user", "admin"])

    refused = await api.get("/admin", headers={"Authorization": f"Bearer {user}"})
    allowed = await api.get("/admin", headers={"Authorization": f"Bearer {admin}"})

    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert allowed.status_code == 200 and allowed.json() == {"id": str(admin_id)}


def test_principal_hides_the_token_from_repr() -> None:
    principal = Principal(id=uuid.uuid4(), email=None, roles=frozenset(), plan="free", kind="user",
                          token="secret.token.value", claims={})
    assert "secret.token.value" not in repr(principal)
