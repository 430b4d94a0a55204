"""Plan rate limits (429 with headers) and API keys exchanged at the identity service."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from .conftest import KNOWN_API_KEY, Identity, bearer, headers_of


async def test_free_plan_is_limited_with_429_and_headers(client: httpx.AsyncClient,
                                                          identity: Identity) -> None:
    token = identity.token(plan="free")  # the test settings give the free plan 5 requests a minute
    answers = [await client.get("/api/v1/orders/echo", headers=bearer(token)) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["ratelimit-remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["ratelimit-limit"] == "5"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["retry-after"]) >= 1
    assert int(refused.headers["ratelimit-reset"]) >= 1
    assert refused.json()["status"] == 429
    # Another user on the same plan has a bucket of their own.
    other = await client.get("/api/v1/orders/echo", headers=bearer(identity.token(plan="free")))
    assert other.status_code == 200


async def test_rate_limited_requests_are_counted(client: httpx.AsyncClient, identity: Identity) -> None:
    token = identity.token(plan="free")
    for _ in range(6):
        await client.get("/api/v1/orders/echo", headers=bearer(token))
    metrics = (await client.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith('gateway_rate_limited_total{plan="free"}'))
    assert float(line.split()[-1]) >= 1


async def test_api_key_is_exchanged_once_and_the_token_forwarded(client: httpx.AsyncClient,
                                                                 identity: Identity) -> None:
    before = identity.exchanges
    first = await client.get("/api/v1/orders/echo", headers={"X-API-Key": KNOWN_API_KEY})
    assert first.status_code == 200, first.text
    seen = headers_of(first.json())
    assert "x-api-key" not in seen
    authorization = seen["authorization"][0]
    assert authorization.startswith("Bearer ") and not authorization.startswith("Bearer atp_")
    # The same key as a bearer credential, several times at once: served from the exchange cache.
    answers = await asyncio.gather(*(client.get("/api/v1/orders/echo", headers=bearer(KNOWN_API_KEY))
                                     for _ in range(5)))
    assert all(a.status_code == 200 for a in answers)
    assert all(headers_of(a.json())["authorization"] == [authorization] for a in answers)
    assert identity.exchanges == before + 1


async def test_concurrent_first_use_of_a_key_shares_one_exchange(gateway: tuple, identity: Identity) -> None:
    app, client = gateway
    app.state.gateway.auth.api_keys.forget_all()  # the next requests all arrive with a key new to it
    before = identity.exchanges
    answers = await asyncio.gather(*(client.get("/api/v1/orders/echo", headers={"X-API-Key": KNOWN_API_KEY})
                                     for _ in range(8)))
    assert all(a.status_code == 200 for a in answers)
    assert identity.exchanges == before + 1


async def test_unknown_api_key_is_401(client: httpx.AsyncClient) -> None:
    for headers in ({"X-API-Key": "atp_" + uuid.uuid4().hex}, bearer("atp_" + uuid.uuid4().hex),
                    {"X-API-Key": "not-a-key"}):
        response = await client.get("/api/v1/orders/echo", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
