"""The gateway's routing table: which upstream serves a path, and which paths are public.

Built once at start-up from the service registry (`aitrading.registry`) and the settings. Only the
deployed services (DEPLOYED_SERVICES, else the service folders of this checkout) and user-service
are routed: a path whose owner is not among them is unknown (404), never a connection attempt to a
service that does not exist. The lookup is a dictionary probe per prefix depth, so it costs the same
for every path (the same answer as `registry.owner_of`, which scans the catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from aitrading.client import CircuitBreaker
from aitrading.registry import REGISTRY, deployed, service_url
from api_gateway.settings import Settings
from api_gateway.upstream_http import Origin

_log = structlog.get_logger("api_gateway.routes")

API_ROOT = "/api/v1/"
_API_ROOT_LEN = len(API_ROOT)
JWKS_PATH = "/.well-known/jwks.json"
IDENTITY_SERVICE = "user-service"  # issues tokens, exchanges API keys, publishes the JWKS (always routed)


@dataclass(eq=False)
class Upstream:
    """One service the gateway forwards to, with its own circuit breaker."""

    name: str
    base_url: str
    breaker: CircuitBreaker
    prefixes: tuple[str, ...] = ()
    websocket_paths: tuple[str, ...] = ()
    origin: Origin = field(init=False)

    def __post_init__(self) -> None:
        self.origin = Origin.parse(self.base_url)


@dataclass(frozen=True, slots=True)
class Route:
    upstream: Upstream
    prefix: str  # the API prefix that matched, e.g. "orders" (also the usage event's route prefix)
    public: bool  # the whole prefix is reachable without a token
    public_below: tuple[str, ...] = ()  # deeper public prefixes, e.g. "users/verify"

    def is_public(self, rest: str) -> bool:
        """Whether `rest` (the path after /api/v1/) needs no token."""
        if self.public:
            return True
        if not self.public_below:
            return False
        return any(rest == prefix or rest.startswith(prefix + "/") for prefix in self.public_below)


@dataclass
class RouteTable:
    upstreams: dict[str, Upstream]
    _routes: dict[str, Route] = field(default_factory=dict)
    _depths: tuple[int, ...] = ()
    _websockets: dict[str, Upstream] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> RouteTable:
        names = routable_services(settings)
        upstreams: dict[str, Upstream] = {}

        def breaker(name: str) -> CircuitBreaker:
            return CircuitBreaker(name, failure_threshold=settings.breaker_failure_threshold,
                                  reset_timeout_s=settings.breaker_reset_timeout_s)

        for name in names:
            spec = REGISTRY[name]
            upstreams[name] = Upstream(name, service_url(name, settings.service_urls), breaker(name),
                                       spec.prefixes, spec.websocket_paths)
        table = cls(upstreams)
        public = {p.strip("/") for p in settings.gateway_public_prefixes}
        for name in names:
            spec = REGISTRY[name]
            public.update(spec.public_prefixes)
        taken = {prefix for spec in REGISTRY.values() for prefix in spec.prefixes}
        for prefix, url in settings.gateway_extra_routes.items():
            prefix = prefix.strip("/")
            if not prefix or prefix in taken:
                _log.warning("extra route ignored: its prefix is empty or belongs to a registry service",
                             prefix=prefix)
                continue
            upstreams[prefix] = Upstream(prefix, url.rstrip("/"), breaker(prefix), (prefix,))
        for upstream in upstreams.values():
            for prefix in upstream.prefixes:
                below = tuple(sorted(p for p in public if p.startswith(prefix + "/")))
                table._routes[prefix] = Route(upstream, prefix, prefix in public, below)
            for path in upstream.websocket_paths:
                table._websockets[path.rstrip("/")] = upstream
        table._depths = tuple(sorted({p.count("/") + 1 for p in table._routes}, reverse=True))
        return table

    def resolve(self, path: str) -> tuple[Route, str] | None:
        """The route of an `/api/v1/...` path and the path's rest after /api/v1/, or None."""
        rest = path[_API_ROOT_LEN:]
        routes = self._routes
        depths = self._depths
        parts = rest.split("/", depths[0]) if depths else []
        for depth in depths:
            if len(parts) >= depth:
                route = routes.get(parts[0] if depth == 1 else "/".join(parts[:depth]))
                if route is not None:
                    return route, rest
        return None

    def websocket_upstream(self, path: str) -> Upstream | None:
        """The upstream serving a WebSocket path: an exact registered path or one below it."""
        path = path.rstrip("/")
        upstream = self._websockets.get(path)
        if upstream is not None:
            return upstream
        for base, candidate in self._websockets.items():
            if path.startswith(base + "/"):
                return candidate
        return None

    def routes(self) -> list[Route]:
        return list(self._routes.values())


def routable_services(settings: Settings) -> list[str]:
    """The deployed services (settings.deployed_services) plus user-service, in catalogue order.

    user-service is always routed: tokens, API keys and the JWKS come from it.
    """
    wanted = {spec.name for spec in deployed(settings.deployed_services)} | {IDENTITY_SERVICE}
    if settings.deployed_services is not None:
        unknown = set(settings.deployed_services) - set(REGISTRY)
    else:
        unknown = set()
    if unknown:
        _log.warning("ignoring services that are not in the registry", services=sorted(unknown))
    return [name for name in REGISTRY if name in wanted and name != settings.service_name]
