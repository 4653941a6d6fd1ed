"""FHIR surface (R5, or R4 on request): the SDC ``$next-question`` operation, a session as a
Bundle, and the CapabilityStatement.

Thin: negotiate the FHIR version (``fhirVersion`` on the media type), check the media type,
parse JSON, call ``app.fhir``. Errors are problem+json like every other route, or an
OperationOutcome when the client's Accept prefers ``application/fhir+json``
(``FhirErrorsMiddleware``, so 401s, 413s and 500s are covered too). See docs/fhir.md.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.api.problems import BODY_LIMIT_RESPONSES, PROBLEM_MEDIA_TYPE, problem_doc
from app.api.security import SessionsWriter
from app.api.sessions import ERRORS, ReaderDep, WriterDep
from app.auth.keys import Scope as KeyScope
from app.errors import InvalidInputError, PursuitError, UnsupportedMediaTypeError
from app.fhir import FHIR_MEDIA_TYPE, FHIR_VERSION
from app.fhir.capability import capability_statement
from app.fhir.outcome import operation_outcome
from app.fhir.service import FhirInterviews
from app.fhir.versions import (
    DEFAULT_FHIR_VERSION,
    Negotiated,
    downgrade,
    negotiate,
    wants_fhir_errors,
)

router = APIRouter(tags=["fhir"])

ACCEPTED_MEDIA_TYPES = frozenset({FHIR_MEDIA_TYPE, "application/json"})
# A QuestionnaireResponse nests a few levels per item; hundreds means an attack or a bug.
MAX_JSON_DEPTH = 64
# The routes whose errors may be OperationOutcomes: the FHIR base and the session Bundle.
_FHIR_PATH = re.compile(r"^(/fhir(/.*)?|/v1/sessions/[^/]+/fhir/?)$")


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_MEDIA_TYPE


def _negotiated(request: Request) -> Negotiated:
    return negotiate(
        content_type=request.headers.get("content-type", ""),
        accept=request.headers.get("accept", ""),
    )


def _reply(resource: dict[str, Any], negotiated: Negotiated) -> FhirJSONResponse:
    return FhirJSONResponse(downgrade(resource, negotiated.reply), media_type=negotiated.media_type)


def _resource_example() -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "in-progress",
        "questionnaire": "#q",
        "contained": [
            {
                "resourceType": "Questionnaire",
                "id": "q",
                "status": "active",
                "item": [
                    {"linkId": "summary", "type": "text", "readOnly": True},
                    {
                        "linkId": "inquiry",
                        "type": "string",
                        "readOnly": True,
                        "initial": [{"valueString": "What is the most likely diagnosis?"}],
                    },
                    {
                        "linkId": "candidates",
                        "type": "string",
                        "readOnly": True,
                        "answerConstraint": "optionsOnly",
                        "answerOption": [
                            {"valueString": "Bacterial meningitis"},
                            {"valueString": "Migraine"},
                            {"valueString": "Influenza"},
                        ],
                    },
                ],
            }
        ],
        "item": [
            {
                "linkId": "summary",
                "answer": [{"valueString": "34-year-old woman, two days of fever, stiff neck."}],
            }
        ],
    }


# One named schema for every FHIR body (``app.api.openapi`` adds it to the components), so a
# generated client has one type for them, not one per media type.
FHIR_RESOURCE = "FhirResource"
FHIR_RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": FHIR_RESOURCE,
    "description": "A FHIR resource as JSON (resourceType and its elements).",
    "additionalProperties": True,
}
_FHIR_REF = {"$ref": f"#/components/schemas/{FHIR_RESOURCE}"}
_BODY = {
    "required": True,
    "description": "A QuestionnaireResponse with its contained Questionnaire, or a Parameters "
    "resource whose parameter `questionnaire-response` holds one (docs/fhir.md).",
    "content": {
        media: {"schema": _FHIR_REF, "example": _resource_example()}
        for media in sorted(ACCEPTED_MEDIA_TYPES)
    },
}
_FHIR_OK = {"content": {FHIR_MEDIA_TYPE: {"schema": _FHIR_REF}}}
_VERSIONS_DOC = (
    " R5 by default; R4 (4.0.1) with `fhirVersion=4.0` on `application/fhir+json` "
    "(Content-Type: the body's version, Accept: the reply's). Errors are problem+json, or an "
    "OperationOutcome when Accept prefers `application/fhir+json`."
)
_NEGOTIATION_ERRORS: dict[int | str, dict[str, Any]] = {
    406: problem_doc("Accept names only FHIR versions Pursuit does not speak"),
}


def _or_outcome(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Error responses that are an OperationOutcome when Accept prefers FHIR (documented)."""
    # No "model": FastAPI would file the Problem schema under the route's own media type
    # (application/fhir+json); each media type gets its own schema instead.
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    outcome = {"schema": {"type": "object", "description": "A FHIR OperationOutcome"}}
    return {
        status: {
            "description": entry["description"],
            "content": {PROBLEM_MEDIA_TYPE: problem, FHIR_MEDIA_TYPE: outcome},
        }
        for status, entry in responses.items()
    }


