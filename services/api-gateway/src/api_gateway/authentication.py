"""Who is calling: bearer access tokens and API keys, verified once and then remembered.

An access token is verified with the platform's `JwksVerifier` (signature, issuer, audience, expiry)
the first time the gateway sees it; the resulting `Caller` is kept, keyed by the token string, until
the token's `exp`, so a client repeating its token costs one dictionary lookup. The cache is bounded
(oldest first out). A tampered token is a different string, so it is never served from the cache.

API keys (`X-API-Key: atp_...` or `Authorization: Bearer atp_...`) are exchanged at user-service for
a short-lived access token (see `api_keys.ApiKeyExchange`); the upstream request then carries that
token, so every service still verifies the caller itself (zero trust).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aitrading.auth import JwksVerifier, Principal
from aitrading.errors import Unauthorized
from api_gateway.api_keys import API_KEY_PREFIX, ApiKeyExchange


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    user_id: str
    plan: str
    limit_key: str  # the rate-limit bucket, "user:<id>"
    authorization: bytes  # the header value sent upstream: b"Bearer <access token>"
    expires_at: float  # the token's exp, seconds since the epoch


class Authenticator:
    def __init__(self, verifier: JwksVerifier, api_keys: ApiKeyExchange, *, cache_size: int = 10_000) -> None:
        self.verifier = verifier
        self.api_keys = api_keys
        self.cache_size = max(1, cache_size)
        self._callers: dict[str, Caller] = {}

    async def identify(self, authorization: str | None, api_key: str | None) -> Caller | None:
        """The caller proven by the request's credentials; None when it sent none.

        Raises Unauthorized for credentials that do not prove anyone, Unavailable when the issuer's
        keys or the API-key exchange cannot be reached.
        """
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise Unauthorized("the Authorization header must be 'Bearer <access token>'")
            if credential.startswith(API_KEY_PREFIX):
                return await self.caller_for_token(await self.api_keys.access_token(credential))
            return await self.caller_for_token(credential)
        if api_key is not None:
            if not api_key.startswith(API_KEY_PREFIX):
                raise Unauthorized(f"an API key starts with {API_KEY_PREFIX!r}")
            return await self.caller_for_token(await self.api_keys.access_token(api_key))
        return None

    async def caller_for_token(self, token: str) -> Caller:
        cached = self._callers.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                return cached
            del self._callers[token]
        principal = await self.verifier.verify(token)
        caller = _caller(principal, token)
        callers = self._callers
        if len(callers) >= self.cache_size:
            del callers[next(iter(callers))]
        callers[token] = caller
        return caller

    def __len__(self) -> int:
        return len(self._callers)


def _caller(principal: Principal, token: str) -> Caller:
    user_id = str(principal.id)
    exp = principal.claims.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) else time.time()
    return Caller(principal, user_id, principal.plan, f"user:{user_id}", b"Bearer " + token.encode(),
                  expires_at)
