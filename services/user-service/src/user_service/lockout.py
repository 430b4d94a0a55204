"""Slowing down password guessing: after `threshold` consecutive failures for one email, sign-in is
refused for a period that doubles with each further failure.

Kept in Postgres, keyed by the lower-cased email whether or not an account exists (so a lockout tells
nothing about which emails are registered), and shared by every replica; a restart forgets nothing.
A successful sign-in clears the count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import RateLimited
from user_service import store


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int = 5
    base_s: int = 30
    max_s: int = 3600

    def lock_for_s(self, failures: int) -> int | None:
        """How long to refuse sign-in after `failures` consecutive failures (None: not locked)."""
        if failures < self.threshold:
            return None
        doublings = min(failures - self.threshold, 32)  # bounded: 2**32 times base is past any max
        return min(self.max_s, self.base_s * (1 << doublings))


class LockedOut(RateLimited):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many failed sign-in attempts for this email; try again in {retry_after_s} seconds",
            headers={"Retry-After": str(retry_after_s)},
            retry_after_s=retry_after_s,
        )


def email_key(email: str) -> str:
    return email.strip().lower()


def retry_after_s(locked_until: datetime | None, now: datetime) -> int | None:
    """Whole seconds until the lock ends (at least 1), or None when there is no lock in force."""
    if locked_until is None or locked_until <= now:
        return None
    return max(1, math.ceil((locked_until - now).total_seconds()))


async def ensure_not_locked(session: AsyncSession, email: str, now: datetime) -> None:
    row = await store.login_failure(session, email_key(email))
    wait = retry_after_s(row.locked_until, now) if row is not None else None
    if wait is not None:
        raise LockedOut(wait)


async def record_failure(session: AsyncSession, email: str, now: datetime, policy: LockoutPolicy) -> None:
    key = email_key(email)
    failures = await store.add_login_failure(session, key, now)
    lock_s = policy.lock_for_s(failures)
    if lock_s is not None:
        await store.lock_login(session, key, now + timedelta(seconds=lock_s))


async def reset(session: AsyncSession, email: str) -> None:
    await store.clear_login_failures(session, email_key(email))
