"""Where a GET's CPU goes: the service in-process with parts of the read path removed.

    .venv/bin/python -m benchmarks.load.get_breakdown [--requests 3000] [--rounds 3]

A fresh PostgreSQL database (dropped at the end), 5 sessions of 3 answered turns (as
``get_bench`` makes them), then per variant and round ``--requests`` GETs through httpx's ASGI
transport (no sockets, no uvicorn): as served; without the read's one statement (the version
read with its audit INSERT; each session's answer remembered); without the rate limiter's Redis
round trip. Prints the process CPU per GET (client and API together: compare the variants, not
the absolute figure) for every round and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from app.audit.auditor import Auditor
from app.limits.ratelimit import RateDecision
from app.main import create_app
from app.resources import Resources
from app.settings import Settings
from benchmarks.load.get_bench import scratch_database

Patch = Callable[[Resources], Callable[[], None]]


def _as_served(_: Resources) -> Callable[[], None]:
    return lambda: None


def _without_read_statement(_: Resources) -> Callable[[], None]:
    """What each session's version-and-audit statement returned the first time, from memory
    (the GETs change nothing, so that is what it would return): a cached GET without its one
    statement, the version read and the read's audit row."""
    original = Auditor.lookup
    known: dict[Any, Any] = {}

    async def remembered(self: Auditor, db: Any, lookup: Any, **kwargs: Any) -> Any:
        key = kwargs["resource_id"]
        if key not in known:
            known[key] = await original(self, db, lookup, **kwargs)
        return known[key]

    Auditor.lookup = remembered  # type: ignore[method-assign]

    def undo() -> None:
        Auditor.lookup = original  # type: ignore[method-assign]

    return undo


def _without_rate_limit(resources: Resources) -> Callable[[], None]:
    async def allow(_: str) -> RateDecision:
        return RateDecision(allowed=True, limit=1, remaining=1, reset_s=60)

    resources.rate_limiter.hit = allow  # type: ignore[method-assign,assignment]
    return lambda: None


VARIANTS: dict[str, Patch] = {
    "as served": _as_served,
    "no read statement": _without_read_statement,
    "no rate limit": _without_rate_limit,
}


async def _cpu_ms_per_get(
    settings: Settings, key: str, ids: list[str], patch: Patch, n: int
) -> float:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        undo = patch(app.state.resources)
        try:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as client:
                for i in range(min(300, n)):  # warm the caches and the pool
                    (await client.get(f"/v1/sessions/{ids[i % len(ids)]}")).raise_for_status()
                started = time.process_time()
                for i in range(n):
                    (await client.get(f"/v1/sessions/{ids[i % len(ids)]}")).raise_for_status()
                return (time.process_time() - started) / n * 1000
        finally:
            undo()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with scratch_database("getbreakdown", sessions=5) as (settings, key, ids):
        settings = settings.model_copy(
            update={"rate_limit_per_minute": 10_000_000, "log_json": True}
        )
        logging.disable(logging.CRITICAL)  # the request log would be most of the CPU
        results: dict[str, list[float]] = {label: [] for label in VARIANTS}
        for _ in range(args.rounds):
            for label, patch in VARIANTS.items():
                results[label].append(
                    asyncio.run(_cpu_ms_per_get(settings, key, ids, patch, args.requests))
                )
    for label, values in results.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label:14s} CPU ms per GET: {rounds} (median {statistics.median(values):.2f})")


if __name__ == "__main__":
    main()
