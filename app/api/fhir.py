"""FHIR R5 surface: the SDC adaptive ``$next-question`` operation and a session as a Bundle.

Thin: check the media type, parse JSON, call ``app.fhir``; errors stay problem+json like
every other route (see docs/fhir.md).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.problems import BODY_LIMIT_RESPONSES, problem_doc
from app.api.security import SessionsWriter
from app.api.sessions import ERRORS, ReaderDep, WriterDep
from app.auth.keys import Scope
from app.errors import InvalidInputError, PursuitError
from app.fhir import FHIR_MEDIA_TYPE, FHIR_VERSION
from app.fhir.service import FhirInterviews

router = APIRouter(tags=["fhir"])

ACCEPTED_MEDIA_TYPES = frozenset({FHIR_MEDIA_TYPE, "application/json"})
# A QuestionnaireResponse nests a few levels per item; hundreds means an attack or a bug.
MAX_JSON_DEPTH = 64


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_MEDIA_TYPE


class UnsupportedMediaTypeError(PursuitError):
    status = 415
    type_slug = "unsupported-media-type"
    title = "Unsupported media type"


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
    summary=f"SDC adaptive questionnaire: the next question (FHIR R5, {FHIR_VERSION})",
    description="Post the QuestionnaireResponse (or Parameters `questionnaire-response`); the "
    "same comes back with the next question appended, or with status `completed` when the "
    "interview stops. The differential is contained as Conditions (verificationStatus "
    "differential) and a RiskAssessment. Needs `sessions:write` to start an interview, and "
    "`sessions:read` as well to continue one (the reply carries its recorded answers).",
    openapi_extra={"requestBody": _BODY},
    responses={
        200: _FHIR_OK,
        **ERRORS,
        **BODY_LIMIT_RESPONSES,
        409: problem_doc("The QR contradicts the session (a question answered otherwise)"),
        415: problem_doc("Not application/fhir+json or application/json"),
    },
)
async def next_question(
    request: Request, service: WriterDep, principal: SessionsWriter
) -> FhirJSONResponse:
    body = await _fhir_json(request)
    may_read = Scope.SESSIONS_READ.value in principal.scopes
    return FhirJSONResponse(await FhirInterviews(service, may_read=may_read).next_question(body))


@router.get(
    "/v1/sessions/{session_id}/fhir",
    response_class=FhirJSONResponse,
    operation_id="fhir_session_bundle",
    summary="The session as a FHIR R5 Bundle (QuestionnaireResponse, Conditions, RiskAssessment)",
    responses={200: _FHIR_OK, **ERRORS},
    tags=["sessions"],
)
async def session_bundle(session_id: uuid.UUID, service: ReaderDep) -> FhirJSONResponse:
    return FhirJSONResponse(await FhirInterviews(service).bundle(session_id))
