"""RFC 9457 problem details: the one error shape of every Pursuit response."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.context import request_id_var
from app.db.engine import DATABASE_ERRORS, database_unavailable
from app.errors import (
    VALIDATION_FAILED,
    DatabaseUnavailableError,
    NotFoundError,
    ProblemType,
    PursuitError,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger("pursuit.http")


class Problem(BaseModel):
    """The body of every error response (RFC 9457), plus the request id."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[NotFoundError.problem_type().uri])
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["No session with id 3f2a..."])
    request_id: str | None = Field(default=None, examples=["9b1c0f6e2d4a4c1e8f3b5a7d9e0c1b2a"])


class ValidationIssue(BaseModel):
    """Where and why a request failed validation (never the offending input)."""

    loc: list[str | int] = Field(examples=[["body", "candidates"]])
    msg: str = Field(examples=["List should have at least 2 items after validation, not 1"])
    type: str = Field(examples=["too_short"])


class ValidationProblem(Problem):
    """A 422: the problem, and every field that failed."""

    errors: list[ValidationIssue] = Field(default_factory=list)


def problem_response(
    problem: ProblemType,
    *,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build a problem+json response carrying the current request id."""
    request_id = request_id_var.get()
    body = Problem(
        type=problem.uri,
        title=problem.title,
        status=problem.status,
        detail=detail,
        request_id=request_id,
        **extensions,
    )
    all_headers = dict(headers or {})
    if request_id:
        all_headers["X-Request-Id"] = request_id
    return JSONResponse(
        body.model_dump(exclude_none=False),
        status_code=problem.status,
        headers=all_headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    problem = ProblemType.of_status(exc.status_code)
    phrase = problem.title
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if detail is None:
        detail = {
            404: "No resource at this path.",
            405: "This method is not allowed on this path.",
        }.get(exc.status_code, phrase)
    return problem_response(problem, detail=detail, headers=dict(exc.headers or {}))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Echo where and why, never the offending input: it may be patient text.
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    return problem_response(
        VALIDATION_FAILED,
        detail=f"{where}: {first['msg']}" if where else str(first["msg"]),
        errors=errors,
    )


def _problem_of(exc: PursuitError) -> JSONResponse:
    return problem_response(exc.problem_type(), detail=exc.detail, headers=exc.headers)


async def _pursuit_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PursuitError)
    return _problem_of(exc)


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    # Lost or refused connections (a restart, a failover), or no pooled connection free for
    # 30 s: the request did nothing, retry. The pool pings connections before use, so the
    # service recovers without a restart. Any other database error is a bug: the middleware's
    # 500.
    if not database_unavailable(exc):
        raise exc
    log.warning("database.unavailable", error=type(exc).__name__)
    return _problem_of(DatabaseUnavailableError())


def install_problem_handlers(app: FastAPI) -> None:
    """Map every expected failure to problem+json (500s are handled by the request middleware)."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(PursuitError, _pursuit_error)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, _database_error)


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry: a problem+json error (``app.api.openapi`` puts the
    ``Problem`` schema in the document's components and types every error response)."""
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: problem_doc("Not found"),
    422: problem_doc("Invalid input"),
    500: problem_doc("Internal error"),
}
# BodyLimitMiddleware refuses a body over the limit on every method but GET, HEAD and OPTIONS.
BODY_LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: problem_doc("The request body is over the limit (PURSUIT_MAX_BODY_BYTES)"),
}
# FastAPI answers 400 when a JSON body is not text it can decode (422 when it is not JSON).
JSON_BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **BODY_LIMIT_RESPONSES,
    400: problem_doc("The request body is not UTF-8 text"),
}
