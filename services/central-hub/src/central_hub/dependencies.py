"""The dependency graph of the fleet, from the registry: services, the infrastructure they use, edges."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from aitrading.registry import REGISTRY, ServiceSpec

GATEWAY = "api-gateway"
# Where each kind of infrastructure listens by default (compose and the embedded run modes).
INFRA_PORTS: dict[str, int] = {
    "postgres": 5432,
    "nats": 4222,
    "redis": 6379,
    "clickhouse": 8123,
    "weaviate": 8080,
    "arangodb": 8529,
}


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    port: int | None
    implemented: bool
    kind: Literal["service", "infra"]


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class DependencyGraph:
    nodes: list[Node]
    edges: list[Edge]


def dependency_graph(specs: Iterable[ServiceSpec], implemented: Collection[str]) -> DependencyGraph:
    """Every service (flagged when it exists in this deployment), its service and infrastructure edges."""
    specs = list(specs)
    nodes = [Node(spec.name, spec.port, spec.name in implemented, "service") for spec in specs]
    infra = sorted({name for spec in specs for name in spec.infra}, key=_infra_order)
    nodes += [Node(name, INFRA_PORTS.get(name), True, "infra") for name in infra]
    edges = [Edge(spec.name, target) for spec in specs for target in (*spec.depends_on, *spec.infra)]
    return DependencyGraph(nodes, edges)


def entry_path(registry: dict[str, ServiceSpec] = REGISTRY) -> frozenset[str]:
    """The gateway and every service it needs, transitively: without them no request gets through."""
    path: set[str] = set()
    pending = [GATEWAY]
    while pending:
        name = pending.pop()
        if name in path or name not in registry:
            continue
        path.add(name)
        pending.extend(registry[name].depends_on)
    return frozenset(path)


def _infra_order(name: str) -> tuple[int, str]:
    order = list(INFRA_PORTS)
    return (order.index(name) if name in order else len(order), name)
