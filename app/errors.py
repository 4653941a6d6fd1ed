"""Domain errors: each carries the HTTP status and problem type the API maps it to.

Domain packages raise these (never ``HTTPException``); ``app.api.problems`` renders them as
RFC 9457 problem+json.
"""

from __future__ import annotations


class PursuitError(Exception):
    """Base of every expected failure."""

    status: int = 500
    type_slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.headers = dict(headers or {})
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(retry_after_s)


class NotFoundError(PursuitError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class ConflictError(PursuitError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class InvalidInputError(PursuitError):
    status = 422
    type_slug = "invalid-input"
    title = "Invalid input"


class UpstreamUnavailableError(PursuitError):
    """A dependency (LLM server, database) cannot be reached or timed out."""

    status = 503
    type_slug = "upstream-unavailable"
    title = "Upstream unavailable"


class UpstreamBadOutputError(PursuitError):
    """A dependency answered with something we cannot use."""

    status = 502
    type_slug = "upstream-bad-output"
    title = "Upstream returned malformed output"


class PreconditionFailedError(PursuitError):
    """An ``If-Match`` precondition names a version the resource is no longer at."""

    status = 412
    type_slug = "precondition-failed"
    title = "Precondition failed"


class UnauthorizedError(PursuitError):
    status = 401
    type_slug = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="pursuit"'})


class ForbiddenError(PursuitError):
    status = 403
    type_slug = "forbidden"
    title = "Forbidden"


class RateLimitedError(PursuitError):
    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"


class TurnAbandonedError(PursuitError):
    """A background turn stopped with its process: nothing of it was applied."""

    status = 503
    type_slug = "turn-abandoned"
    title = "Turn abandoned"
