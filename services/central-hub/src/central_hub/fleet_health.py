"""Fleet health: which services to assess, their concurrent /health probes, the combined status."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aitrading.registry import REGISTRY, service_url
from central_hub.fleet_view import FleetState, FleetView, Probe, ServiceHealth, assess_service, fleet_status
from central_hub.probes import HealthProber


@dataclass(frozen=True, slots=True)
class FleetHealth:
    status: FleetState
    services: list[ServiceHealth]


def services_to_assess(configured: Iterable[str] | None, implemented: Iterable[str],
                       heard: Iterable[str]) -> list[str]:
    """The configured services when given; else the implemented ones plus every one heard from.

    Registry services come in catalogue order, the others after them by name.
    """
    names = set(configured) if configured is not None else {*implemented, *heard}
    catalogue = [name for name in REGISTRY if name in names]
    return catalogue + sorted(names - set(catalogue))


def address_of(name: str, overrides: Mapping[str, str]) -> str | None:
    """Where `name` answers HTTP: its override, else its registry address; None when it has neither."""
    if name in overrides or name in REGISTRY:
        return service_url(name, dict(overrides))
    return None


async def assess_fleet(view: FleetView, prober: HealthProber, names: Iterable[str],
                       overrides: Mapping[str, str], entry_path: Collection[str],
                       now: datetime) -> FleetHealth:
    names = list(names)

    async def probe(name: str) -> Probe | None:
        url = address_of(name, overrides)
        return await prober.probe(url) if url is not None else None

    probes = await asyncio.gather(*(probe(name) for name in names))
    services = [assess_service(name, result, view.instances(now, name))
                for name, result in zip(names, probes, strict=True)]
    return FleetHealth(fleet_status(services, entry_path), services)
