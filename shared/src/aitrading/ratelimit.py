"""Token-bucket rate limiting: in Redis (one atomic Lua call per hit) or in-process, one interface.

A bucket holds up to `burst` tokens (default `per_minute`) and refills at `per_minute / 60` tokens a
second; a hit takes `cost` tokens or is refused with the time until enough have refilled. Decisions
render as the IETF draft `RateLimit-*` headers plus `Retry-After` when refused.

The gateway calls `hit` on every request, so both backends are cheap: the in-process one is O(1) per
hit with no locks (the event loop serializes it), the Redis one is a single round trip that also uses
Redis' clock, so every gateway replica shares one bucket per key. If Redis fails, hits are decided by
an in-process bucket until it answers again: limits stay enforced per replica instead of failing
every request or none.

A busy key does not pay a round trip per hit: with the hit it needs, a replica may take a small
lease of extra tokens from the Redis bucket (never more than the bucket holds, at most 1/20 of its
capacity, and sized by how busy the key was during the previous lease) and spend them locally for
`lease_s`. Leased tokens are spent once, so the limit stays exact across replicas; what a lease
costs is that `RateLimit-Remaining` does not see other replicas' hits until the next round trip, and
that tokens leased but not used before the lease lapses are lost (at most one lease per key).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from aitrading.errors import Invalid


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_log = structlog.get_logger("aitrading.ratelimit")


class RateDecision(NamedTuple):
    """Immutable and cheap to build (a tuple): the gateway makes one per request."""

    allowed: bool
    limit: int  # the bucket capacity
    remaining: int  # whole tokens left after this hit
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: float  # seconds until this hit would be allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimiter(Protocol):
    name: str

    async def hit(self, key: str, *, per_minute: int, burst: int | None = None,
                  cost: int = 1) -> RateDecision: ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> None: ...


def _bucket(per_minute: int, burst: int | None, cost: int) -> tuple[int, float]:
    """(capacity, tokens per second) of a bucket, refusing settings no bucket can honour."""
    if per_minute <= 0:
        raise Invalid(f"a rate limit is a positive number of requests per minute, not {per_minute}")
    capacity = per_minute if burst is None else burst
    if capacity <= 0:
        raise Invalid(f"a burst is a positive number of requests, not {burst}")
    if cost < 0 or cost > capacity:
        raise Invalid(f"a cost of {cost} can never fit a bucket of {capacity}")
    return capacity, per_minute / 60.0


def _decide(tokens: float, capacity: int, rate: float, cost: int) -> tuple[RateDecision, float]:
    """The decision for a hit on a bucket holding `tokens` (already refilled), and the tokens after it."""
    if tokens >= cost:
        tokens -= cost
        allowed, retry_after = True, 0.0
    else:
        allowed, retry_after = False, (cost - tokens) / rate
    decision = RateDecision(allowed, capacity, int(tokens), (capacity - tokens) / rate, retry_after)
    return decision, tokens


class MemoryRateLimiter:
    """Buckets in this process. Idle buckets that have refilled completely are dropped (they equal a
    fresh one), oldest first, and at most `max_keys` are kept, so memory stays bounded."""

    name = "rate-limiter"

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        # key → [tokens, updated_at, full_at]; ordered from least to most recently hit.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def hit(self, key: str, *, per_minute: int, burst: int | None = None,
                  cost: int = 1) -> RateDecision:
        return self.hit_now(key, per_minute=per_minute, burst=burst, cost=cost)

    def hit_now(self, key: str, *, per_minute: int, burst: int | None = None, cost: int = 1) -> RateDecision:
        """`hit` without the coroutine, for callers already on the hot path."""
        capacity, rate = _bucket(per_minute, burst, cost)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = float(capacity)
        else:
            tokens = min(float(capacity), bucket[0] + (now - bucket[1]) * rate)
            self._buckets.move_to_end(key)
        decision, tokens = _decide(tokens, capacity, rate, cost)
        full_at = now + decision.reset_s
        if bucket is None:
            self._buckets[key] = [tokens, now, full_at]
            self._evict(now)
        else:
            bucket[0], bucket[1], bucket[2] = tokens, now, full_at
        return decision

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        for _ in range(2):  # amortized O(1): each new key retires at most two idle ones
            if not buckets:
                return
            oldest = next(iter(buckets.values()))
            if oldest[2] > now:
                break
            buckets.popitem(last=False)
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        self._buckets.clear()

    async def check(self) -> None:
        """Always ready."""


# KEYS[1] bucket; ARGV capacity, tokens per second, cost, extra tokens wanted as a lease. Returns
# {allowed, tokens, retry_after, full_in, leased} with the floats as strings (Redis truncates Lua
# numbers to integers); a lease is granted only with an allowed hit and never exceeds what is left.
_TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
else
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed * rate)
end
local allowed = 0
local retry_after = 0
local leased = 0
if tokens >= cost then
  leased = math.max(0, math.min(lease, math.floor(tokens - cost)))
  tokens = tokens - cost - leased
  allowed = 1
else
  retry_after = (cost - tokens) / rate
end
local full_in = (capacity - tokens) / rate
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(full_in * 1000) + 1000)
return {allowed, tostring(tokens), tostring(retry_after), tostring(full_in), leased}
"""


