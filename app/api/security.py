"""Bearer API keys: who is calling, for which tenant, with which scopes; and their rate limit."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import resources_of
from app.auth import keys
from app.auth.keys import Scope
from app.auth.principal import Principal
from app.auth.service import verify_key
from app.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from app.resources import Resources


async def _verify(resources: Resources, secret: str) -> Principal:
    """The key's principal, from the per-process cache while its TTL lasts."""
    cached = resources.principal_cache.get(secret)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    principal = await verify_key(resources.sessionmaker, secret)
    ttl = resources.settings.auth_cache_ttl_s
    if ttl > 0:
        if len(resources.principal_cache) > 10_000:
            resources.principal_cache.clear()
        resources.principal_cache[secret] = (principal, time.monotonic() + ttl)
    return principal


# Declares the scheme in the OpenAPI document (generated clients then send the key); the
# refusal stays ours, a 401 problem, hence auto_error=False.
_BEARER = HTTPBearer(
    scheme_name="apiKey",
    description="An API key from `pursuit keys create`, sent as `Authorization: Bearer KEY`.",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


async def authenticate(request: Request, response: Response, credentials: Credentials) -> Principal:
    """The caller's principal from ``Authorization: Bearer KEY``; then its rate limit."""
    return await _authenticate(request, response, resources_of(request), credentials)


async def _authenticate(
    request: Request,
    response: Response,
    resources: Resources,
    credentials: HTTPAuthorizationCredentials | None,
) -> Principal:
    """The caller's principal from ``Authorization: Bearer KEY``; then its rate limit.

    A client address with too many failed authentications this minute is refused (429)
    before its key is looked up. Behind a proxy that is the proxy's address unless uvicorn
    is told to trust its forwarded headers (``--forwarded-allow-ips``).
    """
    address = request.client.host if request.client is not None else "unknown"
    refusal = resources.auth_failures.refusal(address)
    if refusal is not None:
        await _audit_refusal(request, resources, "rate_limited")
        raise RateLimitedError(
            "too many failed authentications from this address; try again later",
            headers=refusal.headers(),
        )
    secret = credentials.credentials.strip() if credentials is not None else ""
    try:
        if not secret:
            raise UnauthorizedError("send an API key as 'Authorization: Bearer KEY'")
        principal = await _verify(resources, secret)
    except UnauthorizedError:
        # A well-formed key that failed cost a lookup: a guess, counted. A malformed one
        # never reaches the database.
        if keys.parse_lookup(secret) is not None:
            resources.auth_failures.failed(address)
        await _audit_refusal(request, resources, "unauthorized")
        raise
    decision = await resources.rate_limiter.hit(principal.key_id)
    if not decision.allowed:
        await _audit_refusal(request, resources, "rate_limited", principal)
        raise RateLimitedError(
            f"rate limit of {decision.limit} requests per minute reached",
            headers=decision.headers(),
        )
    response.headers.update(decision.headers())
    return principal


async def _audit_refusal(
    request: Request, resources: Resources, outcome: str, principal: Principal | None = None
) -> None:
    """The refusal in the audit trail, once per caller, outcome and minute: the key's tenant's
    trail when the key is known, else an event without a tenant keyed by client address."""
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    if principal is None:
        address = request.client.host if request.client is not None else "unknown"
        await resources.refusals.record(
            resources.sessionmaker, outcome=outcome, route=route, caller=f"address:{address}"
        )
        return
    await resources.refusals.record(
        resources.sessionmaker,
        outcome=outcome,
        route=route,
        caller=f"key:{principal.key_id}",
        tenant=principal.tenant,
        actor_key_id=principal.key_id,
    )


async def authenticate_request(
    request: Request, response: Response, resources: Resources
) -> Principal:
    """``authenticate`` for a route whose key is optional by setting (``/metrics``): the
    route stays public in the OpenAPI document and checks the key itself."""
    return await _authenticate(request, response, resources, await _BEARER(request))


def require(scope: Scope, *alternatives: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates and insists on ``scope`` (or one of ``alternatives``).

    One dependency that calls ``_authenticate`` rather than a chain of them: FastAPI's
    resolution costs about 0.05 ms of CPU per dependency per request, which is measurable
    on the GET path (docs/load.md, "GET of a session").
    """
    accepted = (scope, *alternatives)

    async def dependency(
        request: Request, response: Response, credentials: Credentials
    ) -> Principal:
        resources = resources_of(request)
        principal = await _authenticate(request, response, resources, credentials)
        if not any(s.value in principal.scopes for s in accepted):
            await _audit_refusal(request, resources, "forbidden", principal)
            raise ForbiddenError(
                f"this API key lacks the scope {' or '.join(repr(s.value) for s in accepted)}"
            )
        return principal

    return dependency


SessionsWriter = Annotated[Principal, Depends(require(Scope.SESSIONS_WRITE))]
SessionsReader = Annotated[Principal, Depends(require(Scope.SESSIONS_READ))]
# A tenant's admin manages its own runs; the operator (platform:admin) the platform's.
CalibrationsAdmin = Annotated[
    Principal, Depends(require(Scope.CALIBRATIONS_ADMIN, Scope.PLATFORM_ADMIN))
]
AuditReader = Annotated[Principal, Depends(require(Scope.AUDIT_READ))]
