"""API-key exchange: an `atp_...` key becomes a short-lived access token issued by user-service.

user-service's contract: `POST /internal/api-keys/exchange {"key": "atp_..."}` → 200
`{"access_token": "...", "expires_in": <seconds>}`; an unknown or revoked key → 401 (or 403/404).
The call goes through the platform's service client (registry address, request id, circuit breaker).
The gateway remembers each exchange, keyed by the SHA-256 of the key (the key itself is never kept),
for at most `cache_s` and never closer than `refresh_margin_s` to the token's expiry; concurrent
requests with the same new key share one exchange. A key revoked at user-service therefore stops
working at the gateway within `cache_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import structlog

from aitrading.client import ServiceClient
from aitrading.errors import Unauthorized, Unavailable
from api_gateway.routes import IDENTITY_SERVICE

_log = structlog.get_logger("api_gateway.api_keys")

API_KEY_PREFIX = "atp_"
EXCHANGE_PATH = "/internal/api-keys/exchange"
_REFUSED = frozenset({400, 401, 403, 404, 422})


class ApiKeyExchange:
    def __init__(self, client: ServiceClient, *, cache_s: float = 30.0, refresh_margin_s: float = 30.0,
                 max_entries: int = 10_000, timeout_s: float = 5.0) -> None:
        self._client = client
        self.cache_s = cache_s
        self.refresh_margin_s = refresh_margin_s
        self.max_entries = max(1, max_entries)
        self.timeout_s = timeout_s
        self._tokens: dict[str, tuple[str, float]] = {}  # sha256(key) → (access token, renew at)
        self._pending: dict[str, asyncio.Task[str]] = {}

    async def access_token(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        cached = self._tokens.get(digest)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.create_task(self._exchange(key, digest), name="api-key-exchange")
            self._pending[digest] = task
            task.add_done_callback(lambda done: self._finished(digest, done))
        return await asyncio.shield(task)

    def forget_all(self) -> None:
        self._tokens.clear()

    def _finished(self, digest: str, task: asyncio.Task[str]) -> None:
        self._pending.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited any more is not reported

    async def _exchange(self, key: str, digest: str) -> str:
        response = await self._client.request(IDENTITY_SERVICE, "POST", EXCHANGE_PATH, json={"key": key},
                                              timeout_s=self.timeout_s)
        status = response.status_code
        if status in _REFUSED:
            raise Unauthorized("the API key is unknown or revoked")
        if not 200 <= status < 300:
            raise Unavailable(f"API keys cannot be checked now: user-service answered {status}")
        try:
            document = response.json()
            token = document["access_token"]
            expires_in = float(document["expires_in"])
            if not isinstance(token, str) or not token:
                raise ValueError("empty access token")
        except (ValueError, KeyError, TypeError) as exc:
            _log.warning("unreadable API-key exchange answer", status=status, error=repr(exc))
            raise Unavailable("API keys cannot be checked now: user-service gave an unreadable answer"
                              ) from exc
        margin = min(self.refresh_margin_s, expires_in / 2)
        tokens = self._tokens
        if len(tokens) >= self.max_entries:
            del tokens[next(iter(tokens))]
        now = time.time()
        tokens[digest] = (token, min(now + self.cache_s, now + expires_in - margin))
        return token