class _Lease:
    """Tokens a replica took from a Redis bucket ahead of need, spent locally until `expires_at`."""

    __slots__ = ("capacity", "expires_at", "full_at", "hits", "remaining", "tokens")

    def __init__(self, capacity: int, tokens: int, remaining: int, full_at: float, expires_at: float) -> None:
        self.capacity = capacity
        self.tokens = tokens
        self.remaining = remaining  # the Redis bucket's whole tokens after this lease was taken
        self.full_at = full_at
        self.expires_at = expires_at
        self.hits = 1  # hits decided under this lease, the round trip's own included


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica; a round trip per hit, or per lease on a busy key."""

    name = "rate-limiter"

    def __init__(self, url: str | None = None, *, client: aioredis.Redis | None = None,
                 namespace: str = "ratelimit", timeout_s: float = 1.0, warn_every_s: float = 10.0,
                 max_lease: int = 50, lease_s: float = 0.5, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if client is None and not url:
            raise ValueError("a RedisRateLimiter needs a Redis URL or client")
        self._owns_client = client is None
        self.redis: aioredis.Redis = client or aioredis.Redis.from_url(
            url or "", socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.namespace = namespace
        self.fallback = MemoryRateLimiter()
        self._script = self.redis.register_script(_TOKEN_BUCKET_LUA)
        self._warn_every_s = warn_every_s
        self._warned_at = float("-inf")
        self.max_lease = max_lease
        self.lease_s = lease_s
        self.max_keys = max_keys
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._renewing: dict[str, asyncio.Future[None]] = {}
        self.round_trips = 0

    async def hit(self, key: str, *, per_minute: int, burst: int | None = None,
                  cost: int = 1) -> RateDecision:
        capacity, rate = _bucket(per_minute, burst, cost)
        while True:
            now = self._clock()
            lease = self._leases.get(key)
            if (lease is not None and now < lease.expires_at and lease.capacity == capacity
                    and lease.tokens >= cost):
                lease.tokens -= cost
                lease.hits += 1
                return RateDecision(True, capacity, lease.remaining + lease.tokens,
                                    max(0.0, lease.full_at - now), 0.0)
            renewing = self._renewing.get(key)
            if renewing is None:
                break
            # One round trip per key at a time: concurrent hits wait for its lease instead of each
            # taking (and overwriting) a lease of their own.
            await asyncio.shield(renewing)
        # A lease is worth taking only for a key that was busy under the last one: about as many
        # tokens as it spent then, so a key hit now and again never has tokens leased and lost.
        busy = lease.hits if lease is not None and now < lease.expires_at + self.lease_s else 0
        want = min(self.max_lease, capacity // 20, busy)
        done = asyncio.get_running_loop().create_future()
        self._renewing[key] = done
        try:
            allowed, tokens, retry_after, full_in, leased = await self._script(
                keys=[f"{self.namespace}:{key}"], args=[capacity, repr(rate), cost, want])
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return self.fallback.hit_now(key, per_minute=per_minute, burst=burst, cost=cost)
        finally:
            del self._renewing[key]
            done.set_result(None)
        self.round_trips += 1
        remaining = int(float(tokens))
        self._keep_lease(key, _Lease(capacity, int(leased), remaining, now + float(full_in),
                                     now + self.lease_s))
        return RateDecision(bool(allowed), capacity, remaining + int(leased), float(full_in),
                            float(retry_after))

    def _keep_lease(self, key: str, lease: _Lease) -> None:
        leases = self._leases
        leases.pop(key, None)  # re-inserted last: the dict's order is least recently renewed first
        leases[key] = lease
        while len(leases) > self.max_keys:
            del leases[next(iter(leases))]

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self._warn_every_s:
            self._warned_at = now
            _log.warning("Redis rate limiting failed; deciding in-process until it answers",
                         error=_describe(exc))

    async def start(self) -> None:
        """Nothing to open eagerly: the connection is made on the first hit."""

    async def stop(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    async def check(self) -> None:
        await self.redis.ping()


def make_rate_limiter(redis_url: str | None, *, namespace: str = "ratelimit") -> RateLimiter:
    """Redis when a URL is configured (buckets shared by all replicas), in-process otherwise."""
    if redis_url:
        return RedisRateLimiter(redis_url, namespace=namespace)
    return MemoryRateLimiter()
