"""The Redis rate limiter against the real Redis: counts per key and window, expires windows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from app.limits.ratelimit import MAX_BLOCK, WINDOW_S, RedisRateLimiter
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.redis


async def test_hits_count_per_key_and_the_window_expires() -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        limiter = RedisRateLimiter(redis, per_minute=3)
        key, other = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
        decisions = [await limiter.hit(key) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert (await limiter.hit(other)).remaining == 2  # keys do not share a window
        names = [n async for n in redis.scan_iter(match=f"pursuit:rl:{key}:*")]
        assert len(names) == 1
        assert int(await redis.get(names[0]) or 0) == 4
        ttl = await redis.ttl(names[0])
        assert WINDOW_S < ttl <= WINDOW_S + 5  # set by the first hit of the window
        await redis.delete(*names)
    finally:
        await redis.aclose()


async def _in_one_window(check: Callable[[], Awaitable[None]]) -> None:
    """Run ``check`` again if a minute boundary (a new window) fell inside it."""
    for _ in range(3):
        window = int(time.time() // WINDOW_S)
        await check()
        if int(time.time() // WINDOW_S) == window:
            return
    raise AssertionError("three runs each crossed a window boundary")


async def test_a_busy_key_takes_numbers_in_blocks_and_never_exceeds_its_limit() -> None:
    redis = Redis.from_url(REDIS_URL)

    async def one_process() -> None:
        key = f"test-{uuid.uuid4().hex}"
        limiter = RedisRateLimiter(redis, per_minute=1000)
        calls = 0
        take = limiter._take

        async def counted(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await take(**kwargs)

        limiter._take = counted  # type: ignore[assignment]
        decisions = [await limiter.hit(key) for _ in range(200)]
        assert calls <= 20  # blocks of 1, 2, 4, 8, then 16: not one round trip per request
        # One process: the numbers are handed out in order, as with one INCR per request.
        assert [d.remaining for d in decisions] == list(range(999, 799, -1))
        (name,) = [n async for n in redis.scan_iter(match=f"pursuit:rl:{key}:*")]
        taken = int(await redis.get(name) or 0)
        assert 200 <= taken < 200 + MAX_BLOCK  # at most one block's numbers unused
        await redis.delete(name)

    async def two_processes() -> None:
        # They share the key's window: together they never allow more than the limit, and
        # refuse at most a few blocks' worth early.
        key = f"test-{uuid.uuid4().hex}"
        first = RedisRateLimiter(redis, per_minute=300)
        second = RedisRateLimiter(redis, per_minute=300)
        allowed = 0
        for i in range(400):
            allowed += (await (first if i % 3 else second).hit(key)).allowed
        assert 300 - 2 * MAX_BLOCK <= allowed <= 300
        await redis.delete(*[n async for n in redis.scan_iter(match=f"pursuit:rl:{key}:*")])

    try:
        await _in_one_window(one_process)
        await _in_one_window(two_processes)
    finally:
        await redis.aclose()
