"""Access tokens: Ed25519 signing keys kept in Postgres, the JWKS that publishes them, and JWT issuing.

One key is current and signs; rotation makes a new current key, retires the old one and wipes its
private half. A retired key stays in the JWKS for as long as a token it signed can be alive (access
token lifetime plus a margin). Every replica signs with the key it loaded and looks for a newer one
after `cache_s`; the JWKS is read from the database on each request, so it always includes a key that
any replica may already sign with.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import Database
from aitrading.errors import Unavailable
from user_service import store

_log = structlog.get_logger("user_service.tokens")

ALGORITHM = "EdDSA"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid!r}, created_at={self.created_at.isoformat()})"


def new_kid(now: datetime) -> str:
    return f"{now:%Y%m%d}-{secrets.token_hex(6)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(kid: str, raw_public: bytes) -> dict[str, str]:
    """An Ed25519 public key as a JWK (RFC 8037)."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw_public), "kid": kid, "alg": ALGORITHM,
            "use": "sig"}


def jwks_document(keys: Sequence[tuple[str, bytes]]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [public_jwk(kid, raw) for kid, raw in keys]}


def private_key_to_pem(key: Ed25519PrivateKey, passphrase: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def private_key_from_pem(pem: bytes, passphrase: str | None) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("a stored signing key is not an Ed25519 key")
    return key


def access_claims(*, issuer: str, audience: str, subject: str, roles: Sequence[str], plan: str, kind: str,
                  now: datetime, ttl_s: int, email: str | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The claims of an access token, as aitrading.auth verifies them."""
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "exp": issued + ttl_s,
        "iat": issued,
        "nbf": issued,
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
        "plan": plan,
        "typ": "access",
        "kind": kind,
    }
    if email is not None:
        claims["email"] = email
    if extra:
        claims.update(extra)
    return claims


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})


class KeyRing:
    """The signing keys of the issuer (a service resource: makes the first key on start)."""

    name = "signing-keys"

    def __init__(self, *, passphrase: str | None, retention_s: int, cache_s: float = 30.0,
                 db: Database | None = None) -> None:
        self._database = db
        self._passphrase = passphrase
        self._retention_s = retention_s
        self._cache_s = cache_s
        self._current: SigningKey | None = None
        self._loaded_at = float("-inf")

    def use(self, db: Database) -> None:
        """Bind the service database (built by the service factory after this ring)."""
        self._database = db

    @property
    def _db(self) -> Database:
        if self._database is None:
            raise RuntimeError("KeyRing.use(database) was not called")
        return self._database

    async def start(self) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            await store.advisory_lock(session, "signing_keys")
            row = await store.current_signing_key(session)
            if row is None:
                key = await self._create(session, datetime.now(UTC))
                _log.info("first signing key created", kid=key.kid)
        await self._load()

    async def stop(self) -> None:
        self._current = None

    async def check(self) -> None:
        if self._current is None:
            raise Unavailable("no signing key loaded")

    async def current(self) -> SigningKey:
        """The key to sign with now."""
        if self._current is None or time.monotonic() - self._loaded_at > self._cache_s:
            await self._load()
        assert self._current is not None
        return self._current

    async def rotate(self) -> SigningKey:
        """Make a new current key; the previous one is retired but stays published while needed."""
        now = datetime.now(UTC)
        async with self._db.sessionmaker() as session, session.begin():
            await store.advisory_lock(session, "signing_keys")
            await store.retire_signing_keys(session, now)
            key = await self._create(session, now)
        self._current, self._loaded_at = key, time.monotonic()
        _log.info("signing key rotated", kid=key.kid)
        return key

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys that verify every access token that can still be alive."""
        retired_after = datetime.now(UTC) - timedelta(seconds=self._retention_s)
        async with self._db.sessionmaker() as session:
            rows = await store.published_signing_keys(session, retired_after)
        return jwks_document([(row.kid, row.public_key) for row in rows])

    async def _create(self, session: AsyncSession, now: datetime) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        key = SigningKey(new_kid(now), private, now)
        await store.insert_signing_key(
            session, kid=key.kid, public_key=raw_public_key(private.public_key()),
            private_key=private_key_to_pem(private, self._passphrase),
            encrypted=self._passphrase is not None, now=now,
        )
        return key

    async def _load(self) -> None:
        async with self._db.sessionmaker() as session:
            row = await store.current_signing_key(session)
        if row is None or row.private_key is None:
            raise Unavailable("there is no current signing key; restart user-service to create one")
        if self._current is None or self._current.kid != row.kid:
            if row.encrypted and not self._passphrase:
                raise RuntimeError(f"signing key {row.kid} is encrypted: set SIGNING_KEY_PASSPHRASE")
            self._current = SigningKey(row.kid, private_key_from_pem(row.private_key, self._passphrase),
                                       row.created_at)
        self._loaded_at = time.monotonic()


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenIssuer:
    """Signs access tokens for users and services with the current key of the ring."""

    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl_s: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    async def for_user(self, *, user_id: UUID, email: str, roles: Sequence[str], plan: str, now: datetime,
                       api_key_id: UUID | None = None, not_after: datetime | None = None) -> IssuedToken:
        """A user's access token; `not_after` shortens it (an API key that expires sooner)."""
        ttl = self.ttl_s
        if not_after is not None:
            ttl = max(1, min(ttl, int((not_after - now).total_seconds())))
        extra = {"api_key_id": str(api_key_id)} if api_key_id is not None else None
        claims = access_claims(issuer=self.issuer, audience=self.audience, subject=str(user_id), email=email,
                               roles=roles, plan=plan, kind="user", now=now, ttl_s=ttl, extra=extra)
        return IssuedToken(sign(claims, await self.keys.current()), ttl)

    async def for_service(self, name: str, now: datetime) -> IssuedToken:
        claims = access_claims(issuer=self.issuer, audience=self.audience, subject=f"service:{name}",
                               roles=["service"], plan="free", kind="service", now=now, ttl_s=self.ttl_s)
        return IssuedToken(sign(claims, await self.keys.current()), self.ttl_s)
