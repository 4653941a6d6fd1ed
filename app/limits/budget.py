"""A per-tenant budget of concurrent LLM work, so one tenant cannot starve the others.

Counted per API process: with N replicas a tenant can run N x ``per_tenant`` turns at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.errors import RateLimitedError


class TenantBudget:
    def __init__(self, *, per_tenant: int, wait_s: float) -> None:
        self._per_tenant = per_tenant
        self._wait_s = wait_s
        self._slots: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of the tenant's slots, waiting up to ``wait_s``; else 429."""
        semaphore = self._slots.setdefault(tenant, asyncio.Semaphore(self._per_tenant))
        try:
            await asyncio.wait_for(semaphore.acquire(), timeout=self._wait_s)
        except TimeoutError:
            raise RateLimitedError(
                f"tenant {tenant!r} already runs {self._per_tenant} interview turns at once",
                retry_after_s=2,
            ) from None
        try:
            yield
        finally:
            semaphore.release()