async def _fhir_json(request: Request) -> Any:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(
            f"send {FHIR_MEDIA_TYPE} (or application/json), not {media_type or 'no content type'}"
        )
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInputError("the body is not JSON") from None
    except RecursionError:  # thousands of nested arrays fit in the body limit
        raise _too_deep() from None
    # Reading a resource recurses (copies, FHIR validation): refuse what would overflow it.
    if _depth(body) > MAX_JSON_DEPTH:
        raise _too_deep()
    return body


def _too_deep() -> InvalidInputError:
    return InvalidInputError(f"the body's JSON nests deeper than {MAX_JSON_DEPTH} levels")


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in a parsed JSON value (walked without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


@router.post(
    "/fhir/Questionnaire/$next-question",
    response_class=FhirJSONResponse,
    operation_id="fhir_next_question",
    summary=f"SDC adaptive questionnaire: the next question (FHIR R5 {FHIR_VERSION} or R4)",
    description="Post the QuestionnaireResponse (or Parameters `questionnaire-response`); the "
    "same comes back with the next question appended, or with status `completed` when the "
    "interview stops. The differential is contained as Conditions (verificationStatus "
    "differential) and a RiskAssessment. Needs `sessions:write` to start an interview, and "
    "`sessions:read` as well to continue one (the reply carries its recorded answers)."
    + _VERSIONS_DOC,
    openapi_extra={"requestBody": _BODY},
    responses={
        200: _FHIR_OK,
        **_or_outcome(
            {
                **ERRORS,
                **BODY_LIMIT_RESPONSES,
                **_NEGOTIATION_ERRORS,
                409: problem_doc("The QR contradicts the session (a question answered otherwise)"),
                415: problem_doc(
                    "Not application/fhir+json or application/json, or a fhirVersion other "
                    "than 4.0 and 5.0"
                ),
            }
        ),
    },
)
async def next_question(
    request: Request, service: WriterDep, principal: SessionsWriter
) -> FhirJSONResponse:
    negotiated = _negotiated(request)
    body = await _fhir_json(request)
    may_read = KeyScope.SESSIONS_READ.value in principal.scopes
    interviews = FhirInterviews(service, may_read=may_read)
    return _reply(await interviews.next_question(body, version=negotiated.body), negotiated)


@router.get(
    "/v1/sessions/{session_id}/fhir",
    response_class=FhirJSONResponse,
    operation_id="fhir_session_bundle",
    summary="The session as a FHIR Bundle (QuestionnaireResponse, Conditions, RiskAssessment)",
    description="A `collection` Bundle." + _VERSIONS_DOC,
    responses={200: _FHIR_OK, **_or_outcome({**ERRORS, **_NEGOTIATION_ERRORS})},
    tags=["sessions"],
)
async def session_bundle(
    request: Request, session_id: uuid.UUID, service: ReaderDep
) -> FhirJSONResponse:
    negotiated = _negotiated(request)
    return _reply(await FhirInterviews(service).bundle(session_id), negotiated)


@router.get(
    "/fhir/metadata",
    response_class=FhirJSONResponse,
    summary="The CapabilityStatement of the FHIR surface (no API key needed)",
    description="What the FHIR base supports: the SDC `$next-question` operation on "
    "Questionnaire, JSON, a bearer API key." + _VERSIONS_DOC,
    responses={200: _FHIR_OK, **_or_outcome(_NEGOTIATION_ERRORS)},
)
async def metadata(request: Request) -> FhirJSONResponse:
    negotiated = _negotiated(request)
    base_url = str(request.base_url).rstrip("/") + "/fhir"
    statement = capability_statement(
        version=negotiated.reply, base_url=base_url, software_version=__version__
    )
    # Built per version (fhirVersion differs): nothing to downgrade.
    return FhirJSONResponse(statement, media_type=negotiated.media_type)


class FhirErrorsMiddleware:
    """On FHIR routes, rewrite a problem+json error as an OperationOutcome (same status and
    headers) when the request's Accept prefers ``application/fhir+json``; pure ASGI, so the
    errors of other middleware (413, 500) and of authentication are covered too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _FHIR_PATH.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not wants_fhir_errors(headers.get("accept", "")):
            await self.app(scope, receive, send)
            return
        try:
            negotiated = negotiate(
                content_type=headers.get("content-type", ""), accept=headers.get("accept", "")
            )
        except PursuitError:  # the very error being reported: say it in the default version
            negotiated = Negotiated(DEFAULT_FHIR_VERSION, DEFAULT_FHIR_VERSION, named=False)
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if content_type.startswith(PROBLEM_MEDIA_TYPE):
                    start = message  # held until the body is complete
                    return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            outcome = downgrade(operation_outcome(json.loads(b"".join(chunks))), negotiated.reply)
            body = json.dumps(outcome, separators=(",", ":")).encode()
            kept = [
                (k, v)
                for k, v in start.get("headers", [])
                if k.lower() not in (b"content-type", b"content-length")
            ]
            kept += [
                (b"content-type", negotiated.media_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode("latin-1")),
            ]
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, rewrite)
