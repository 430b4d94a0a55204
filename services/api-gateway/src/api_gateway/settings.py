"""The gateway's settings: ServiceSettings plus routing, rate-limit, timeout and usage knobs."""

from __future__ import annotations

from aitrading.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "api-gateway"

    # Extra `/api/v1/<prefix>` routes beyond the registry, prefix → base URL, e.g.
    # GATEWAY_EXTRA_ROUTES='{"bench": "http://127.0.0.1:9100"}' routes /api/v1/bench/... there.
    # The prefix also names the upstream in metrics and usage events. Registry prefixes win.
    gateway_extra_routes: dict[str, str] = {}
    # API prefixes reachable without a token besides the registry's public ones (e.g. payment
    # provider webhooks, which carry their own signature).
    gateway_public_prefixes: list[str] = []

    # Token-bucket limits per plan, requests per minute (the bucket also holds one minute's worth).
    rate_limit_free: int = 120
    rate_limit_pro: int = 1200
    rate_limit_enterprise: int = 12000
    # Public routes called without a token are limited per client IP at this rate.
    rate_limit_anonymous: int = 120

    # Upstream HTTP: connect timeout, the longest wait for the upstream's next bytes, idle connections
    # kept per upstream.
    upstream_connect_timeout_s: float = 2.0
    upstream_timeout_s: float = 30.0
    upstream_pool_size: int = 256
    # Keep-alive connections idle longer than this are closed (below uvicorn's 5 s keep-alive).
    upstream_keepalive_s: float = 4.0
    # Circuit breaker per upstream: open after this many consecutive failures, half-open after.
    breaker_failure_threshold: int = 5
    breaker_reset_timeout_s: float = 5.0

    # Verified access tokens kept in memory (until their expiry). An API-key exchange is reused for
    # at most `api_key_cache_s` (so a revoked key stops working within it) and is re-done at least
    # `api_key_refresh_margin_s` before the exchanged token expires.
    token_cache_size: int = 10_000
    api_key_cache_s: float = 30.0
    api_key_refresh_margin_s: float = 30.0

    # Usage events: published in batches every interval or when a batch is full; at most
    # `usage_buffer_max` wait in memory (beyond that, and when NATS fails, they are dropped and counted).
    usage_flush_interval_s: float = 1.0
    usage_batch_size: int = 500
    usage_buffer_max: int = 20_000

    # The merged OpenAPI document is rebuilt from the services' documents at most this often.
    openapi_cache_ttl_s: float = 30.0
    openapi_fetch_timeout_s: float = 3.0

    def plan_limits(self) -> dict[str, int]:
        return {"free": self.rate_limit_free, "pro": self.rate_limit_pro,
                "enterprise": self.rate_limit_enterprise}
