"""The service factory's promises: probes, request ids, problem+json, metrics, drain on shutdown."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel, Field

from aitrading.errors import NotFound
from aitrading.service import create_service
from aitrading.settings import ServiceSettings
from aitrading.testing import running_app

router = APIRouter()


class ThingIn(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)


@router.post("/api/v1/things")
async def create_thing(body: ThingIn) -> dict[str, str]:
    return {"name": body.name}


@router.get("/api/v1/things/{thing_id}")
async def get_thing(thing_id: str) -> dict[str, str]:
    raise NotFound(f"thing {thing_id} does not exist")


@router.get("/api/v1/boom")
async def boom() -> None:
    raise RuntimeError("unexpected")


@router.get("/api/v1/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(0.3)
    return {"status": "done"}


def make_settings(database_url: str, nats_url: str) -> ServiceSettings:
    return ServiceSettings(service_name="central-hub", database_url=database_url, nats_url=nats_url,
                           log_json=True, shutdown_grace_s=2)


@pytest.fixture(scope="module")
async def client(database_url: str, nats_url: str) -> httpx.AsyncClient:
    app = create_service(make_settings(database_url, nats_url), routers=[router], heartbeat=False)
    async with running_app(app) as c:
        yield c


async def test_health_answers_without_io(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "central-hub", "version": "0.1.0"}


async def test_ready_reports_each_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["postgres"] == "ok"
    assert checks["nats"] == "ok"


class TcpDependency:
    """A dependency reached over TCP; its check fails while nothing listens on the port."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def check(self) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()


async def test_ready_is_503_naming_the_failing_dependency(database_url: str, nats_url: str) -> None:
    app = create_service(make_settings(database_url, nats_url), routers=[router], heartbeat=False,
                         resources=[TcpDependency("warehouse", 1)])
    async with running_app(app) as c:
        response = await c.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert set(body["failing"]) == {"warehouse"}
    assert body["checks"]["postgres"] == "ok"


async def test_request_id_is_echoed_or_assigned(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    assigned = await client.get("/health")
    assert len(assigned.headers["x-request-id"]) == 32


async def test_validation_error_is_problem_json_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/things", json={"name": "x", "quantity": 0},
                                 headers={"X-Request-ID": "rid-1"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["request_id"] == "rid-1"
    assert body["errors"][0]["field"] == "quantity"
    assert "greater than 0" in body["errors"][0]["reason"]


async def test_domain_error_renders_its_status(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/things/{uuid4()}")
    assert response.status_code == 404
    assert response.json()["title"] == "Not found"


async def test_unexpected_error_is_500_problem_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "RuntimeError" not in response.text


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_metrics_count_requests_by_route_template_and_status(client: httpx.AsyncClient) -> None:
    await client.get(f"/api/v1/things/{uuid4()}")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/api/v1/things/{thing_id}",status="404"}' in text
    assert "http_request_duration_seconds_bucket" in text


async def test_info_lists_dependencies_and_uptime(client: httpx.AsyncClient) -> None:
    body = (await client.get("/info")).json()
    assert body["name"] == "central-hub"
    assert body["uptime_s"] >= 0
    assert body["dependencies"]["components"]["postgres"] == "ok"


async def test_shutdown_waits_for_in_flight_requests(database_url: str, nats_url: str) -> None:
    app = create_service(make_settings(database_url, nats_url), routers=[router], heartbeat=False)
    async with running_app(app) as c:
        pending = asyncio.create_task(c.get("/api/v1/slow"))
        await asyncio.sleep(0.05)
        assert app.state.inflight.count == 1
    # Leaving the context ran the lifespan shutdown while the request was in flight.
    response = await pending
    assert response.status_code == 200
    assert response.json() == {"status": "done"}
