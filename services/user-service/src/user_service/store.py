"""Tables of user-service and the named queries on them (the only SQL of the service).

Times are passed in by the caller (UTC), so domain rules can be tested with a fixed clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.db import naming_convention_metadata

metadata = naming_convention_metadata()

Record = Row[*tuple[Any, ...]]  # a result row; columns by attribute

TS = sa.DateTime(timezone=True)

users = sa.Table(
    "users", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text(), nullable=False),  # as the user wrote it; unique case-insensitively
    sa.Column("password_hash", sa.Text(), nullable=False),
    sa.Column("roles", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{user}"),
    sa.Column("plan", sa.Text(), nullable=False, server_default="free"),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)
sa.Index("uq_users_email_lower", sa.func.lower(users.c.email), unique=True)

login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("email_key", sa.Text(), primary_key=True),  # lower-cased email, known user or not
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("last_failure_at", TS, nullable=False),
    sa.Column("locked_until", TS, nullable=True),
)

signing_keys = sa.Table(
    "signing_keys", metadata,
    sa.Column("kid", sa.Text(), primary_key=True),
    sa.Column("public_key", sa.LargeBinary(), nullable=False),  # raw 32-byte Ed25519 public key
    # PKCS#8 PEM, encrypted with the signing-key passphrase when one is set; wiped on retirement.
    sa.Column("private_key", sa.LargeBinary(), nullable=True),
    sa.Column("encrypted", sa.Boolean(), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("retired_at", TS, nullable=True),
)

refresh_families = sa.Table(
    "refresh_families", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked_at", TS, nullable=True),
    sa.Column("revoked_reason", sa.Text(), nullable=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("family_id", postgresql.UUID(as_uuid=True),
              sa.ForeignKey("refresh_families.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("token_hash", sa.LargeBinary(), nullable=False, unique=True),  # sha256 of the token
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS, nullable=True),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("prefix", sa.Text(), nullable=False, unique=True),
    sa.Column("secret_hash", sa.LargeBinary(), nullable=False),  # sha256 of the secret part
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=True),
    sa.Column("revoked_at", TS, nullable=True),
    sa.Column("last_used_at", TS, nullable=True),
)


# --- users ---------------------------------------------------------------------------------------

async def insert_user(session: AsyncSession, *, user_id: UUID, email: str, password_hash: str,
                      roles: Sequence[str], plan: str, now: datetime) -> Record | None:
    """The new user, or None when the email is taken (in any letter case)."""
    stmt = (
        postgresql.insert(users)
        .values(id=user_id, email=email, password_hash=password_hash, roles=list(roles), plan=plan,
                created_at=now, updated_at=now)
        .on_conflict_do_nothing()
        .returning(*users.c)
    )
    return (await session.execute(stmt)).first()


async def user_by_email(session: AsyncSession, email: str) -> Record | None:
    stmt = sa.select(users).where(sa.func.lower(users.c.email) == email.lower())
    return (await session.execute(stmt)).first()


async def user_by_id(session: AsyncSession, user_id: UUID) -> Record | None:
    return (await session.execute(sa.select(users).where(users.c.id == user_id))).first()


async def update_user(session: AsyncSession, user_id: UUID, values: dict[str, Any],
                      now: datetime) -> Record | None:
    stmt = (sa.update(users).where(users.c.id == user_id).values(**values, updated_at=now)
            .returning(*users.c))
    return (await session.execute(stmt)).first()


async def set_password_hash(session: AsyncSession, user_id: UUID, password_hash: str, now: datetime) -> None:
    await session.execute(sa.update(users).where(users.c.id == user_id)
                          .values(password_hash=password_hash, updated_at=now))


async def users_page(session: AsyncSession, *, limit: int, offset: int,
                     email_contains: str | None) -> tuple[list[Record], int]:
    where: sa.ColumnElement[bool] = sa.true()
    if email_contains:
        escaped = email_contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        where = sa.func.lower(users.c.email).like(pattern, escape="\\")
    total = (await session.execute(sa.select(sa.func.count()).select_from(users).where(where))).scalar_one()
    rows = (await session.execute(
        sa.select(users).where(where).order_by(users.c.created_at, users.c.id).limit(limit).offset(offset)
    )).all()
    return list(rows), int(total)


# --- login failures ------------------------------------------------------------------------------

async def login_failure(session: AsyncSession, email_key: str) -> Record | None:
    stmt = sa.select(login_failures).where(login_failures.c.email_key == email_key)
    return (await session.execute(stmt)).first()


async def add_login_failure(session: AsyncSession, email_key: str, now: datetime) -> int:
    """Count one more consecutive failure (atomically, across replicas); the new count."""
    insert = postgresql.insert(login_failures).values(email_key=email_key, failures=1, last_failure_at=now)
    stmt = insert.on_conflict_do_update(
        index_elements=[login_failures.c.email_key],
        set_={"failures": login_failures.c.failures + 1, "last_failure_at": now},
    ).returning(login_failures.c.failures)
    return int((await session.execute(stmt)).scalar_one())


async def lock_login(session: AsyncSession, email_key: str, until: datetime) -> None:
    await session.execute(sa.update(login_failures).where(login_failures.c.email_key == email_key)
                          .values(locked_until=until))


async def clear_login_failures(session: AsyncSession, email_key: str) -> None:
    await session.execute(sa.delete(login_failures).where(login_failures.c.email_key == email_key))


# --- signing keys --------------------------------------------------------------------------------

async def advisory_lock(session: AsyncSession, name: str) -> None:
    """Serialize one start-up or admin step across replicas (held until the transaction ends)."""
    await session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                          {"name": f"user_service.{name}"})


async def current_signing_key(session: AsyncSession) -> Record | None:
    stmt = (sa.select(signing_keys).where(signing_keys.c.retired_at.is_(None))
            .order_by(signing_keys.c.created_at.desc()).limit(1))
    return (await session.execute(stmt)).first()


async def insert_signing_key(session: AsyncSession, *, kid: str, public_key: bytes, private_key: bytes,
                             encrypted: bool, now: datetime) -> None:
    await session.execute(sa.insert(signing_keys).values(
        kid=kid, public_key=public_key, private_key=private_key, encrypted=encrypted, created_at=now))


async def retire_signing_keys(session: AsyncSession, now: datetime) -> None:
    """Retire every current key and wipe its private half: it signs nothing from now on."""
    await session.execute(sa.update(signing_keys).where(signing_keys.c.retired_at.is_(None))
                          .values(retired_at=now, private_key=None))


async def published_signing_keys(session: AsyncSession, retired_after: datetime) -> list[Record]:
    """Current keys and keys retired recently enough that tokens they signed may still be alive."""
    stmt = (
        sa.select(signing_keys.c.kid, signing_keys.c.public_key)
        .where(sa.or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > retired_after))
        .order_by(signing_keys.c.created_at.desc())
    )
    return list((await session.execute(stmt)).all())


# --- refresh tokens ------------------------------------------------------------------------------

async def insert_refresh_family(session: AsyncSession, *, family_id: UUID, user_id: UUID,
                                now: datetime) -> None:
    await session.execute(sa.insert(refresh_families).values(id=family_id, user_id=user_id, created_at=now))


async def insert_refresh_token(session: AsyncSession, *, token_id: UUID, family_id: UUID, token_hash: bytes,
                               now: datetime, expires_at: datetime) -> None:
    await session.execute(sa.insert(refresh_tokens).values(
        id=token_id, family_id=family_id, token_hash=token_hash, created_at=now, expires_at=expires_at))


async def refresh_token_for_update(session: AsyncSession, token_hash: bytes) -> Record | None:
    """The token with its family's owner and revocation, locked so concurrent uses are serialized."""
    stmt = (
        sa.select(refresh_tokens.c.id, refresh_tokens.c.family_id, refresh_tokens.c.expires_at,
                  refresh_tokens.c.used_at, refresh_families.c.user_id, refresh_families.c.revoked_at)
        .join(refresh_families, refresh_families.c.id == refresh_tokens.c.family_id)
        .where(refresh_tokens.c.token_hash == token_hash)
        .with_for_update(of=refresh_tokens)
    )
    return (await session.execute(stmt)).first()


