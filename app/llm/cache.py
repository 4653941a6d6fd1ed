"""Posterior cache: letter probabilities per exact prompt, in Redis or in process.

Key: ``pursuit:llm:post:{scope}:{model}:{prompt_version}:{sha256(prompt)}``, so a changed
model or template never reads an old entry, and an entry is only ever read in the scope that
wrote it (``app.context.cache_scope_var``: one session, or the shared scope of calibration
runs and benchmarks). A session's entries are purged when it is deleted and expire with the
TTL otherwise; a prompt (patient text) is never stored, only its hash and the probabilities.
The cache is an optimisation: a Redis failure is logged and treated as a miss, never as a
request failure.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger(__name__)

Probs = tuple[float, ...]


_PREFIX = "pursuit:llm:post:"


def scope_prefix(scope: str) -> str:
    """The start of every key of ``scope``."""
    return f"{_PREFIX}{scope}:"


def session_scope(session_id: object) -> str:
    """The cache scope of one interview session."""
    return f"session:{session_id}"


def cache_key(*, model: str, prompt_version: str, prompt: str, scope: str) -> str:
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return f"{scope_prefix(scope)}{model}:{prompt_version}:{digest}"


class PosteriorCache(Protocol):
    """Batch get/set of probability vectors by key."""

    async def get_many(self, keys: Sequence[str]) -> list[Probs | None]: ...

    async def set_many(self, items: Mapping[str, Probs]) -> None: ...


class PurgeableCache(PosteriorCache, Protocol):
    """A cache that can forget one scope (a deleted session)."""

    async def purge(self, scope: str) -> int: ...


class LRUPosteriorCache:
    """In-process LRU (per worker); ``maxsize=0`` disables it."""

    def __init__(self, maxsize: int = 65536) -> None:
        self._maxsize = maxsize
        self._data: OrderedDict[str, Probs] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Sequence[str]) -> list[Probs | None]:
        out: list[Probs | None] = []
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            out.append(value)
        return out

    async def set_many(self, items: Mapping[str, Probs]) -> None:
        if self._maxsize <= 0:
            return
        for key, value in items.items():
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self._maxsize:
            self._data.popitem(last=False)

    async def purge(self, scope: str) -> int:
        """Drop every entry of ``scope`` held by this process; the number dropped."""
        prefix = scope_prefix(scope)
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            del self._data[key]
        return len(doomed)


class RedisPosteriorCache:
    """Shared across workers; entries expire after ``ttl_s``."""

    def __init__(self, redis: Redis, *, ttl_s: int = 24 * 3600) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def get_many(self, keys: Sequence[str]) -> list[Probs | None]:
        if not keys:
            return []
        try:
            raw = await self._redis.mget(list(keys))
        except Exception as exc:  # any Redis/connection failure: a miss
            log.warning("llm.cache.get_failed", error=type(exc).__name__, n=len(keys))
            return [None] * len(keys)
        return [_decode(item) for item in raw]

    async def set_many(self, items: Mapping[str, Probs]) -> None:
        if not items:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, json.dumps(list(value)), ex=self._ttl_s)
                await pipe.execute()
        except Exception as exc:
            log.warning("llm.cache.set_failed", error=type(exc).__name__, n=len(items))

    async def purge(self, scope: str) -> int:
        """Delete every key of ``scope`` (SCAN, then UNLINK); the number deleted.

        A failure is raised: a purge that did not happen must not pass for one.
        """
        deleted = 0
        batch: list[str | bytes] = []
        async for key in self._redis.scan_iter(match=f"{scope_prefix(scope)}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(await self._redis.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(await self._redis.unlink(*batch))
        return deleted


def _decode(item: object) -> Probs | None:
    if item is None:
        return None
    try:
        data = json.loads(item if isinstance(item, str | bytes) else str(item))
        return tuple(float(x) for x in data)
    except (ValueError, TypeError):
        return None


def make_posterior_cache(
    redis: Redis | None, *, maxsize: int = 65536, ttl_s: int = 24 * 3600
) -> PurgeableCache:
    """Redis when the lifespan has one, else an in-process LRU."""
    if redis is not None:
        return RedisPosteriorCache(redis, ttl_s=ttl_s)
    return LRUPosteriorCache(maxsize)
