"""The Redis rate limiter against the real Redis: counts per key and window, expires windows."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from app.limits.ratelimit import WINDOW_S, RedisRateLimiter
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
