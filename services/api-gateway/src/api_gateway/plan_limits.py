"""Per-plan rate limits at the gateway: a token bucket per user, or per client IP without a token.

Limits (requests per minute, bucket capacity = one minute's worth) come from the settings:
free 120, pro 1,200, enterprise 12,000 by default; anonymous calls to public routes get
`rate_limit_anonymous` per IP. Buckets live in Redis when REDIS_URL is set (shared by every gateway
replica), in-process otherwise (`aitrading.ratelimit`); the in-process limiter is called without a
coroutine, since every proxied request goes through here.
"""

from __future__ import annotations

import math

from aitrading.metrics import ServiceMetrics
from aitrading.ratelimit import MemoryRateLimiter, RateDecision, RateLimiter
from api_gateway.authentication import Caller
from api_gateway.settings import Settings
from api_gateway.usage import ANONYMOUS_PLAN


class PlanLimits:
    def __init__(self, limiter: RateLimiter, settings: Settings, metrics: ServiceMetrics) -> None:
        self.limiter = limiter
        self._memory = limiter if isinstance(limiter, MemoryRateLimiter) else None
        self.per_plan = settings.plan_limits()
        self.default = settings.rate_limit_free
        self.anonymous = settings.rate_limit_anonymous
        limited = metrics.counter("gateway_rate_limited_total", "Requests refused by the plan rate limit",
                                  ("plan",))
        self._limited = {plan: limited.labels(plan) for plan in (*self.per_plan, ANONYMOUS_PLAN)}
        self._limited_counter = limited

    async def hit(self, caller: Caller | None, client_ip: str) -> RateDecision:
        if caller is not None:
            key, per_minute = caller.limit_key, self.per_plan.get(caller.plan, self.default)
        else:
            key, per_minute = "ip:" + client_ip, self.anonymous
        memory = self._memory
        if memory is not None:
            decision = memory.hit_now(key, per_minute=per_minute)
        else:
            decision = await self.limiter.hit(key, per_minute=per_minute)
        if not decision.allowed:
            plan = caller.plan if caller is not None else ANONYMOUS_PLAN
            counter = self._limited.get(plan)
            (counter or self._limited_counter.labels(plan)).inc()
        return decision


def rate_limit_headers(decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """`decision.headers()` as raw ASGI headers, formatted straight to bytes (this runs per request)."""
    headers = [(b"ratelimit-limit", b"%d" % decision.limit),
               (b"ratelimit-remaining", b"%d" % decision.remaining),
               (b"ratelimit-reset", b"%d" % math.ceil(decision.reset_s))]
    if not decision.allowed:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(decision.retry_after_s))))
    return headers
