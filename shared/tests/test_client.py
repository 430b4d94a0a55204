"""The service client against a real local HTTP server: propagation, retries, breaker, failures."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from aitrading.client import CircuitBreaker, CircuitOpen, ServiceClient
from aitrading.embedded import free_port
from aitrading.errors import Unavailable, UpstreamTimeout
from aitrading.request_context import authorization_var, request_id_var
from aitrading.testing import serve_app

SERVICE = "trading-engine"


class Upstream:
    """What the called service saw: hits per path, and scripted answers per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.script: dict[str, list[int]] = {}  # path → statuses to answer, in order; then 200

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/echo")
        async def echo(request: Request) -> dict[str, Any]:
            return {"request_id": request.headers.get("x-request-id"),
                    "authorization": request.headers.get("authorization")}

        @app.api_route("/scripted/{name}", methods=["GET", "POST", "PUT", "DELETE"])
        async def scripted(name: str, request: Request) -> Response:
            path = f"/scripted/{name}"
            self.hits[path] += 1
            statuses = self.script.get(path, [])
            status = statuses.pop(0) if statuses else 200
            body = await request.body()
            return Response(body or b"{}", status_code=status, media_type="application/json")

        @app.get("/slow")
        async def slow() -> dict[str, str]:
            self.hits["/slow"] += 1
            await asyncio.sleep(0.6)
            return {"status": "late"}

        return app

    def path(self, *statuses: int) -> str:
        path = f"/scripted/{uuid.uuid4().hex}"
        self.script[path] = list(statuses)
        return path


@pytest.fixture(scope="module")
async def upstream_server() -> AsyncIterator[tuple[Upstream, str]]:
    upstream = Upstream()
    async with serve_app(upstream.app()) as base_url:
        yield upstream, base_url


@pytest.fixture
def upstream(upstream_server: tuple[Upstream, str]) -> Upstream:
    return upstream_server[0]


@pytest.fixture
async def client(upstream_server: tuple[Upstream, str]) -> AsyncIterator[ServiceClient]:
    c = ServiceClient(overrides={SERVICE: upstream_server[1]}, timeout_s=1.0, backoff_s=0.01,
                      failure_threshold=3, reset_timeout_s=0.3)
    await c.start()
    yield c
    await c.stop()


async def test_request_id_and_authorization_are_propagated(client: ServiceClient) -> None:
    rid, auth = request_id_var.set("req-123"), authorization_var.set("Bearer caller.token.sig")
    try:
        response = await client.get(SERVICE, "/echo")
    finally:
        request_id_var.reset(rid)
        authorization_var.reset(auth)
    assert response.json() == {"request_id": "req-123", "authorization": "Bearer caller.token.sig"}


async def test_explicit_token_wins_over_the_callers(client: ServiceClient) -> None:
    auth = authorization_var.set("Bearer caller.token.sig")
    try:
        response = await client.get(SERVICE, "/echo", token="service.token.sig")
    finally:
        authorization_var.reset(auth)
    assert response.json()["authorization"] == "Bearer service.token.sig"


async def test_without_a_request_context_a_request_id_is_made(client: ServiceClient) -> None:
    body = (await client.get(SERVICE, "/echo")).json()
    assert body["authorization"] is None
    assert body["request_id"] and len(body["request_id"]) == 32


async def test_get_is_retried_on_503_until_it_succeeds(client: ServiceClient, upstream: Upstream) -> None:
    path = upstream.path(503, 503)
    response = await client.get(SERVICE, path)
    assert response.status_code == 200
    assert upstream.hits[path] == 3


async def test_get_returns_the_last_answer_when_retries_run_out(client: ServiceClient,
                                                                upstream: Upstream) -> None:
    path = upstream.path(503, 502, 504, 503)
    response = await client.get(SERVICE, path)
    assert response.status_code == 504
    assert upstream.hits[path] == 3  # one call and two retries


async def test_post_is_not_retried(client: ServiceClient, upstream: Upstream) -> None:
    path = upstream.path(503)
    response = await client.post(SERVICE, path, json={"symbol": "SPX"})
    assert response.status_code == 503
    assert upstream.hits[path] == 1


