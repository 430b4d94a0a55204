"""Rotating refresh tokens.

A refresh token is an opaque random string; only its sha256 is stored. Each sign-in starts a family;
using a token marks it used and issues the next token of the same family. A token presented again
after it was used means it leaked (or a client raced itself): the whole family is revoked, so the
thief's and the owner's tokens stop working together and the owner has to sign in again.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Unauthorized
from user_service import store

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Standing(enum.Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REUSED = "reused"  # used before: its family must be revoked
    REVOKED = "revoked"  # its family was revoked (logout, reuse, disabled account)


@dataclass(frozen=True)
class StoredToken:
    id: UUID
    family_id: UUID
    user_id: UUID
    expires_at: datetime
    used_at: datetime | None
    family_revoked_at: datetime | None


def standing(token: StoredToken | None, now: datetime) -> Standing:
    """The rules, in order: a revoked family refuses everything; a second use is reuse; then expiry."""
    if token is None:
        return Standing.UNKNOWN
    if token.family_revoked_at is not None:
        return Standing.REVOKED
    if token.used_at is not None:
        return Standing.REUSED
    if token.expires_at <= now:
        return Standing.EXPIRED
    return Standing.VALID


_REFUSALS = {
    Standing.UNKNOWN: "the refresh token is not valid; sign in again",
    Standing.EXPIRED: "the refresh token has expired; sign in again",
    Standing.REUSED: "the refresh token was already used, so its session has been ended; sign in again",
    Standing.REVOKED: "the refresh token's session has ended; sign in again",
}


class RefreshRefused(Unauthorized):
    def __init__(self, why: Standing) -> None:
        super().__init__(_REFUSALS[why])
        self.why = why


async def start_family(session: AsyncSession, user_id: UUID, now: datetime, ttl_s: int) -> str:
    """A new family for a fresh sign-in; its first token."""
    family_id = uuid.uuid4()
    await store.insert_refresh_family(session, family_id=family_id, user_id=user_id, now=now)
    return await _issue(session, family_id, now, ttl_s)


async def rotate(session: AsyncSession, token: str, now: datetime, ttl_s: int) -> tuple[UUID, UUID, str]:
    """Use `token`: (user id, family id, next token). A reused token revokes its family and is refused.

    The caller must keep this transaction's writes even when it raises (the revocation must stick).
    """
    stored = await _stored(session, token)
    state = standing(stored, now)
    if state is Standing.REUSED:
        assert stored is not None
        await store.revoke_refresh_family(session, stored.family_id, now, "reuse")
    if state is not Standing.VALID:
        raise RefreshRefused(state)
    assert stored is not None
    await store.mark_refresh_token_used(session, stored.id, now)
    return stored.user_id, stored.family_id, await _issue(session, stored.family_id, now, ttl_s)


async def revoke_family_of(session: AsyncSession, token: str, now: datetime, reason: str) -> None:
    """End the session `token` belongs to (nothing happens for an unknown token)."""
    stored = await _stored(session, token)
    if stored is not None:
        await store.revoke_refresh_family(session, stored.family_id, now, reason)


async def revoke_family(session: AsyncSession, family_id: UUID, now: datetime, reason: str) -> None:
    await store.revoke_refresh_family(session, family_id, now, reason)


async def revoke_all_of(session: AsyncSession, user_id: UUID, now: datetime, reason: str) -> None:
    await store.revoke_refresh_families_of(session, user_id, now, reason)


async def _issue(session: AsyncSession, family_id: UUID, now: datetime, ttl_s: int) -> str:
    token = new_token()
    await store.insert_refresh_token(session, token_id=uuid.uuid4(), family_id=family_id,
                                     token_hash=token_hash(token), now=now,
                                     expires_at=now + timedelta(seconds=ttl_s))
    return token


async def _stored(session: AsyncSession, token: str) -> StoredToken | None:
    row = await store.refresh_token_for_update(session, token_hash(token))
    if row is None:
        return None
    return StoredToken(id=row.id, family_id=row.family_id, user_id=row.user_id, expires_at=row.expires_at,
                       used_at=row.used_at, family_revoked_at=row.revoked_at)
