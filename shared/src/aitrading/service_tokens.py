"""Tokens for a service's own calls (no user behind them): obtained from user-service, cached.

A service proves itself with the fleet's shared `SERVICE_CLIENT_SECRET` at user-service's
`POST /internal/service-token` and gets a short-lived access token whose subject is `service:<name>`.
The token is reused until a minute before it expires; concurrent callers share one fetch.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import SecretStr

from aitrading.client import ServiceClient
from aitrading.errors import Unavailable, raise_for_upstream


class ServiceTokens:
    def __init__(self, client: ServiceClient, service: str, secret: SecretStr | None, *,
                 refresh_margin_s: float = 60.0) -> None:
        self.client = client
        self.service = service
        self._secret = secret
        self.refresh_margin_s = refresh_margin_s
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._secret and self._secret.get_secret_value())

    async def token(self) -> str:
        if self._token is not None and time.monotonic() < self._expires_at - self.refresh_margin_s:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at - self.refresh_margin_s:
                return self._token
            if self._secret is None or not self._secret.get_secret_value():
                raise Unavailable(f"{self.service} has no SERVICE_CLIENT_SECRET for its own calls")
            response = await self.client.request(
                "user-service", "POST", "/internal/service-token", token="",
                json={"service": self.service, "secret": self._secret.get_secret_value()})
            body = response.json()
            raise_for_upstream("user-service", response.status_code, body)
            self._token = str(body["access_token"])
            self._expires_at = time.monotonic() + float(body["expires_in"])
            return self._token
