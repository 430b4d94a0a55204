"""The routing table against the registry, and best-effort usage metering without NATS."""

from __future__ import annotations

from api_gateway.plan_limits import rate_limit_headers
from api_gateway.routes import RouteTable
from api_gateway.settings import Settings
from api_gateway.usage import UsageRecorder

from aitrading.metrics import ServiceMetrics
from aitrading.ratelimit import RateDecision
from aitrading.registry import REGISTRY, owner_of


def all_services_table(**overrides: object) -> RouteTable:
    names = [name for name in REGISTRY if name != "api-gateway"]
    return RouteTable.from_settings(Settings(deployed_services=names, **overrides))


def test_route_table_agrees_with_the_registry_owner_of() -> None:
    table = all_services_table()
    paths = ["/api/v1/nothing", "/api/v1/", "/api/v1/ordersx", "/api/v1/webhooks", "/api/v1/webhooks/other"]
    for spec in REGISTRY.values():
        for prefix in spec.prefixes:
            paths += [f"/api/v1/{prefix}{tail}" for tail in ("", "/", "/a/b", "x")]
    for path in paths:
        resolved = table.resolve(path)
        owner = owner_of(path)
        assert (resolved[0].upstream.name if resolved else None) == (owner.name if owner else None), path


def test_public_prefixes_come_from_the_registry_and_settings() -> None:
    table = all_services_table(gateway_public_prefixes=["webhooks/payments", "users/verify"])
    login = table.resolve("/api/v1/auth/login")
    assert login is not None and login[0].is_public(login[1])
    me = table.resolve("/api/v1/users/me")
    assert me is not None and not me[0].is_public(me[1])
    verify = table.resolve("/api/v1/users/verify/abc")
    assert verify is not None and verify[0].is_public(verify[1])
    hook = table.resolve("/api/v1/webhooks/payments/stripe")
    assert hook is not None and hook[0].upstream.name == "payment-service" and hook[0].is_public(hook[1])


def test_only_configured_services_are_routed_and_extra_routes_are_added() -> None:
    table = RouteTable.from_settings(Settings(
        deployed_services=["user-service"],
        gateway_extra_routes={"bench": "http://127.0.0.1:9999/", "orders": "http://127.0.0.1:9998"}))
    assert table.resolve("/api/v1/orders/1") is None  # trading-engine is not routed; "orders" is not extra
    bench = table.resolve("/api/v1/bench/ping")
    assert bench is not None and bench[0].upstream.base_url == "http://127.0.0.1:9999"
    assert table.websocket_upstream("/ws/market") is None
    with_market = RouteTable.from_settings(Settings(deployed_services=["data-bridge"]))
    upstream = with_market.websocket_upstream("/ws/market")
    assert upstream is not None and upstream.name == "data-bridge"


async def test_usage_is_dropped_and_counted_when_nats_is_not_reachable() -> None:
    metrics = ServiceMetrics("api-gateway")
    usage = UsageRecorder("nats://127.0.0.1:1", metrics, source="api-gateway", batch_size=2, buffer_max=3,
                          flush_interval_s=0.05, connect_timeout_s=0.3)
    await usage.start()  # nothing listens there: the gateway still starts, metering is dropped
    try:
        assert not usage.connected
        for _ in range(4):
            usage.record("trading-engine", None, "anonymous", "GET", "orders", 200, 1.5, 10, None)
        assert usage.pending <= 3  # the fourth overflowed the buffer (or a batch already went)
        await usage.flush()
        assert usage.pending == 0
    finally:
        await usage.stop()
    rendered = metrics.render().decode()
    assert 'gateway_usage_events_dropped_total{reason="overflow"} 1.0' in rendered
    assert 'gateway_usage_events_dropped_total{reason="nats-unavailable"} 3.0' in rendered


def test_rate_limit_headers_match_the_library_rendering() -> None:
    for decision in (RateDecision(True, 120, 119, 0.5, 0.0), RateDecision(False, 5, 0, 59.2, 11.01),
                     RateDecision(True, 12000, 0, 60.0, 0.0)):
        expected = [(name.lower().encode(), value.encode()) for name, value in decision.headers().items()]
        assert rate_limit_headers(decision) == expected
