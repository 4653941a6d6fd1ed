"""Every problem type of the API, and the domain errors that carry them.

A problem type is a slug (the last part of its ``type`` URI), an HTTP status and a title.
Domain packages raise a ``PursuitError`` subclass, which declares its type (never
``HTTPException``). The few problems no domain error stands for (a payload that fails
validation, a body over the limit, an unexpected exception, a service not ready, a bare HTTP
status) are the ``ProblemType`` constants below. Declare a new type here and nowhere else:
``app.api.problems`` renders them as RFC 9457 problem+json, ``app.fhir.outcome`` as the
codes of an OperationOutcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

PROBLEM_TYPE_BASE = "https://pursuit.dev/problems/"
# The code system of a problem type's slug (an OperationOutcome issue's ``details``).
PROBLEM_TYPE_SYSTEM = PROBLEM_TYPE_BASE.rstrip("/")


@dataclass(frozen=True)
class ProblemType:
    """One kind of problem: its slug, HTTP status and title."""

    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        """The problem's ``type``."""
        return PROBLEM_TYPE_BASE + self.slug

    @classmethod
    def of_status(cls, status: int) -> ProblemType:
        """A bare HTTP status (a framework's 404, 405, ...): slug and title from its phrase."""
        phrase = HTTPStatus(status).phrase
        return cls(phrase.lower().replace(" ", "-").replace("'", ""), status, phrase)


# Problems that no domain error stands for (the HTTP layer answers them itself).
VALIDATION_FAILED = ProblemType("validation-error", 422, "Request validation failed")
PAYLOAD_TOO_LARGE = ProblemType("payload-too-large", 413, "Payload too large")
# An unexpected exception (the request middleware's 500). Same slug as ``PursuitError``'s,
# another title: both have been in replies for long, so each keeps its own.
UNEXPECTED_ERROR = ProblemType("internal-error", 500, "Internal Server Error")
NOT_READY = ProblemType("not-ready", 503, "Service not ready")


def no_llm_server(*, needed_for: str | None = None) -> str:
    """The message of every failure for want of an LLM server; ``needed_for`` says what asked
    for one, where the reader cannot tell."""
    where = f" for {needed_for}" if needed_for else ""
    return (
        f"no LLM server is configured{where} (set PURSUIT_LLM_BASE_URL and PURSUIT_LLM_MODEL, "
        "or start the local one with `pursuit llm up`)"
    )


NO_LLM_SERVER = no_llm_server()


class PursuitError(Exception):
    """Base of every expected failure; each subclass declares its problem type."""

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

    @classmethod
    def problem_type(cls) -> ProblemType:
        return ProblemType(cls.type_slug, cls.status, cls.title)


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


class DatabaseUnavailableError(PursuitError):
    """The database could not be reached (a lost or refused connection, a full pool): the
    request did nothing."""

    status = 503
    type_slug = "database-unavailable"
    title = "Database unavailable"

    def __init__(
        self,
        detail: str = "The database could not be reached; nothing was changed. Retry shortly.",
    ) -> None:
        super().__init__(detail, retry_after_s=2)


class UnsupportedMediaTypeError(PursuitError):
    status = 415
    type_slug = "unsupported-media-type"
    title = "Unsupported media type"


class NotAcceptableError(PursuitError):
    status = 406
    type_slug = "not-acceptable"
    title = "Not acceptable"
