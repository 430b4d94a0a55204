"""GET /health of a service over HTTP, timed, through one pooled client of the hub's own.

Not through the service client (app.state.client): its retries and circuit breaker would hide what
the probe is meant to see, a slow or failing service, and would stretch the latency measured.
"""

from __future__ import annotations

import time

import httpx

from central_hub.fleet_view import Probe


class HealthProber:
    """A component of the hub (start/stop/check), probing services' liveness endpoints."""

    name = "health-prober"

    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def check(self) -> None:
        """Always ready: probing others needs nothing of ours but this client."""

    async def probe(self, base_url: str) -> Probe:
        started = time.perf_counter()
        try:
            response = await self._client().get(base_url.rstrip("/") + "/health")
        except httpx.TimeoutException:
            return Probe(latency_ms=None, error=f"no answer within {self.timeout_s:g}s")
        except httpx.HTTPError as exc:
            return Probe(latency_ms=None, error=f"not reachable: {exc.__class__.__name__}")
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        version = reported = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            version = body.get("version") if isinstance(body.get("version"), str) else None
            reported = body.get("status") if isinstance(body.get("status"), str) else None
        return Probe(latency_ms=latency_ms, status_code=response.status_code, version=version,
                     reported_status=reported)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
                follow_redirects=False,
                headers={"User-Agent": "central-hub/health-probe"},
            )
        return self._http
