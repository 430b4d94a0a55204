"""Token-bucket rate limiting: one behaviour, two backends (in-process, and real Redis when configured)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import RedisError

from aitrading.embedded import free_port
from aitrading.errors import Invalid
from aitrading.ratelimit import (
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    url = None if request.param == "memory" else request.getfixturevalue("redis_url")
    instance = make_rate_limiter(url, namespace=f"test-ratelimit-{uuid.uuid4().hex[:8]}")
    await instance.start()
    yield instance
    await instance.stop()


def key() -> str:
    return f"user:{uuid.uuid4()}"


async def test_burst_is_allowed_then_refused_with_retry_after(limiter: RateLimiter) -> None:
    k = key()
    decisions = [await limiter.hit(k, per_minute=60, burst=3) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.limit == 3
    assert 0.9 < refused.retry_after_s <= 1.0  # one token per second
    assert 2.5 < refused.reset_s <= 3.0


async def test_capacity_defaults_to_the_per_minute_rate(limiter: RateLimiter) -> None:
    k = key()
    allowed = [(await limiter.hit(k, per_minute=5)).allowed for _ in range(6)]
    assert allowed == [True] * 5 + [False]


async def test_bucket_refills_over_time(limiter: RateLimiter) -> None:
    k = key()
    for _ in range(2):
        assert (await limiter.hit(k, per_minute=1200, burst=2)).allowed  # 20 tokens a second
    refused = await limiter.hit(k, per_minute=1200, burst=2)
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.05

    await asyncio.sleep(refused.retry_after_s + 0.03)

    assert (await limiter.hit(k, per_minute=1200, burst=2)).allowed


async def test_refill_never_exceeds_the_burst(limiter: RateLimiter) -> None:
    k = key()
    await limiter.hit(k, per_minute=6000, burst=2)  # 100 tokens a second
    await asyncio.sleep(0.1)
    decisions = [await limiter.hit(k, per_minute=6000, burst=2) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]


async def test_keys_have_separate_buckets(limiter: RateLimiter) -> None:
    a, b = key(), key()
    assert (await limiter.hit(a, per_minute=60, burst=1)).allowed
    assert not (await limiter.hit(a, per_minute=60, burst=1)).allowed
    assert (await limiter.hit(b, per_minute=60, burst=1)).allowed


async def test_cost_takes_several_tokens(limiter: RateLimiter) -> None:
    k = key()
    first = await limiter.hit(k, per_minute=60, burst=10, cost=7)
    second = await limiter.hit(k, per_minute=60, burst=10, cost=7)
    assert first.allowed and first.remaining == 3
    assert not second.allowed and second.remaining == 3
    assert 3.9 < second.retry_after_s <= 4.0


async def test_refused_hits_do_not_consume_tokens(limiter: RateLimiter) -> None:
    k = key()
    await limiter.hit(k, per_minute=600, burst=1)  # 10 tokens a second
    for _ in range(5):
        assert not (await limiter.hit(k, per_minute=600, burst=1)).allowed
    await asyncio.sleep(0.12)
    assert (await limiter.hit(k, per_minute=600, burst=1)).allowed


@pytest.mark.parametrize(("per_minute", "burst", "cost"),
                         [(0, None, 1), (-5, None, 1), (60, 0, 1), (60, 2, 3)])
async def test_impossible_settings_are_refused(limiter: RateLimiter, per_minute: int, burst: int | None,
                                               cost: int) -> None:
    with pytest.raises(Invalid):
        await limiter.hit(key(), per_minute=per_minute, burst=burst, cost=cost)


async def test_check_passes_when_reachable(limiter: RateLimiter) -> None:
    await limiter.check()


def test_headers_of_an_allowed_decision() -> None:
    decision = RateDecision(allowed=True, limit=120, remaining=119, reset_s=0.5, retry_after_s=0.0)
    assert decision.headers() == {"RateLimit-Limit": "120", "RateLimit-Remaining": "119",
                                  "RateLimit-Reset": "1"}


def test_headers_of_a_refused_decision_carry_retry_after() -> None:
    decision = RateDecision(allowed=False, limit=120, remaining=0, reset_s=59.2, retry_after_s=0.2)
    assert decision.headers() == {"RateLimit-Limit": "120", "RateLimit-Remaining": "0",
                                  "RateLimit-Reset": "60", "Retry-After": "1"}


async def test_memory_limiter_drops_buckets_that_refilled() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    for i in range(100):
        await limiter.hit(f"k{i}", per_minute=60)  # full again one second after the hit
    assert len(limiter) == 100
    now[0] = 2.0
    for i in range(100, 150):
        await limiter.hit(f"k{i}", per_minute=60)
    assert len(limiter) == 50  # each new key retired up to two idle, refilled buckets


async def test_memory_limiter_keeps_at_most_max_keys() -> None:
    limiter = MemoryRateLimiter(max_keys=10)
    for i in range(50):
        await limiter.hit(f"k{i}", per_minute=60)
    assert len(limiter) == 10


async def test_memory_limiter_keeps_a_busy_bucket() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    for _ in range(3):
        await limiter.hit("busy", per_minute=60, burst=3)
    now[0] = 0.5
    await limiter.hit("newcomer", per_minute=60)
    assert not (await limiter.hit("busy", per_minute=60, burst=3)).allowed



async def test_unreachable_redis_falls_back_to_in_process_buckets() -> None:
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0")
    try:
        k = key()
        decisions = [await limiter.hit(k, per_minute=60, burst=2) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        with pytest.raises(RedisError):
            await limiter.check()
    finally:
        await limiter.stop()


async def test_redis_buckets_are_shared_between_limiters(redis_url: str) -> None:
    namespace = f"shared-{uuid.uuid4().hex[:8]}"
    first = RedisRateLimiter(redis_url, namespace=namespace)
    second = RedisRateLimiter(redis_url, namespace=namespace)
    try:
        k = key()
        assert (await first.hit(k, per_minute=60, burst=1)).allowed
        assert not (await second.hit(k, per_minute=60, burst=1)).allowed  # another replica, same bucket
    finally:
        await first.stop()
        await second.stop()


async def test_a_busy_key_leases_tokens_instead_of_a_round_trip_per_hit(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, namespace=f"lease-{uuid.uuid4().hex[:8]}", max_lease=50)
    try:
        k = key()
        # A slow refill (1 token/s) and a deep bucket, so the count-down is not blurred by refills.
        decisions = [await limiter.hit(k, per_minute=60, burst=12_000) for _ in range(1000)]
        assert all(d.allowed for d in decisions)
        # Remaining counts down one per hit, leased or not (a refill may hold it for one hit).
        remaining = [d.remaining for d in decisions[:200]]
        steps = [a - b for a, b in itertools.pairwise(remaining)]
        assert remaining[0] == 11_999 and set(steps) <= {0, 1} and steps.count(0) <= 2
        assert limiter.round_trips < 100
    finally:
        await limiter.stop()


async def test_leases_never_let_replicas_exceed_the_bucket(redis_url: str) -> None:
    namespace = f"lease-{uuid.uuid4().hex[:8]}"
    replicas = [RedisRateLimiter(redis_url, namespace=namespace, lease_s=30) for _ in range(3)]
    try:
        k = key()
        allowed = 0
        for _ in range(200):  # 600 hits on a bucket of 400 that refills 0.1 token a second
            for replica in replicas:
                allowed += (await replica.hit(k, per_minute=6, burst=400)).allowed
        assert allowed == 400
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_key_hit_now_and_again_takes_no_lease(redis_url: str) -> None:
    now = [0.0]
    limiter = RedisRateLimiter(redis_url, namespace=f"lease-{uuid.uuid4().hex[:8]}", lease_s=0.5,
                               clock=lambda: now[0])
    try:
        k = key()
        remaining = []
        for _ in range(5):
            remaining.append((await limiter.hit(k, per_minute=600, burst=600)).remaining)
            now[0] += 2.0  # slower than a lease lives: nothing is leased, so nothing is lost
        assert limiter.round_trips == 5
        # Each hit took exactly its own token (Redis' clock barely moved, so nothing refilled).
        assert remaining == [599, 598, 597, 596, 595]
    finally:
        await limiter.stop()


async def test_concurrent_hits_share_one_round_trip_and_waste_no_tokens(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, namespace=f"lease-{uuid.uuid4().hex[:8]}", lease_s=30)
    try:
        k = key()
        for _ in range(3):  # warm the key so the next round trip takes a lease
            await limiter.hit(k, per_minute=6, burst=1000)
        decisions = await asyncio.gather(*(limiter.hit(k, per_minute=6, burst=1000) for _ in range(64)))
        assert all(d.allowed for d in decisions)
        # Every token taken from Redis was either a hit or is still leased here: none were overwritten.
        lease_left = limiter._leases[k].tokens
        last = await limiter.hit(k, per_minute=6, burst=1000)
        assert last.remaining == 1000 - 3 - 64 - 1
        assert lease_left >= 0 and limiter.round_trips < 64
    finally:
        await limiter.stop()