async def test_post_with_idempotency_key_is_retried(client: ServiceClient, upstream: Upstream) -> None:
    path = upstream.path(503)
    response = await client.post(SERVICE, path, json={"symbol": "SPX"}, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200 and response.json() == {"symbol": "SPX"}
    assert upstream.hits[path] == 2


async def test_client_errors_are_returned_not_retried(client: ServiceClient, upstream: Upstream) -> None:
    path = upstream.path(404, 404, 404, 404)
    response = await client.get(SERVICE, path)
    assert response.status_code == 404
    assert upstream.hits[path] == 1
    assert client.breaker(SERVICE).failures == 0


async def test_500_is_returned_without_retry_but_counts_for_the_breaker(client: ServiceClient,
                                                                        upstream: Upstream) -> None:
    path = upstream.path(500)
    response = await client.get(SERVICE, path)
    assert response.status_code == 500
    assert upstream.hits[path] == 1
    assert client.breaker(SERVICE).failures == 1


async def test_breaker_opens_fails_fast_then_half_opens_and_recovers(client: ServiceClient,
                                                                     upstream: Upstream) -> None:
    path = upstream.path(*[500] * 3)
    for _ in range(3):
        assert (await client.post(SERVICE, path)).status_code == 500
    assert client.breaker(SERVICE).state == "open"

    with pytest.raises(CircuitOpen, match=SERVICE) as refused:
        await client.post(SERVICE, path)
    assert upstream.hits[path] == 3  # the refused call never reached the network
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"

    await asyncio.sleep(0.35)
    assert client.breaker(SERVICE).state == "half-open"
    response = await client.post(SERVICE, path)  # the trial call; the upstream has recovered
    assert response.status_code == 200
    assert upstream.hits[path] == 4
    assert client.breaker(SERVICE).state == "closed"


async def test_failed_trial_opens_the_breaker_again(client: ServiceClient, upstream: Upstream) -> None:
    path = upstream.path(*[500] * 4)
    for _ in range(3):
        await client.post(SERVICE, path)
    await asyncio.sleep(0.35)
    assert (await client.post(SERVICE, path)).status_code == 500
    with pytest.raises(CircuitOpen):
        await client.post(SERVICE, path)
    assert upstream.hits[path] == 4



async def test_stopped_upstream_is_unavailable_quickly() -> None:
    client = ServiceClient(overrides={SERVICE: f"http://127.0.0.1:{free_port()}"})
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=f"{SERVICE} could not be reached") as refused:
            await client.get(SERVICE, "/api/v1/orders")
        assert time.monotonic() - started < 1.0
        assert refused.value.status == 503 and refused.value.extra == {"service": SERVICE}
        assert not isinstance(refused.value, CircuitOpen)
        assert client.breaker(SERVICE).failures == 3  # one call and two retries
    finally:
        await client.stop()


async def test_slow_upstream_is_a_timeout_and_not_retried(client: ServiceClient, upstream: Upstream) -> None:
    before = upstream.hits["/slow"]
    with pytest.raises(UpstreamTimeout, match=SERVICE) as timed_out:
        await client.get(SERVICE, "/slow", timeout_s=0.2)
    assert timed_out.value.status == 504
    assert upstream.hits["/slow"] - before == 1


async def test_unknown_service_is_a_programming_error(client: ServiceClient) -> None:
    with pytest.raises(ValueError, match="unknown service"):
        await client.get("no-such-service", "/health")


def test_service_address_comes_from_the_registry() -> None:
    assert ServiceClient().base_url("user-service") == "http://127.0.0.1:8009"
    assert ServiceClient(host="10.1.2.3").base_url("audit-service") == "http://10.1.2.3:8013"


# --- CircuitBreaker on its own clock --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_only_after_consecutive_failures() -> None:
    breaker = CircuitBreaker("svc", failure_threshold=3, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the streak is broken
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()


def test_half_open_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("svc", failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.state == "half-open"
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else waits for its outcome
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_trial_that_never_reports_back_expires() -> None:
    clock = Clock()
    breaker = CircuitBreaker("svc", failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    clock.now = 10.0
    assert breaker.allow()  # the first trial was lost (cancelled); another may go


def test_failed_trial_reopens_for_a_full_timeout() -> None:
    clock = Clock()
    breaker = CircuitBreaker("svc", failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
