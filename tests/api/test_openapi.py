"""The OpenAPI document, as a client generator reads it (app.api.openapi)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.engine import Policy, StopReason
from app.engine.banks import load_query_banks
from app.main import create_app
from app.settings import Settings

OPERATIONS = {
    ("get", "/healthz"): "health_live",
    ("get", "/readyz"): "health_ready",
    ("get", "/metrics"): "health_metrics",
    ("post", "/v1/sessions"): "sessions_create",
    ("get", "/v1/sessions"): "sessions_list",
    ("get", "/fhir/metadata"): "fhir_metadata",
    ("get", "/v1/turn-jobs/{job_id}"): "sessions_turn_job",
    ("get", "/v1/turn-jobs/{job_id}/events"): "sessions_turn_job_events",
    ("get", "/v1/sessions/{session_id}"): "sessions_get",
    ("post", "/v1/sessions/{session_id}/answers"): "sessions_answer",
    ("post", "/v1/sessions/{session_id}/finalize"): "sessions_finalize",
    ("delete", "/v1/sessions/{session_id}"): "sessions_delete",
    ("get", "/v1/audit"): "audit_list",
    ("post", "/v1/calibrations"): "calibrations_create",
    ("get", "/v1/calibrations"): "calibrations_list",
    ("get", "/v1/calibrations/{calibration_id}"): "calibrations_get",
    ("post", "/v1/calibrations/{calibration_id}/activate"): "calibrations_activate",
    ("post", "/v1/calibrations/{calibration_id}/resume"): "calibrations_resume",
    ("get", "/v1/calibrations/{calibration_id}/plot.png"): "calibrations_plot",
    ("post", "/fhir/Questionnaire/$next-question"): "fhir_next_question",
    ("get", "/v1/sessions/{session_id}/fhir"): "fhir_session_bundle",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(data_dir=Path("unused"))).openapi()


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }


def test_every_operation_id_is_tag_underscore_verb(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert {key: op["operationId"] for key, op in operations.items()} == OPERATIONS
    for operation in operations.values():
        assert re.fullmatch(rf"{operation['tags'][0]}_[a-z_]+", operation["operationId"])


def test_every_error_is_a_typed_problem_under_problem_json(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "ValidationIssue"} <= set(schemas)
    assert {"detail", "request_id", "status", "title", "type"} <= set(
        schemas["Problem"]["properties"]
    )
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 shape is not what we send
    for (method, path), operation in _operations(document).items():
        for status, response in operation["responses"].items():
            if status[0] not in "45":
                continue
            where = f"{method.upper()} {path} {status}"
            # FHIR routes also declare the OperationOutcome a FHIR client may ask for.
            fhir = path.startswith("/fhir/") or path.endswith("/fhir")
            extra = {"application/fhir+json"} if fhir else set()
            assert set(response["content"]) - extra == {"application/problem+json"}, where
            model = "ValidationProblem" if status == "422" else "Problem"
            assert response["content"]["application/problem+json"]["schema"] == {
                "$ref": f"#/components/schemas/{model}"
            }, where


def test_the_document_names_its_servers(document: dict[str, Any]) -> None:
    assert document["servers"][0]["url"] == "/"


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    bodies = 0
    for (method, path), operation in _operations(document).items():
        if "requestBody" not in operation:
            continue
        bodies += 1
        for media_type, content in operation["requestBody"]["content"].items():
            assert content.get("examples") or content.get("example"), (method, path, media_type)
    assert bodies == 4  # open a session, answer, queue a calibration, FHIR $next-question


def test_banks_policies_and_stop_reasons_are_enums(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    banks = sorted(load_query_banks())
    for model in ("SessionCreate", "CalibrationCreate"):
        options = schemas[model]["properties"]["question_bank_name"]["anyOf"]
        assert {"type": "null"} in options
        assert [o["enum"] for o in options if "enum" in o] == [banks], model
    assert schemas["Policy"]["enum"] == [p.value for p in Policy]
    assert schemas["StopReason"]["enum"] == [s.value for s in StopReason]
    for model in ("SessionOut", "SessionSummary"):
        properties = schemas[model]["properties"]
        assert properties["policy"] == {"$ref": "#/components/schemas/Policy"}
        reasons = properties["stop_reason"]["anyOf"]
        assert {"$ref": "#/components/schemas/StopReason"} in reasons
        assert {"const": "finalized", "type": "string"} in reasons
        assert properties["status"] == {"$ref": "#/components/schemas/SessionStatus"}
    assert schemas["CalibrationOut"]["properties"]["policy"] == {
        "$ref": "#/components/schemas/Policy"
    }
