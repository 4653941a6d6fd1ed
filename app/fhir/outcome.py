"""A problem+json error as a FHIR OperationOutcome (for clients that Accept only FHIR).

The HTTP status stays; the issue's ``code`` is the FHIR issue type closest to it, its
``details`` the problem's type and title, ``diagnostics`` its detail (which, like every
Pursuit error, never echoes the input); the request id rides in an extension.
"""

from __future__ import annotations

from typing import Any

from app.errors import PROBLEM_TYPE_SYSTEM, PursuitError
from app.fhir.vocab import REQUEST_ID_EXTENSION

Json = dict[str, Any]

# HTTP status -> FHIR issue type (http://hl7.org/fhir/issue-type); unlisted: "exception".
_ISSUE_TYPES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    502: "transient",
    503: "transient",
    504: "timeout",
}


def operation_outcome(problem: Json) -> Json:
    """The OperationOutcome saying what ``problem`` (an RFC 9457 body) says."""
    status = int(problem.get("status") or 500)
    problem_type = str(problem.get("type") or "")
    code = problem_type.rstrip("/").rsplit("/", 1)[-1] or PursuitError.type_slug
    issue: Json = {
        "severity": "error",
        "code": _ISSUE_TYPES.get(status, "exception"),
        "details": {
            "coding": [{"system": PROBLEM_TYPE_SYSTEM, "code": code}],
            "text": str(problem.get("title") or "Error"),
        },
    }
    if problem.get("detail"):
        issue["diagnostics"] = str(problem["detail"])
    outcome: Json = {"resourceType": "OperationOutcome", "issue": [issue]}
    if problem.get("request_id"):
        outcome["extension"] = [
            {"url": REQUEST_ID_EXTENSION, "valueString": str(problem["request_id"])}
        ]
    return outcome
