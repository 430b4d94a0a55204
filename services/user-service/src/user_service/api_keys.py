"""API keys: long-lived credentials a user creates for scripts, exchanged at the gateway for tokens.

A key reads `atp_<prefix>_<secret>`. The prefix (public, shown in listings) finds the row; only the
sha256 of the secret is stored, so the full key is shown once, at creation. The gateway exchanges a
key for a normal short-lived access token of its owner (with an `api_key_id` claim).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Invalid, NotFound, Unauthorized
from user_service import store
from user_service.users import User

SCHEME = "atp"
PREFIX_BYTES = 6  # 12 hex characters
SECRET_BYTES = 32
NAME_MAX = 100


@dataclass(frozen=True)
class ApiKey:
    id: UUID
    user_id: UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> ApiKey:
        return cls(id=row.id, user_id=row.user_id, name=row.name, prefix=row.prefix,
                   created_at=row.created_at, expires_at=row.expires_at, last_used_at=row.last_used_at,
                   revoked_at=row.revoked_at)


def new_key() -> tuple[str, str, str]:
    """(prefix, secret, full key); the prefix is hex, so the key splits unambiguously on '_'."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return prefix, secret, f"{SCHEME}_{prefix}_{secret}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    scheme, _, rest = key.strip().partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or len(prefix) != 2 * PREFIX_BYTES or not secret:
        return None
    if any(ch not in "0123456789abcdef" for ch in prefix):
        return None
    return prefix, secret


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def usable(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def check_new_key(name: str, expires_at: datetime | None, now: datetime) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise Invalid(f"name must be 1 to {NAME_MAX} characters",
                      errors=[{"field": "name", "reason": f"1 to {NAME_MAX} characters"}])
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise Invalid("expires_at needs a time zone (e.g. 2030-01-01T00:00:00Z)",
                          errors=[{"field": "expires_at", "reason": "a time zone is required"}])
        if expires_at <= now:
            raise Invalid("expires_at must be in the future",
                          errors=[{"field": "expires_at", "reason": "must be in the future"}])
    return name


async def create(session: AsyncSession, owner: UUID, *, name: str, expires_at: datetime | None,
                 now: datetime) -> tuple[ApiKey, str]:
    """The new key and its full text (never retrievable again)."""
    name = check_new_key(name, expires_at, now)
    prefix, secret, full = new_key()
    row = await store.insert_api_key(session, key_id=uuid.uuid4(), user_id=owner, name=name, prefix=prefix,
                                     secret_hash=secret_hash(secret), now=now, expires_at=expires_at)
    return ApiKey.of(row), full


async def list_for(session: AsyncSession, owner: UUID) -> list[ApiKey]:
    return [ApiKey.of(row) for row in await store.api_keys_of(session, owner)]


async def revoke(session: AsyncSession, owner: UUID, key_id: UUID, now: datetime) -> None:
    if not await store.revoke_api_key(session, owner, key_id, now):
        raise NotFound("no such API key")


_REFUSED = "the API key is not valid (unknown, revoked or expired)"


async def authenticate(session: AsyncSession, key: str, now: datetime) -> tuple[ApiKey, User]:
    """The key and its owner, when the key is valid and the owner enabled; records its use."""
    parsed = parse_key(key)
    if parsed is None:
        raise Unauthorized(_REFUSED)
    prefix, secret = parsed
    row = await store.api_key_by_prefix(session, prefix)
    if row is None or not hmac.compare_digest(row.secret_hash, secret_hash(secret)):
        raise Unauthorized(_REFUSED)
    api_key = ApiKey.of(row)
    if not usable(api_key, now):
        raise Unauthorized(_REFUSED)
    owner = await store.user_by_id(session, api_key.user_id)
    if owner is None or owner.disabled:
        raise Unauthorized(_REFUSED)
    await store.touch_api_key(session, api_key.id, now)
    return api_key, User.of(owner)
