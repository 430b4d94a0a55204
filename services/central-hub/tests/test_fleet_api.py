"""The hub over real HTTP: heartbeats from running services over real NATS, real /health probes."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import httpx
from central_hub.fleet_view import Heartbeat
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from aitrading.testing import eventually, serve_app

HubFactory = Callable[..., AbstractAsyncContextManager[Any]]
ServiceFactory = Callable[[str], AbstractAsyncContextManager[Any]]


def unique(prefix: str) -> str:
    return f"probe-{prefix}-{uuid.uuid4().hex[:8]}"


async def instances_of(client: httpx.AsyncClient, service: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/fleet/instances", params={"service": service})
    assert response.status_code == 200, response.text
    return list(response.json()["instances"])


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/v1/fleet/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in body["services"]}


async def test_fleet_routes_refuse_a_caller_without_a_token(hub: HubFactory) -> None:
    async with hub(deployed_services=[]) as running:
        for path in ("/health", "/instances", "/dependencies"):
            response = await httpx.AsyncClient(base_url=running.url).get(f"/api/v1/fleet{path}")
            assert response.status_code == 401
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_running_service_appears_with_what_its_heartbeat_says(
        hub: HubFactory, fleet_service: ServiceFactory) -> None:
    name = unique("alive")
    async with hub(deployed_services=[name]) as running, fleet_service(name) as service:
        async def announced_port() -> list[dict[str, Any]]:
            found = await instances_of(running.client, name)
            return found if found and found[0]["port"] == service.port else []

        [instance] = await eventually(announced_port)
        assert instance["instance"] == service.app.state.instance_id
        assert instance["version"] == "9.9.9"
        assert instance["pid"] == os.getpid()
        assert instance["status"] == "fresh"
        assert instance["age_s"] < 1.0


async def test_fleet_health_probes_each_service_over_http(
        hub: HubFactory, fleet_service: ServiceFactory) -> None:
    name = unique("probed")
    async with fleet_service(name) as service, hub(deployed_services=[name],
                                                   service_urls={name: service.url}) as running:
        await eventually(lambda: instances_of(running.client, name))
        body = await health(running.client)

        assert body["status"] == "ok"
        entry = by_name(body)[name]
        assert entry["status"] == "healthy"
        assert entry["version"] == "9.9.9"
        assert isinstance(entry["latency_ms"], float) and 0 < entry["latency_ms"] < 1000
        assert entry["instances"] == 1
        assert entry["last_seen"] is not None
        assert entry["error"] is None


async def test_a_service_that_stops_is_dropped_from_instances_and_reported_unreachable(
        hub: HubFactory, fleet_service: ServiceFactory) -> None:
    staying, leaving = unique("staying"), unique("leaving")
    async with AsyncExitStack() as stack, AsyncExitStack() as leaving_stack:
        kept = await stack.enter_async_context(fleet_service(staying))
        gone = await leaving_stack.enter_async_context(fleet_service(leaving))
        running = await stack.enter_async_context(
            hub(deployed_services=[staying, leaving], service_urls={staying: kept.url, leaving: gone.url}))
        await eventually(lambda: instances_of(running.client, leaving))
        assert (await health(running.client))["status"] == "ok"

        await leaving_stack.aclose()  # a clean shutdown: it announces fleet.stopped

        assert await eventually(lambda: _no_instances(running.client, leaving), timeout_s=2.0)
        body = await health(running.client)
        assert body["status"] == "degraded"
        assert by_name(body)[staying]["status"] == "healthy"
        stopped = by_name(body)[leaving]
        assert stopped["status"] == "unreachable"
        assert stopped["latency_ms"] is None and stopped["instances"] == 0
        assert stopped["error"].startswith("not reachable")


async def test_a_service_answering_health_with_an_error_is_unhealthy(hub: HubFactory) -> None:
    name = unique("failing")
    app = FastAPI()

    @app.get("/health")
    async def failing() -> JSONResponse:
        return JSONResponse({"status": "failing", "version": "1.2.3"}, status_code=503)

    async with serve_app(app) as url, hub(deployed_services=[name], service_urls={name: url}) as running:
        body = await health(running.client)

    entry = by_name(body)[name]
    assert body["status"] == "down"  # nothing in this fleet answers
    assert entry["status"] == "unhealthy"
    assert entry["version"] == "1.2.3"
    assert entry["error"] == "/health answered 503"
    assert entry["latency_ms"] is not None


async def test_a_service_too_slow_to_answer_is_unreachable_within_the_probe_timeout(hub: HubFactory) -> None:
    slow, fast = unique("slow"), unique("fast")
    app = FastAPI()

    @app.get("/{name}/health")
    async def answer(name: str) -> dict[str, str]:
        if name == "slow":
            await asyncio.sleep(1)
        return {"status": "ok", "version": "0.0.1"}

    async with serve_app(app) as url, hub(deployed_services=[slow, fast], probe_timeout_s=0.3,
                                          service_urls={slow: f"{url}/slow", fast: f"{url}/fast"}) as running:
        started = time.monotonic()
        body = await health(running.client)
        elapsed = time.monotonic() - started

    assert elapsed < 2.0  # probes run concurrently and give up at the timeout
    assert body["status"] == "degraded"
    assert by_name(body)[fast]["status"] == "healthy"
    assert by_name(body)[slow]["status"] == "unreachable"
    assert by_name(body)[slow]["error"] == "no answer within 0.3s"


async def test_a_service_with_no_address_and_no_heartbeat_is_unreachable(hub: HubFactory) -> None:
    name = unique("nowhere")
    async with hub(deployed_services=[name]) as running:
        body = await health(running.client)
    assert body == {"status": "down", "checked_at": body["checked_at"], "services": [
        {"name": name, "status": "unreachable", "version": None, "latency_ms": None, "instances": 0,
         "last_seen": None, "error": "no heartbeat and no address to probe"}]}


async def test_malformed_fleet_events_are_ignored(hub: HubFactory, nats_url: str) -> None:
    import nats

    name = unique("garbled")
    async with hub(deployed_services=[name]) as running:
        connection = await nats.connect(nats_url)
        try:
            await connection.publish(f"fleet.heartbeat.{name}", b"not an event")
            await connection.publish(f"fleet.heartbeat.{name}", _event_bytes(name, {"service": name}))
            good = Heartbeat(service=name, instance="i-1", version="1", host="h", port=1, pid=1,
                             started_at="2024-01-01T00:00:00Z", in_flight=0)
            valid = _event_bytes(name, good.model_dump(mode="json"))
            await connection.publish(f"fleet.heartbeat.{name}", valid)
            await connection.flush()
        finally:
            await connection.close()
        [instance] = await eventually(lambda: instances_of(running.client, name))
        assert instance["instance"] == "i-1"


async def test_dependencies_list_every_registry_service_and_its_edges(hub: HubFactory) -> None:
    async with hub(deployed_services=["api-gateway", "user-service", "central-hub"]) as running:
        response = await running.client.get("/api/v1/fleet/dependencies")
    assert response.status_code == 200
    body = response.json()
    nodes = {n["name"]: n for n in body["nodes"]}
    assert nodes["central-hub"] == {"name": "central-hub", "port": 8016, "implemented": True,
                                    "kind": "service"}
    assert nodes["decision-engine"]["implemented"] is False
    assert nodes["postgres"] == {"name": "postgres", "port": 5432, "implemented": True, "kind": "infra"}
    assert {"from": "api-gateway", "to": "user-service"} in body["edges"]
    assert {"from": "api-gateway", "to": "nats"} in body["edges"]
    assert {"from": "user-service", "to": "postgres"} in body["edges"]


def _event_bytes(name: str, data: dict[str, Any]) -> bytes:
    from aitrading.events import Event

    return Event.new("fleet.heartbeat", f"fleet.heartbeat.{name}", data, source=name).to_bytes()


async def _no_instances(client: httpx.AsyncClient, name: str) -> bool:
    return not await instances_of(client, name)
