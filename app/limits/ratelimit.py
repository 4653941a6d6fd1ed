"""Per-key request rate limits: fixed one-minute windows in Redis, or in memory without it.

Each request gets a number in its key's window, unique across processes; it is allowed when
the number is within the limit. A process takes numbers from Redis in blocks (``INCRBY``):
one at a time at first and near the limit, doubling up to ``MAX_BLOCK`` while a key is busy
and far from it, so a busy key costs one Redis round trip per block instead of per request.
Numbers a process took but did not hand out before the window ended are lost, so several
processes may refuse a key slightly before its limit; none ever allows more than the limit.

When Redis is configured but unreachable, an in-process limiter takes over for those
requests (a warning is logged): a clinic's interview must not stop because the cache is
down, and a key must not get unlimited requests either. The in-memory limiter counts per
process, so with several replicas and no Redis the effective limit is the per-process limit
times the number of replicas (the same holds while Redis is down).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

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


_MAX_ENTRIES = 100_000
_Entry = TypeVar("_Entry")


def _pruned(
    entries: dict[str, _Entry], index: int, window: Callable[[_Entry], int]
) -> dict[str, _Entry]:
    """``entries`` as they are, or, once they hold more than ``_MAX_ENTRIES`` keys, only those
    of the current window (per-key state must not grow without bound)."""
    if len(entries) <= _MAX_ENTRIES:
        return entries
    return {k: v for k, v in entries.items() if window(v) == index}


def _decide(count: int, limit: int, reset_s: int) -> RateDecision:
    return RateDecision(
        allowed=count <= limit, limit=limit, remaining=max(0, limit - count), reset_s=reset_s
    )


# One round trip and one command: take a block of numbers, start the window's expiry with its
# first block.
_TAKE = """
local top = redis.call('INCRBY', KEYS[1], ARGV[2])
if top == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return top
"""
MAX_BLOCK = 16


@dataclass(slots=True)
class _Block:
    """Numbers this process took for one key and window: ``next`` up to ``top``."""

    window: int
    next: int
    top: int
    size: int  # the size of the block taken, for the next one


class RedisRateLimiter:
    def __init__(self, redis: Redis, *, per_minute: int) -> None:
        self._redis = redis
        self._limit = per_minute
        self._take = redis.register_script(_TAKE)
        self._blocks: dict[str, _Block] = {}
        self._fallback = MemoryRateLimiter(per_minute=per_minute)

    async def hit(self, key: str) -> RateDecision:
        index, reset_s = _window(time.time())
        block = self._blocks.get(key)
        if block is not None and block.window == index and block.next <= block.top:
            number = block.next
            block.next += 1
            return _decide(number, self._limit, reset_s)
        size = self._next_size(block, index)
        try:
            top = int(
                await self._take(keys=[f"pursuit:rl:{key}:{index}"], args=[WINDOW_S + 5, size])
            )
        except (RedisError, OSError) as exc:
            log.warning("rate_limit.redis_unavailable", error=type(exc).__name__)
            return await self._fallback.hit(key)
        first = top - size + 1
        self._blocks = _pruned(self._blocks, index, lambda b: b.window)
        self._blocks[key] = _Block(window=index, next=first + 1, top=top, size=size)
        return _decide(first, self._limit, reset_s)

    def _next_size(self, last: _Block | None, index: int) -> int:
        """1 for a key's first block in a window; then double, but never more than an eighth
        of what is left under the limit (so near it, one number at a time: exact)."""
        if last is None or last.window != index:
            return 1
        left = self._limit - last.top
        return max(1, min(MAX_BLOCK, 2 * last.size, left // 8))


class MemoryRateLimiter:
    def __init__(self, *, per_minute: int) -> None:
        self._limit = per_minute
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str) -> RateDecision:
        index, reset_s = _window(time.time())
        window, count = self._counts.get(key, (index, 0))
        count = count + 1 if window == index else 1
        self._counts[key] = (index, count)
        self._counts = _pruned(self._counts, index, lambda v: v[0])
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
        self._counts = _pruned(self._counts, index, lambda v: v[0])
