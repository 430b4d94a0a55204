"""The gateway's parts, built once by `main.create_app` and shared by the HTTP and WebSocket paths."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aitrading.client import CircuitBreaker
from aitrading.metrics import ServiceMetrics
from aitrading.middleware import InFlight
from api_gateway.authentication import Authenticator
from api_gateway.plan_limits import PlanLimits
from api_gateway.proxy_metrics import ProxyMetrics
from api_gateway.routes import RouteTable
from api_gateway.settings import Settings
from api_gateway.upstream_http import UpstreamHttp
from api_gateway.usage import UsageRecorder

_BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


def _breaker_state(breaker: CircuitBreaker) -> float:
    return _BREAKER_STATES.get(breaker.state, 2)


@dataclass
class Gateway:
    """Everything the proxy path uses, built once by `main.create_app`."""

    settings: Settings
    routes: RouteTable
    http: UpstreamHttp
    auth: Authenticator
    limits: PlanLimits
    usage: UsageRecorder
    inflight: InFlight
    metrics: ServiceMetrics

    def __post_init__(self) -> None:
        self.proxy_metrics = ProxyMetrics(self.metrics.registry)
        breaker_state = self.metrics.gauge("gateway_circuit_state",
                                           "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
                                           ("service",))
        for name, upstream in self.routes.upstreams.items():
            breaker_state.labels(name).set_function(functools.partial(_breaker_state, upstream.breaker))
