"""The dependency graph and the service list, from the registry."""

from __future__ import annotations

from central_hub.dependencies import Edge, Node, dependency_graph, entry_path
from central_hub.fleet_health import address_of, services_to_assess

from aitrading.registry import REGISTRY, ServiceSpec


def test_graph_has_every_service_its_infrastructure_and_both_kinds_of_edge() -> None:
    specs = [ServiceSpec("api-gateway", 8000, "", depends_on=("user-service",), infra=("nats",)),
             ServiceSpec("user-service", 8009, "", infra=("postgres", "nats")),
             ServiceSpec("database-service", 8008, "", infra=("clickhouse", "postgres"))]
    graph = dependency_graph(specs, implemented={"api-gateway", "user-service"})
    assert graph.nodes == [
        Node("api-gateway", 8000, True, "service"),
        Node("user-service", 8009, True, "service"),
        Node("database-service", 8008, False, "service"),
        Node("postgres", 5432, True, "infra"),
        Node("nats", 4222, True, "infra"),
        Node("clickhouse", 8123, True, "infra"),
    ]
    assert graph.edges == [Edge("api-gateway", "user-service"), Edge("api-gateway", "nats"),
                           Edge("user-service", "postgres"), Edge("user-service", "nats"),
                           Edge("database-service", "clickhouse"), Edge("database-service", "postgres")]


def test_every_edge_of_the_registry_graph_ends_at_a_node() -> None:
    graph = dependency_graph(REGISTRY.values(), implemented=set())
    names = {node.name for node in graph.nodes}
    assert all(edge.source in names and edge.target in names for edge in graph.edges)


def test_entry_path_is_the_gateway_and_what_it_needs_transitively() -> None:
    registry = {
        "api-gateway": ServiceSpec("api-gateway", 8000, "", depends_on=("user-service",)),
        "user-service": ServiceSpec("user-service", 8009, "", depends_on=("configuration-service",)),
        "configuration-service": ServiceSpec("configuration-service", 8012, ""),
        "audit-service": ServiceSpec("audit-service", 8013, ""),
    }
    assert entry_path(registry) == {"api-gateway", "user-service", "configuration-service"}
    assert "api-gateway" in entry_path()


def test_configured_services_win_over_implemented_and_heard_ones() -> None:
    assert services_to_assess(["x-probe", "central-hub"], ["api-gateway"], ["user-service"]) == [
        "central-hub", "x-probe"]


def test_without_configuration_implemented_and_heard_services_are_assessed_in_catalogue_order() -> None:
    heard = ["user-service", "zz-probe", "api-gateway"]
    assessed = services_to_assess(None, ["central-hub", "api-gateway"], heard)
    assert assessed == ["api-gateway", "user-service", "central-hub", "zz-probe"]


def test_address_comes_from_the_override_then_the_registry() -> None:
    assert address_of("user-service", {}) == "http://127.0.0.1:8009"
    assert address_of("user-service", {"user-service": "http://user-service:8009/"}) == "http://user-service:8009"
    assert address_of("x-probe", {"x-probe": "http://10.0.0.5:9000"}) == "http://10.0.0.5:9000"
    assert address_of("x-probe", {}) is None
