"""The registry is the one table of names, ports and prefixes; it must be internally consistent."""

from __future__ import annotations

from aitrading.registry import REGISTRY, owner_of, service_url


def test_ports_and_prefixes_are_unique() -> None:
    ports = [spec.port for spec in REGISTRY.values()]
    assert len(ports) == len(set(ports))
    prefixes = [p for spec in REGISTRY.values() for p in spec.prefixes]
    assert len(prefixes) == len(set(prefixes))


def test_dependencies_name_registered_services() -> None:
    for spec in REGISTRY.values():
        assert set(spec.depends_on) <= set(REGISTRY), spec.name


def test_owner_of_routes_by_longest_prefix() -> None:
    assert owner_of("/api/v1/auth/login").name == "user-service"
    assert owner_of("/api/v1/orders/123").name == "trading-engine"
    assert owner_of("/api/v1/webhooks/payments/stripe").name == "payment-service"
    assert owner_of("/api/v1/ordersx") is None
    assert owner_of("/other") is None


def test_service_url_honours_overrides() -> None:
    assert service_url("user-service") == "http://127.0.0.1:8009"
    assert service_url("user-service", {"user-service": "http://users:8009/"}) == "http://users:8009"
