"""A byte cache with one interface: Redis when `REDIS_URL` is set, an in-process TTL map otherwise.

Keys are prefixed with the service's namespace, so services sharing one Redis never collide. A cache
is an optimisation: when Redis fails, `get` answers a miss and `set` is skipped (with a warning), so
callers fall back to the source of truth; `/ready` still reports the failure via `check`. A failed
`delete` raises `Unavailable` instead: an invalidation that silently did not happen would serve stale
data, while raising rolls the caller's request (and its transaction) back.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from aitrading.errors import Unavailable


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_log = structlog.get_logger("aitrading.cache")


class Cache(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def check(self) -> None: ...


def _prefixed(namespace: str, key: str) -> str:
    return f"{namespace}:{key}" if namespace else key


class MemoryCache:
    """In-process TTL map bounded to `max_entries`; the least recently used entry goes first."""

    name = "cache"

    def __init__(self, *, namespace: str = "", max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.namespace = namespace
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        full = _prefixed(self.namespace, key)
        entry = self._entries.get(full)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= self._clock():
            del self._entries[full]
            return None
        self._entries.move_to_end(full)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        full = _prefixed(self.namespace, key)
        if ttl_s is not None and ttl_s <= 0:
            self._entries.pop(full, None)
            return
        expires_at = None if ttl_s is None else self._clock() + ttl_s
        self._entries[full] = (bytes(value), expires_at)
        self._entries.move_to_end(full)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(_prefixed(self.namespace, key), None)

    async def start(self) -> None:
        """Nothing to start: the map lives in this process."""

    async def stop(self) -> None:
        self._entries.clear()

    async def check(self) -> None:
        """Always ready."""


class RedisCache:
    """The cache in Redis (or any Redis-protocol server such as Dragonfly), via redis.asyncio."""

    name = "cache"

    def __init__(self, url: str, *, namespace: str = "", client: aioredis.Redis | None = None,
                 timeout_s: float = 2.0) -> None:
        self.url = url
        self.namespace = namespace
        self._owns_client = client is None
        self.redis: aioredis.Redis = client or aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=False)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(_prefixed(self.namespace, key))
        except (RedisError, OSError) as exc:
            _log.warning("cache read failed; treated as a miss", key=key, error=_describe(exc))
            return None
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        full = _prefixed(self.namespace, key)
        try:
            if ttl_s is None:
                await self.redis.set(full, value)
            elif ttl_s <= 0:
                await self.redis.delete(full)
            else:
                await self.redis.set(full, value, px=max(1, round(ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            _log.warning("cache write skipped", key=key, error=_describe(exc))

    async def delete(self, key: str) -> None:
        try:
            await self.redis.delete(_prefixed(self.namespace, key))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"the cache could not invalidate {key!r}: {exc}") from exc

    async def start(self) -> None:
        """Nothing to open eagerly: connections are made on use, so a late Redis does not block start-up."""

    async def stop(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    async def check(self) -> None:
        await self.redis.ping()


def make_cache(redis_url: str | None, *, namespace: str) -> Cache:
    """Redis when a URL is configured, in-process otherwise; keys prefixed with `namespace`."""
    if redis_url:
        return RedisCache(redis_url, namespace=namespace)
    return MemoryCache(namespace=namespace)
