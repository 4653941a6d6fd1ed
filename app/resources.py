"""Long-lived resources, created by the lifespan and handed to requests through ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.audit.refusals import RefusalAudit
from app.auth.principal import Principal
from app.db.engine import create_engine, create_sessionmaker
from app.engine.types import PosteriorProvider
from app.limits.budget import TenantBudget
from app.limits.ratelimit import (
    FailureThrottle,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from app.llm import LLMGateway, make_posterior_cache
from app.llm.cache import PurgeableCache
from app.llm.client import llm_http_client
from app.observability.metrics import MeteredCache, MeteredProvider, Metrics
from app.sessions.cache import DetailCache
from app.sessions.jobs import TurnJobs
from app.settings import Settings
from app.worlds.kb.hpo import load_hpo
from app.worlds.kb.provider import HpoProvider


def _hpo_provider() -> PosteriorProvider:
    """The knowledge-base provider; the ontology loads here, once per process (~1.5 s)."""
    return HpoProvider(load_hpo())


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis | None
    llm_http: httpx.AsyncClient | None
    rate_limiter: RateLimiter
    metrics: Metrics
    budget: TenantBudget
    session_details: DetailCache  # per process, for GETs of unchanged sessions
    # Failed authentications per client address (refused before the key lookup).
    auth_failures: FailureThrottle
    # Turns running in the background in this process (their state is in the database).
    turn_jobs: TurnJobs
    provider: PosteriorProvider | None = None
    # The serving gateway's posterior cache (None without an LLM): sessions purge theirs.
    posterior_cache: PurgeableCache | None = None
    # Refused requests already audited this minute (app.audit.refusals).
    refusals: RefusalAudit = field(default_factory=RefusalAudit)
    # Whether a calibration worker runs inside this process (app.worker.embedded).
    runs_worker: bool = False
    # Verified API keys: secret -> (principal, monotonic expiry). See app.api.security.
    principal_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        metrics: Metrics,
        provider: PosteriorProvider | None = None,
    ) -> Resources:
        """Create clients; nothing connects until first use.

        ``provider`` replaces the LLM gateway (tests, tabular models); either is metered.
        """
        engine = create_engine(
            settings.effective_database_url, pool_size=settings.database_pool_size
        )
        redis = (
            Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=2,
                socket_timeout=2,
                health_check_interval=30,
            )
            if settings.redis_url
            else None
        )
        llm_http = (
            llm_http_client(settings, settings.llm_base_url) if settings.llm_base_url else None
        )
        rate_limiter: RateLimiter = (
            RedisRateLimiter(redis, per_minute=settings.rate_limit_per_minute)
            if redis is not None
            else MemoryRateLimiter(per_minute=settings.rate_limit_per_minute)
        )
        posterior_cache: PurgeableCache | None = None
        if provider is None and settings.provider == "hpo":
            provider = _hpo_provider()
        if provider is None and llm_http is not None and settings.llm_model:
            posterior_cache = MeteredCache(
                make_posterior_cache(
                    redis, maxsize=settings.llm_cache_size, ttl_s=settings.llm_cache_ttl_s
                ),
                metrics,
            )
            provider = LLMGateway(
                http=llm_http,
                model=settings.llm_model,
                settings=settings,
                cache=posterior_cache,
                on_drop=lambda kind, reason: metrics.llm_dropped.labels(kind, reason.value).inc(),
            )
        sessionmaker = create_sessionmaker(engine)
        return cls(
            settings=settings,
            turn_jobs=TurnJobs(sessionmaker),
            provider=MeteredProvider(provider, metrics) if provider is not None else None,
            posterior_cache=posterior_cache,
            auth_failures=FailureThrottle(per_minute=settings.auth_failures_per_minute),
            metrics=metrics,
            rate_limiter=rate_limiter,
            budget=TenantBudget(
                per_tenant=settings.tenant_llm_concurrency, wait_s=settings.tenant_llm_wait_s
            ),
            engine=engine,
            sessionmaker=sessionmaker,
            redis=redis,
            llm_http=llm_http,
            session_details=DetailCache(
                maxsize=settings.session_cache_size, ttl_s=settings.session_cache_ttl_s
            ),
        )

    async def close(self) -> None:
        await self.turn_jobs.close()
        if self.llm_http is not None:
            await self.llm_http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
