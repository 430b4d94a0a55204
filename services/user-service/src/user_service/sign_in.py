"""Signing in with a password, renewing with a refresh token, signing out.

A refusal here still writes (a failed attempt counted, a reused token's family revoked): the caller
commits before passing the refusal on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Unauthorized
from user_service import lockout, refresh, store
from user_service.lockout import LockoutPolicy
from user_service.passwords import Passwords, Verification
from user_service.tokens import TokenIssuer
from user_service.users import User

BAD_CREDENTIALS = "the email or password is not correct"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


class Authenticator:
    def __init__(self, passwords: Passwords, tokens: TokenIssuer, *, lockout_policy: LockoutPolicy,
                 refresh_ttl_s: int) -> None:
        self.passwords = passwords
        self.tokens = tokens
        self.lockout_policy = lockout_policy
        self.refresh_ttl_s = refresh_ttl_s

    async def login(self, session: AsyncSession, email: str, password: str, now: datetime) -> TokenPair:
        """Tokens for the right password; 401 otherwise (the same for an unknown email), 429 while locked."""
        await lockout.ensure_not_locked(session, email, now)
        row = await store.user_by_email(session, email.strip())
        user = User.of(row) if row is not None else None
        verdict = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not verdict.ok:
            await lockout.record_failure(session, email, now, self.lockout_policy)
            raise Unauthorized(BAD_CREDENTIALS)
        await lockout.reset(session, email)
        if user.disabled:
            raise Unauthorized("this account is disabled")
        if verdict is Verification.OK_NEEDS_REHASH:
            await store.set_password_hash(session, user.id, await self.passwords.hash(password), now)
        refresh_token = await refresh.start_family(session, user.id, now, self.refresh_ttl_s)
        return await self._pair(user, refresh_token, now)

    async def renew(self, session: AsyncSession, refresh_token: str, now: datetime) -> TokenPair:
        """The next pair of the family; the account is read again, so role and plan changes apply."""
        user_id, family_id, next_token = await refresh.rotate(session, refresh_token, now, self.refresh_ttl_s)
        row = await store.user_by_id(session, user_id)
        if row is None or row.disabled:
            await refresh.revoke_family(session, family_id, now, "disabled")
            raise Unauthorized("this account is disabled")
        return await self._pair(User.of(row), next_token, now)

    async def logout(self, session: AsyncSession, refresh_token: str, now: datetime) -> None:
        await refresh.revoke_family_of(session, refresh_token, now, "logout")

    async def _pair(self, user: User, refresh_token: str, now: datetime) -> TokenPair:
        access = await self.tokens.for_user(user_id=user.id, email=user.email, roles=user.roles,
                                            plan=user.plan, now=now)
        return TokenPair(access.access_token, refresh_token, access.expires_in)
