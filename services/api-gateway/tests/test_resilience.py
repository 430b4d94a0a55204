"""Upstream failures: refused connections, an open circuit that recovers, a service that is down."""

from __future__ import annotations

import asyncio
import time

import httpx

from .conftest import Identity, Upstreams, bearer, portfolio_app, serve_on


def circuit_state(metrics: str, service: str) -> float:
    prefix = f'gateway_circuit_state{{service="{service}"}}'
    return float(next(line for line in metrics.splitlines() if line.startswith(prefix)).split()[-1])


async def test_stopped_upstream_is_503_fast_and_recovers(client: httpx.AsyncClient, identity: Identity,
                                                          upstreams: Upstreams) -> None:
    headers = bearer(identity.token())
    async with serve_on(portfolio_app(), upstreams.portfolio_port):
        assert (await client.get("/api/v1/portfolio", headers=headers)).status_code == 200
    # Stopped: connection refused → 503 at once, twice (the breaker threshold in the test settings).
    for _ in range(2):
        started = time.monotonic()
        response = await client.get("/api/v1/portfolio", headers=headers)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert time.monotonic() - started < 1.0
    # Open: refused without a connection attempt.
    paused = await client.get("/api/v1/portfolio", headers=headers)
    assert paused.status_code == 503 and "paused" in paused.json()["detail"]
    assert int(paused.headers["retry-after"]) >= 1
    assert circuit_state((await client.get("/metrics")).text, "portfolio-manager") == 2
    # Back again: after the reset timeout one trial call goes through and closes the circuit.
    async with serve_on(portfolio_app(), upstreams.portfolio_port):
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline:
            status = (await client.get("/api/v1/portfolio", headers=headers)).status_code
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        assert circuit_state((await client.get("/metrics")).text, "portfolio-manager") == 0
        assert (await client.get("/api/v1/portfolio", headers=headers)).json() == {"cash": "1000.00"}


async def test_service_that_is_down_is_503(client: httpx.AsyncClient, identity: Identity) -> None:
    response = await client.get("/api/v1/audit", headers=bearer(identity.token()))
    assert response.status_code == 503
    assert "audit-service" in response.json()["detail"]

