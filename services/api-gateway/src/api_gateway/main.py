"""The api-gateway app: the platform factory's FastAPI app with the proxy in front of it.

`create_service` gives the probes (/health, /ready, /metrics, /info), /docs, logging, the NATS bus
(heartbeats), the JWKS verifier, the service client and graceful shutdown; the gateway has no
database; usage events have a NATS connection of their own (see `usage`). Every request meets
`proxy.GatewayProxy` (raw ASGI) first, wrapped by Starlette's CORS middleware when origins are
configured; proxied paths never enter FastAPI's routing or middleware, everything else is handed to
FastAPI as usual.
"""

from __future__ import annotations

import functools
from typing import cast

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from aitrading.ratelimit import make_rate_limiter
from aitrading.service import create_service
from api_gateway import api
from api_gateway.api_keys import ApiKeyExchange
from api_gateway.authentication import Authenticator
from api_gateway.gateway import Gateway
from api_gateway.openapi_merge import MergedOpenApi
from api_gateway.plan_limits import PlanLimits
from api_gateway.proxy import GatewayProxy
from api_gateway.routes import RouteTable
from api_gateway.settings import Settings
from api_gateway.upstream_http import UpstreamHttp
from api_gateway.usage import UsageRecorder

CORS_EXPOSED = ["X-Request-ID", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"]


class GatewayApp(FastAPI):
    """A FastAPI app whose requests pass through `front` (the proxy) before FastAPI sees them.

    FastAPI's own per-request work (its telemetry check, error and body-limit middleware, routing)
    costs more than the whole proxy path on a small request, so the proxy goes in front of the app
    rather than inside its middleware stack.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:  # not wired yet: plain FastAPI
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


async def _start_usage(app: FastAPI) -> None:
    await app.state.gateway.usage.start()


async def _stop_usage(app: FastAPI) -> None:
    await app.state.gateway.usage.stop()  # before the bus closes: the last batch still goes out


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    routes = RouteTable.from_settings(settings)
    http = UpstreamHttp(settings)
    limiter = make_rate_limiter(settings.redis_url, namespace="gateway-ratelimit")
    app = cast(GatewayApp, create_service(settings, database=False, resources=[http, limiter],
                                          on_startup=[_start_usage], on_shutdown=[_stop_usage],
                                          app_class=GatewayApp))
    # The merged document replaces FastAPI's own /openapi.json (which /docs reads).
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != app.openapi_url]
    app.include_router(api.router)

    metrics = app.state.metrics
    usage = UsageRecorder(settings.nats_url, metrics, source=settings.service_name,
                          flush_interval_s=settings.usage_flush_interval_s,
                          batch_size=settings.usage_batch_size, buffer_max=settings.usage_buffer_max)
    api_keys = ApiKeyExchange(app.state.client, cache_s=settings.api_key_cache_s,
                              refresh_margin_s=settings.api_key_refresh_margin_s,
                              max_entries=settings.token_cache_size)
    auth = Authenticator(app.state.verifier, api_keys, cache_size=settings.token_cache_size)
    gateway = Gateway(settings, routes, http, auth, PlanLimits(limiter, settings, metrics), usage,
                      app.state.inflight, metrics)
    app.state.gateway = gateway
    app.state.openapi = MergedOpenApi(routes, http, settings)

    front: ASGIApp = GatewayProxy(functools.partial(FastAPI.__call__, app), gateway=gateway)
    if settings.cors_origins:
        front = CORSMiddleware(front, allow_origins=settings.cors_origins, allow_credentials=True,
                               allow_methods=["*"], allow_headers=["*"], expose_headers=CORS_EXPOSED)
    app.front = front
    return app
