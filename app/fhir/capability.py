"""The server's CapabilityStatement (``GET /fhir/metadata``): what the FHIR surface really does.

One operation on one resource type (SDC ``$next-question`` on Questionnaire, type level),
JSON only, a bearer API key; no RESTful interactions (read, search, ...) on any resource,
so none is declared. The session Bundle (``GET /v1/sessions/{id}/fhir``) lives outside the
FHIR base and is described in the documentation only.
"""

from __future__ import annotations

from typing import Any

from app.fhir.versions import FhirVersion
from app.fhir.vocab import FHIR_MEDIA_TYPE, SDC_IMPLEMENTATION_GUIDE, SDC_NEXT_QUESTION

Json = dict[str, Any]

# The date this statement last changed (a CapabilityStatement's date is its own).
STATEMENT_DATE = "2026-12-04"

SECURITY = (
    "Every operation needs an API key sent as 'Authorization: Bearer <key>' (scopes: "
    "sessions:write to start an interview, sessions:write and sessions:read to continue one). "
    "No SMART on FHIR or OAuth: keys are issued by the operator (pursuit keys create). "
    "A session of another tenant is not found (404). This statement needs no key."
)
NEXT_QUESTION_DOC = (
    "SDC adaptive questionnaire: post a QuestionnaireResponse that contains its Questionnaire "
    "(or Parameters 'questionnaire-response'); the same comes back with the next question "
    "appended and the differential contained (Conditions, RiskAssessment), or with status "
    "'completed' when the interview stops. Conventions: docs/fhir.md."
)
ERRORS_DOC = (
    "Errors are application/problem+json (RFC 9457) unless the request's Accept prefers "
    "application/fhir+json, then an OperationOutcome with the same HTTP status. Choose R4 "
    "with 'fhirVersion=4.0' on application/fhir+json (Content-Type for the body, Accept for "
    "the reply); R5 is the default. The whole session is also a collection Bundle at "
    "GET /v1/sessions/{id}/fhir (outside this FHIR base)."
)


def capability_statement(*, version: FhirVersion, base_url: str, software_version: str) -> Json:
    """The CapabilityStatement for ``version``, its implementation at ``base_url``."""
    return {
        "resourceType": "CapabilityStatement",
        "id": "pursuit",
        "name": "PursuitCapabilityStatement",
        "title": "Pursuit: guided interviews by Conformal Information Pursuit",
        "status": "active",
        "experimental": False,
        "date": STATEMENT_DATE,
        "publisher": "Pursuit",
        "description": "Decision support, not a diagnosis: the next interview question and a "
        "conformal differential for an SDC adaptive questionnaire.",
        "kind": "instance",
        "software": {"name": "Pursuit", "version": software_version},
        "implementation": {"description": "Pursuit FHIR surface", "url": base_url},
        "fhirVersion": version.full,
        "format": [FHIR_MEDIA_TYPE, "json"],
        "implementationGuide": [SDC_IMPLEMENTATION_GUIDE],
        "rest": [
            {
                "mode": "server",
                "documentation": ERRORS_DOC,
                "security": {"cors": False, "description": SECURITY},
                "resource": [
                    {
                        "type": "Questionnaire",
                        "documentation": "Only the type-level $next-question operation; "
                        "Questionnaires are not stored (each QuestionnaireResponse contains "
                        "its own).",
                        "operation": [
                            {
                                "name": "next-question",
                                "definition": SDC_NEXT_QUESTION,
                                "documentation": NEXT_QUESTION_DOC,
                            }
                        ],
                    }
                ],
            }
        ],
    }
