"""Per-key request rate limits: fixed one-minute windows in Redis, or in memory without it.

When Redis is configured but unreachable, an in-process limiter takes over for those
requests (a warning is logged): a clinic's interview must not stop because the cache is
down, and a key must not get unlimited requests either. The in-memory limiter counts per
process, so with several replicas and no Redis the effective limit is the per-process limit
times the number of replicas (the same holds while Redis is down).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger("pursuit.limits")

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the window resets

    def headers(self) -> dict[str, str]:
        """IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), plus Retry-After on 429."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_s)
        return headers


class RateLimiter(Protocol):
    async def hit(self, key: str) -> RateDecision: ...


def _window(now: float) -> tuple[int, int]:
    index = int(now // WINDOW_S)
    return index, max(1, int((index + 1) * WINDOW_S - now))


def _decide(count: int, limit: int, reset_s: int) -> RateDecision:
    return RateDecision(
        allowed=count <= limit, limit=limit, remaining=max(0, limit - count), reset_s=reset_s
    )


# One round trip and one command: count the hit, start the window's expiry with its first.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, *, per_minute: int) -> None:
        self._redis = redis
        self._limit = per_minute
        self._hit = redis.register_script(_HIT)
        self._fallback = MemoryRateLimiter(per_minute=per_minute)

    async def hit(self, key: str) -> RateDecision:
        index, reset_s = _window(time.time())
        name = f"pursuit:rl:{key}:{index}"
        try:
            count = await self._hit(keys=[name], args=[WINDOW_S + 5])
        except (RedisError, OSError) as exc:
            log.warning("rate_limit.redis_unavailable", error=type(exc).__name__)
            return await self._fallback.hit(key)
        return _decide(int(count), self._limit, reset_s)


class MemoryRateLimiter:
    def __init__(self, *, per_minute: int) -> None:
        self._limit = per_minute
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str) -> RateDecision:
        index, reset_s = _window(time.time())
        window, count = self._counts.get(key, (index, 0))
        count = count + 1 if window == index else 1
        self._counts[key] = (index, count)
        if len(self._counts) > 100_000:  # drop stale windows now and then
            self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
        return _decide(count, self._limit, reset_s)


class FailureThrottle:
    """Failed authentications per client address and minute, in process: past the limit
    the address is refused before its key is looked up (no database query per guess)."""

    def __init__(self, *, per_minute: int) -> None:
        self._limit = per_minute
        self._counts: dict[str, tuple[int, int]] = {}

    def refusal(self, address: str) -> RateDecision | None:
        """A 429 decision while ``address`` is over its failures this minute, else None."""
        index, reset_s = _window(time.time())
        window, count = self._counts.get(address, (index, 0))
        if window == index and count >= self._limit:
            return RateDecision(False, self._limit, 0, reset_s)
        return None

    def failed(self, address: str) -> None:
        index, _ = _window(time.time())
        window, count = self._counts.get(address, (index, 0))
        self._counts[address] = (index, count + 1 if window == index else 1)
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
