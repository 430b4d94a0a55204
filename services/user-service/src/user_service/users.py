"""Accounts: registration, reading, the admin's changes, and the admin bootstrapped from settings."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.auth import PLANS
from aitrading.db import Database
from aitrading.errors import Conflict, Forbidden, Invalid, NotFound
from aitrading.outbox import enqueue
from user_service import events, refresh, store
from user_service.passwords import Passwords, password_problems

_log = structlog.get_logger("user_service.users")

DEFAULT_ROLES = ("user",)
ADMIN_ROLES = ("user", "admin")
RESERVED_ROLES = frozenset({"service"})  # only service tokens carry it
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_LOCAL_FORBIDDEN = set(' \t\r\n"(),:;<>[\\]@')


@dataclass(frozen=True)
class User:
    id: UUID
    email: str
    roles: tuple[str, ...]
    plan: str
    disabled: bool
    created_at: datetime
    password_hash: str

    def __repr__(self) -> str:
        return f"User(id={self.id}, email={self.email!r}, roles={self.roles}, plan={self.plan!r})"

    @classmethod
    def of(cls, row: Any) -> User:
        return cls(id=row.id, email=row.email, roles=tuple(row.roles), plan=row.plan, disabled=row.disabled,
                   created_at=row.created_at, password_hash=row.password_hash)


def email_problem(email: str) -> str | None:
    """Why `email` is not a usable address, or None. Deliberately plain: one @, a sane local part, a
    dotted domain of DNS labels; no network look-up."""
    if len(email) > 254:
        return "email is too long (at most 254 characters)"
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "email must look like name@example.com"
    if "@" in local or any(ch in _LOCAL_FORBIDDEN for ch in local):
        return "email has a character that is not allowed before the @"
    if len(local) > 64:
        return "email has more than 64 characters before the @"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "email has a misplaced dot before the @"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return "email domain must be a domain name such as example.com"
    if labels[-1].isdigit():
        return "email domain must be a domain name, not an address"
    return None


def check_registration(email: str, password: str) -> str:
    """The email to store (trimmed); raises Invalid naming every field that is wrong and why."""
    email = email.strip()
    errors: list[dict[str, str]] = []
    email_why = email_problem(email)
    if email_why:
        errors.append({"field": "email", "reason": email_why})
    errors.extend({"field": "password", "reason": f"password {p}"}
                  for p in password_problems(password, email=email))
    if errors:
        raise Invalid("; ".join(e["reason"] for e in errors), errors=errors)
    return email


def check_roles(roles: Sequence[str]) -> tuple[str, ...]:
    cleaned: list[str] = []
    for role in roles:
        if not _ROLE.fullmatch(role):
            raise Invalid(f"role {role!r} is not a role name (lowercase letters, digits, '-', '_')",
                          errors=[{"field": "roles", "reason": f"{role!r} is not a role name"}])
        if role in RESERVED_ROLES:
            raise Invalid(f"role {role!r} is reserved for service tokens",
                          errors=[{"field": "roles", "reason": f"{role!r} is reserved"}])
        if role not in cleaned:
            cleaned.append(role)
    return tuple(cleaned)


def check_plan(plan: str) -> str:
    if plan not in PLANS:
        known = ", ".join(sorted(PLANS))
        raise Invalid(f"plan {plan!r} is unknown; it is one of {known}",
                      errors=[{"field": "plan", "reason": f"one of {known}"}])
    return plan


async def register(session: AsyncSession, passwords: Passwords, *, email: str, password: str, now: datetime,
                   roles: Sequence[str] = DEFAULT_ROLES, plan: str = "free") -> User:
    """A new account; `users.registered` goes out through the outbox with it. 409 if the email exists."""
    email = check_registration(email, password)
    if await store.user_by_email(session, email) is not None:
        raise Conflict("an account with this email already exists")
    password_hash = await passwords.hash(password)
    row = await store.insert_user(session, user_id=uuid.uuid4(), email=email, password_hash=password_hash,
                                  roles=roles, plan=plan, now=now)
    if row is None:  # registered concurrently between the check and the insert
        raise Conflict("an account with this email already exists")
    user = User.of(row)
    await enqueue(session, events.user_registered(user))
    return user


async def get(session: AsyncSession, user_id: UUID) -> User:
    row = await store.user_by_id(session, user_id)
    if row is None:
        raise NotFound("no such user")
    return User.of(row)


async def active(session: AsyncSession, user_id: UUID) -> User:
    """The caller's own account, which must still exist and be enabled."""
    user = await get(session, user_id)
    if user.disabled:
        raise Forbidden("this account is disabled")
    return user


@dataclass(frozen=True)
class Page:
    items: list[User]
    total: int
    limit: int
    offset: int


async def page(session: AsyncSession, *, limit: int, offset: int, email_contains: str | None = None) -> Page:
    rows, total = await store.users_page(session, limit=limit, offset=offset, email_contains=email_contains)
    return Page([User.of(r) for r in rows], total, limit, offset)


@dataclass(frozen=True)
class UserChange:
    roles: Sequence[str] | None = None
    plan: str | None = None
    disabled: bool | None = None


async def update(session: AsyncSession, user_id: UUID, change: UserChange, *, admin_id: UUID,
                 now: datetime) -> User:
    """An admin's change of roles, plan or disabled state; disabling ends the user's sessions."""
    values: dict[str, Any] = {}
    if change.roles is not None:
        values["roles"] = list(check_roles(change.roles))
    if change.plan is not None:
        values["plan"] = check_plan(change.plan)
    if change.disabled is not None:
        values["disabled"] = change.disabled
    if user_id == admin_id and (change.disabled or ("roles" in values and "admin" not in values["roles"])):
        raise Invalid("an admin cannot disable their own account or remove their own admin role")
    if not values:
        return await get(session, user_id)
    row = await store.update_user(session, user_id, values, now)
    if row is None:
        raise NotFound("no such user")
    if change.disabled:
        await refresh.revoke_all_of(session, user_id, now, "disabled")
    return User.of(row)


async def bootstrap_admin(db: Database, passwords: Passwords, *, email: str, password: str) -> User:
    """Make sure the configured admin exists and holds the admin role (its password is set only once)."""
    now = datetime.now(UTC)
    async with db.sessionmaker() as session, session.begin():
        await store.advisory_lock(session, "bootstrap_admin")
        row = await store.user_by_email(session, email.strip())
        if row is None:
            try:
                user = await register(session, passwords, email=email, password=password, now=now,
                                      roles=ADMIN_ROLES)
            except Invalid as exc:
                raise ValueError(f"ADMIN_EMAIL/ADMIN_PASSWORD are not acceptable: {exc.detail}") from exc
            _log.info("bootstrap admin created", user_id=str(user.id))
            return user
        user = User.of(row)
        if "admin" not in user.roles or user.disabled:
            roles = [*user.roles, "admin"] if "admin" not in user.roles else list(user.roles)
            updated = await store.update_user(session, user.id, {"roles": roles, "disabled": False}, now)
            assert updated is not None
            user = User.of(updated)
            _log.info("bootstrap admin given the admin role", user_id=str(user.id))
        return user