async def mark_refresh_token_used(session: AsyncSession, token_id: UUID, now: datetime) -> None:
    await session.execute(sa.update(refresh_tokens).where(refresh_tokens.c.id == token_id)
                          .values(used_at=now))


async def revoke_refresh_family(session: AsyncSession, family_id: UUID, now: datetime, reason: str) -> None:
    await session.execute(
        sa.update(refresh_families)
        .where(refresh_families.c.id == family_id, refresh_families.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )


async def revoke_refresh_families_of(session: AsyncSession, user_id: UUID, now: datetime,
                                     reason: str) -> None:
    await session.execute(
        sa.update(refresh_families)
        .where(refresh_families.c.user_id == user_id, refresh_families.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )


# --- API keys ------------------------------------------------------------------------------------

async def insert_api_key(session: AsyncSession, *, key_id: UUID, user_id: UUID, name: str, prefix: str,
                         secret_hash: bytes, now: datetime, expires_at: datetime | None) -> Record:
    stmt = (sa.insert(api_keys)
            .values(id=key_id, user_id=user_id, name=name, prefix=prefix, secret_hash=secret_hash,
                    created_at=now, expires_at=expires_at)
            .returning(*api_keys.c))
    return (await session.execute(stmt)).one()


async def api_keys_of(session: AsyncSession, user_id: UUID) -> list[Record]:
    stmt = (sa.select(api_keys).where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
            .order_by(api_keys.c.created_at, api_keys.c.id))
    return list((await session.execute(stmt)).all())


async def revoke_api_key(session: AsyncSession, user_id: UUID, key_id: UUID, now: datetime) -> bool:
    """Revoke the owner's key; False when the owner has no such key (or it was revoked before)."""
    stmt = (sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(api_keys.c.id))
    return (await session.execute(stmt)).first() is not None


async def api_key_by_prefix(session: AsyncSession, prefix: str) -> Record | None:
    return (await session.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix))).first()


async def touch_api_key(session: AsyncSession, key_id: UUID, now: datetime) -> None:
    await session.execute(sa.update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
