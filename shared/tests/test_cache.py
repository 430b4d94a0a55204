"""The cache: one behaviour, two backends (in-process, and real Redis when REDIS_URL is set)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import RedisError

from aitrading.cache import Cache, MemoryCache, RedisCache, make_cache
from aitrading.embedded import free_port
from aitrading.errors import Unavailable


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    yield None if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.fixture
async def cache(backend: str | None) -> AsyncIterator[Cache]:
    c = make_cache(backend, namespace=f"test-{uuid.uuid4().hex[:8]}")
    await c.start()
    yield c
    await c.stop()


def test_backend_follows_the_configuration(cache: Cache, backend: str | None) -> None:
    assert isinstance(cache, RedisCache if backend else MemoryCache)


async def test_value_set_is_returned(cache: Cache) -> None:
    await cache.set("quote:SPX", b"4500.25")
    assert await cache.get("quote:SPX") == b"4500.25"


async def test_missing_key_is_none(cache: Cache) -> None:
    assert await cache.get("never-set") is None


async def test_set_overwrites(cache: Cache) -> None:
    await cache.set("k", b"one")
    await cache.set("k", b"two")
    assert await cache.get("k") == b"two"


async def test_delete_removes_and_tolerates_missing(cache: Cache) -> None:
    await cache.set("k", b"v")
    await cache.delete("k")
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_entry_expires_after_its_ttl(cache: Cache) -> None:
    await cache.set("short", b"v", ttl_s=0.1)
    await cache.set("long", b"v", ttl_s=30)
    assert await cache.get("short") == b"v"
    await asyncio.sleep(0.2)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"v"


async def test_non_positive_ttl_stores_nothing(cache: Cache) -> None:
    await cache.set("k", b"old")
    await cache.set("k", b"new", ttl_s=0)
    assert await cache.get("k") is None


async def test_binary_values_round_trip(cache: Cache) -> None:
    value = bytes(range(256))
    await cache.set("bin", value)
    assert await cache.get("bin") == value


async def test_namespaces_do_not_collide(backend: str | None) -> None:
    a = make_cache(backend, namespace=f"a-{uuid.uuid4().hex[:8]}")
    b = make_cache(backend, namespace=f"b-{uuid.uuid4().hex[:8]}")
    try:
        await a.set("shared-key", b"from a")
        assert await b.get("shared-key") is None
        await b.set("shared-key", b"from b")
        assert await a.get("shared-key") == b"from a"
    finally:
        await a.stop()
        await b.stop()


async def test_check_passes_when_reachable(cache: Cache) -> None:
    await cache.check()


async def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(namespace="lru", max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode())
    assert await cache.get("a") == b"a"  # "a" is now the most recently used
    await cache.set("d", b"d")
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]



async def test_unreachable_redis_degrades_to_misses_but_fails_check_and_invalidation() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", namespace="down")
    try:
        await cache.set("k", b"v")  # skipped, not raised
        assert await cache.get("k") is None
        with pytest.raises(Unavailable, match="invalidate"):
            await cache.delete("k")
        with pytest.raises(RedisError):
            await cache.check()
    finally:
        await cache.stop()
