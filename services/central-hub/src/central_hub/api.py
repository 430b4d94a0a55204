"""Routes of central-hub: the fleet's health, its instances as heartbeats show them, the dependency graph."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from aitrading.auth import CurrentUser
from aitrading.registry import REGISTRY, implemented
from aitrading.service import from_state
from central_hub.dependencies import dependency_graph, entry_path
from central_hub.fleet_health import assess_fleet, services_to_assess
from central_hub.fleet_view import FleetState, FleetView, ServiceState
from central_hub.probes import HealthProber
from central_hub.settings import Settings

router = APIRouter(prefix="/api/v1/fleet", tags=["fleet"])


class ServiceHealthOut(BaseModel):
    name: str
    status: ServiceState
    version: str | None
    latency_ms: float | None = Field(description="time to answer GET /health; null without an answer")
    instances: int = Field(description="instances with a fresh heartbeat")
    last_seen: datetime | None = Field(description="the latest heartbeat of any instance")
    error: str | None = Field(description="why the service is not healthy")


class FleetHealthOut(BaseModel):
    status: FleetState
    checked_at: datetime
    services: list[ServiceHealthOut]


class InstanceOut(BaseModel):
    service: str
    instance: str
    version: str
    host: str
    port: int
    pid: int
    started_at: datetime
    in_flight: int
    last_seen: datetime
    age_s: float
    status: Literal["fresh", "stale"]


class InstancesOut(BaseModel):
    stale_after_s: float
    instances: list[InstanceOut]


class NodeOut(BaseModel):
    name: str
    port: int | None
    implemented: bool
    kind: Literal["service", "infra"]


class EdgeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    source: str = Field(serialization_alias="from", validation_alias="from")
    to: str


class DependenciesOut(BaseModel):
    nodes: list[NodeOut]
    edges: list[EdgeOut]


HubSettings = Annotated[Settings, Depends(from_state("settings"))]
View = Annotated[FleetView, Depends(from_state("fleet"))]
Prober = Annotated[HealthProber, Depends(from_state("prober"))]


def _deployed(settings: Settings, view: FleetView) -> list[str]:
    return services_to_assess(settings.deployed_services, (spec.name for spec in implemented()),
                              view.services_heard)


@router.get("/health", response_model=FleetHealthOut)
async def fleet_health(user: CurrentUser, settings: HubSettings, view: View,
                       prober: Prober) -> FleetHealthOut:
    now = datetime.now(UTC)
    view.forget_silent(now)
    health = await assess_fleet(view, prober, _deployed(settings, view), settings.service_urls,
                                entry_path(), now)
    services = [ServiceHealthOut(name=s.name, status=s.status, version=s.version, latency_ms=s.latency_ms,
                                 instances=s.instances, last_seen=s.last_seen, error=s.error)
                for s in health.services]
    return FleetHealthOut(status=health.status, checked_at=now, services=services)


@router.get("/instances", response_model=InstancesOut)
async def fleet_instances(user: CurrentUser, view: View,
                          service: Annotated[str | None, Query(max_length=100)] = None) -> InstancesOut:
    now = datetime.now(UTC)
    view.forget_silent(now)
    instances = [
        InstanceOut(**state.beat.model_dump(), last_seen=state.last_seen, age_s=round(state.age_s, 3),
                    status="stale" if state.stale else "fresh")
        for state in view.instances(now, service)
    ]
    return InstancesOut(stale_after_s=view.stale_after_s, instances=instances)


@router.get("/dependencies", response_model=DependenciesOut, response_model_by_alias=True)
async def fleet_dependencies(user: CurrentUser, settings: HubSettings, view: View) -> DependenciesOut:
    graph = dependency_graph(REGISTRY.values(), set(_deployed(settings, view)))
    return DependenciesOut(
        nodes=[NodeOut(name=n.name, port=n.port, implemented=n.implemented, kind=n.kind)
               for n in graph.nodes],
        edges=[EdgeOut(source=e.source, to=e.target) for e in graph.edges],
    )
