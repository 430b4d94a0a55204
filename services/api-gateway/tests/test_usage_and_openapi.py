"""Usage events on real NATS (batched, best-effort) and the merged OpenAPI document."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient

from aitrading.events import Event

from .conftest import Identity, bearer


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


async def test_usage_events_arrive_on_nats_in_batches(gateway: tuple[FastAPI, httpx.AsyncClient],
                                                      identity: Identity, nats_client: NatsClient) -> None:
    app, client = gateway
    received: list[Event] = []
    got_all = asyncio.Event()
    request_ids = {f"usage-{uuid.uuid4().hex}" for _ in range(5)}

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        event = Event.from_bytes(msg.data)
        if event.request_id in request_ids:
            received.append(event)
            if len(received) == len(request_ids):
                got_all.set()

    sub = await nats_client.subscribe("usage.api.trading-engine", cb=on_message)
    user_id = str(uuid.uuid4())
    token = identity.token(user_id=user_id, plan="pro")
    for request_id in request_ids:
        response = await client.post("/api/v1/orders/echo?x=1", content=b"abc",
                                     headers={**bearer(token), "X-Request-ID": request_id})
        assert response.status_code == 200
    # Nothing was published on the request path: the calls wait for the next batch.
    assert app.state.gateway.usage.pending >= 1
    await asyncio.wait_for(got_all.wait(), timeout=10)
    await sub.unsubscribe()
    for event in received:
        assert event.type == "usage.api_call" and event.source == "api-gateway"
        assert event.subject == "usage.api.trading-engine"
        data = event.data
        assert data["user_id"] == user_id and data["plan"] == "pro"
        assert data["method"] == "POST" and data["prefix"] == "orders" and data["status"] == 200
        assert data["service"] == "trading-engine"
        assert data["latency_ms"] > 0 and data["bytes"] > 0 and data["time"].endswith("Z")
    # They were published together, within one flush of each other.
    times = sorted(event.time for event in received)
    assert (times[-1] - times[0]).total_seconds() < 5
    # JetStream keeps them for usage-monitoring's durable consumer (the PLATFORM stream captures usage.>).
    stored = await nats_client.jetstream().get_last_msg("PLATFORM", "usage.api.trading-engine")
    assert Event.from_bytes(stored.data).request_id in request_ids


async def test_refused_calls_are_metered_too(gateway: tuple[FastAPI, httpx.AsyncClient],
                                             nats_client: NatsClient) -> None:
    _, client = gateway
    request_id = f"usage-{uuid.uuid4().hex}"
    arrived: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        event = Event.from_bytes(msg.data)
        if event.request_id == request_id and not arrived.done():
            arrived.set_result(event)

    sub = await nats_client.subscribe("usage.api.trading-engine", cb=on_message)
    response = await client.get("/api/v1/orders/echo", headers={"X-Request-ID": request_id})
    assert response.status_code == 401
    event = await asyncio.wait_for(arrived, timeout=10)
    await sub.unsubscribe()
    assert event.data["status"] == 401 and event.data["user_id"] is None
    assert event.data["plan"] == "anonymous"


async def test_merged_openapi_has_upstream_paths_and_notes_missing_services(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    assert "/api/v1/orders/echo" in paths and "/api/v1/orders/upload" in paths
    assert "/api/v1/auth/login" in paths
    assert not any(path.startswith("/internal") or path == "/health" for path in paths)
    schemas = document["components"]["schemas"]
    assert "trading-engine.Echo" in schemas and "user-service.LoginIn" in schemas
    ref = paths["/api/v1/orders/echo"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/trading-engine.Echo"}
    assert paths["/api/v1/auth/login"]["post"]["security"] == []
    assert paths["/api/v1/orders/echo"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "audit-service" in document["info"]["description"]  # down: noted, its paths missing
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
