"""The service client: calls another service by registry name over one pooled httpx client.

- Addressing: `aitrading.registry.service_url(name, overrides, host)`, never a hard-coded URL.
- Propagation: `X-Request-ID` (the current request's, or a new one) and `Authorization` (an explicit
  `token`, else the caller's header from the request context).
- Retries with a small jittered backoff, only for idempotent calls (GET, HEAD, PUT, DELETE, OPTIONS,
  or a call marked `idempotent=True` / carrying an `Idempotency-Key`), on connection failures and
  502/503/504 answers.
- A circuit breaker per service: after repeated failures calls fail fast without touching the network
  until a trial call succeeds.
- Failures become the platform's errors: unreachable or open circuit → `Unavailable` (503), no answer in
  time → `UpstreamTimeout` (504), both naming the service. Upstream 4xx/5xx answers are returned as they
  are; a 5xx counts as a failure for the breaker.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import structlog

from aitrading.errors import Unavailable, UpstreamTimeout
from aitrading.registry import REGISTRY, service_url
from aitrading.request_context import current_authorization, current_request_id

_log = structlog.get_logger("aitrading.client")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})


class CircuitOpen(Unavailable):
    """The breaker of a service is open: the call was refused without touching the network."""


class CircuitBreaker:
    """closed → open after `failure_threshold` consecutive failures → half-open once `reset_timeout_s`
    has passed (one trial call at a time) → closed when the trial succeeds, open again when it fails."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, name: str, *, failure_threshold: int = 5, reset_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started_at: float | None = None

    @property
    def state(self) -> str:
        if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            return self.HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when it would now)."""
        if self._state != self.OPEN:
            return 0.0
        return max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        if self._state == self.CLOSED:
            return True
        now = self._clock()
        if self._state == self.OPEN:
            if now - self._opened_at < self.reset_timeout_s:
                return False
            self._state = self.HALF_OPEN
            self._trial_started_at = now
            return True
        # Half-open: one trial at a time; a trial that never reported back (cancelled) expires.
        if self._trial_started_at is not None and now - self._trial_started_at < self.reset_timeout_s:
            return False
        self._trial_started_at = now
        return True

    def record_success(self) -> None:
        if self._state != self.CLOSED:
            _log.info("circuit closed", service=self.name)
        self._state = self.CLOSED
        self._failures = 0
        self._trial_started_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == self.HALF_OPEN or (self._state == self.CLOSED and
                                             self._failures >= self.failure_threshold):
            _log.warning("circuit opened", service=self.name, failures=self._failures)
            self._state = self.OPEN
            self._opened_at = self._clock()
            self._trial_started_at = None


class ServiceClient:
    """Calls platform services by name; a component of every service (`app.state.client`)."""

    name = "service-client"

    def __init__(self, *, overrides: dict[str, str] | None = None, host: str = "127.0.0.1",
                 timeout_s: float = 5.0, retries: int = 2, transport: httpx.AsyncBaseTransport | None = None,
                 failure_threshold: int = 5, reset_timeout_s: float = 5.0,
                 backoff_s: float = 0.05) -> None:
        self.overrides = dict(overrides or {})
        self.host = host
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._transport = transport
        self._failure_threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._breakers: dict[str, CircuitBreaker] = {}
        self._http: httpx.AsyncClient | None = None

    def breaker(self, service: str) -> CircuitBreaker:
        breaker = self._breakers.get(service)
        if breaker is None:
            breaker = CircuitBreaker(service, failure_threshold=self._failure_threshold,
                                     reset_timeout_s=self._reset_timeout_s)
            self._breakers[service] = breaker
        return breaker

    def base_url(self, service: str) -> str:
        if service not in self.overrides and service not in REGISTRY:
            raise ValueError(f"unknown service {service!r}: not in the registry and no address override")
        return service_url(service, self.overrides, self.host)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                follow_redirects=False,
            )
        return self._http

    async def request(self, service: str, method: str, path: str, *, json: Any = None,
                      params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                      token: str | None = None, timeout_s: float | None = None,
                      idempotent: bool | None = None, content: bytes | None = None) -> httpx.Response:
        """One call to `service`; `json` or raw `content` as the body. See the module docstring."""
        method = method.upper()
        url = self.base_url(service) + (path if path.startswith("/") else "/" + path)
        outgoing = self._headers(headers, token)
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or "idempotency-key" in outgoing
        attempts = 1 + (self.retries if idempotent else 0)
        timeout = httpx.Timeout(timeout_s if timeout_s is not None else self.timeout_s)
        breaker = self.breaker(service)
        http = self._client()

        for attempt in range(1, attempts + 1):
            if not breaker.allow():
                retry_after = max(1, math.ceil(breaker.retry_after_s()))
                raise CircuitOpen(f"{service} is unavailable: too many recent failures, calls are paused",
                                  headers={"Retry-After": str(retry_after)}, service=service)
            last_attempt = attempt == attempts
            try:
                response = await http.request(method, url, json=json, content=content, params=params,
                                              headers=outgoing, timeout=timeout)
            except httpx.ConnectTimeout as exc:
                breaker.record_failure()
                if last_attempt:
                    raise Unavailable(f"{service} could not be reached: connecting timed out",
                                      service=service) from exc
            except httpx.TimeoutException as exc:
                # The request may have been processed: not retried, whatever the method.
                breaker.record_failure()
                raise UpstreamTimeout(f"{service} did not answer within {timeout.read}s",
                                      service=service) from exc
            except httpx.TransportError as exc:
                breaker.record_failure()
                if last_attempt:
                    raise Unavailable(f"{service} could not be reached: {exc.__class__.__name__}",
                                      service=service) from exc
            else:
                if response.status_code >= 500:
                    breaker.record_failure()
                else:
                    breaker.record_success()
                if last_attempt or response.status_code not in RETRY_STATUSES:
                    return response
                await response.aclose()
            _log.info("retrying service call", service=service, method=method, path=path, attempt=attempt)
            await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _headers(self, headers: Mapping[str, str] | None, token: str | None) -> dict[str, str]:
        outgoing = {k.lower(): v for k, v in (headers or {}).items()}
        if "x-request-id" not in outgoing:
            outgoing["x-request-id"] = current_request_id() or uuid.uuid4().hex
        if "authorization" not in outgoing:
            authorization = f"Bearer {token}" if token else current_authorization()
            if authorization and " " not in authorization:  # a bare token in the context
                authorization = f"Bearer {authorization}"
            if authorization:
                outgoing["authorization"] = authorization
        return outgoing

    async def get(self, service: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(service, "GET", path, **kwargs)

    async def post(self, service: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(service, "POST", path, **kwargs)

    async def put(self, service: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(service, "PUT", path, **kwargs)

    async def patch(self, service: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(service, "PATCH", path, **kwargs)

    async def delete(self, service: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(service, "DELETE", path, **kwargs)

    async def start(self) -> None:
        self._client()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def check(self) -> None:
        """Always ready: other services' health is theirs to report."""
