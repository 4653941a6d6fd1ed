"""FHIR R4 next to R5, the CapabilityStatement, and OperationOutcome errors.

R4 output is validated with fhir.resources' R4B models (fhir.resources 8 ships no R4; the
resources Pursuit writes are structurally R4's in R4B), R5 with its default models.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fhirclient.models.fhirabstractbase import FHIRValidationError

from app.api.fhir import FhirErrorsMiddleware
from app.errors import NotAcceptableError, UnsupportedMediaTypeError
from app.fhir.versions import FhirVersion, negotiate, wants_fhir_errors
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _provider
from tests.conftest import open_client
from tests.engine.scripted import ScriptedProvider
from tests.fhir.fhir_helpers import (
    Json,
    answer,
    answer_value,
    contained_questionnaire,
    item,
    questionnaire_response,
    validate,
)

URL = "/fhir/Questionnaire/$next-question"
R4 = "application/fhir+json; fhirVersion=4.0"
R5 = "application/fhir+json; fhirVersion=5.0"
RANDOM_2: dict[str, Any] = {
    "policy": {"valueString": "random"},
    "max-questions": {"valueInteger": 2},
}


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings, provider=_provider())


def test_negotiation_rules() -> None:
    plain = negotiate(content_type="application/fhir+json", accept="*/*")
    assert (plain.body, plain.reply, plain.media_type) == (
        FhirVersion.R5,
        FhirVersion.R5,
        "application/fhir+json",
    )
    r4_body = negotiate(content_type=R4, accept="")
    assert (r4_body.body, r4_body.reply, r4_body.media_type) == (FhirVersion.R4, FhirVersion.R4, R4)
    # Accept decides the reply, Content-Type the body; "4.0.1" is read as 4.0.
    mixed = negotiate(content_type=R5, accept="application/fhir+json; fhirVersion=4.0.1")
    assert (mixed.body, mixed.reply) == (FhirVersion.R5, FhirVersion.R4)
    preferred = negotiate(
        content_type="application/json",
        accept=f"{R5}; q=0.5, application/fhir+json; fhirVersion=3.0; q=0.9, {R4}; q=0.8",
    )
    assert preferred.reply is FhirVersion.R4  # 3.0 is not spoken; the next preferred is
    with pytest.raises(UnsupportedMediaTypeError):
        negotiate(content_type="application/fhir+json; fhirVersion=3.0", accept="")
    with pytest.raises(NotAcceptableError):
        negotiate(content_type="", accept="application/fhir+json; fhirVersion=6.0")
    assert wants_fhir_errors("application/fhir+json")
    assert wants_fhir_errors(f"{R4}, */*; q=0.1")
    assert not wants_fhir_errors("*/*")
    assert not wants_fhir_errors("")
    assert not wants_fhir_errors("application/problem+json, application/fhir+json")
    assert wants_fhir_errors("application/problem+json; q=0.5, application/fhir+json")


@pytest.mark.parametrize(
    ("accept", "version", "media_type"),
    [
        (None, FhirVersion.R5, "application/fhir+json"),
        (R5, FhirVersion.R5, R5),
        (R4, FhirVersion.R4, R4),
    ],
)
async def test_the_capability_statement(
    app: FastAPI, accept: str | None, version: FhirVersion, media_type: str
) -> None:
    async for client in open_client(app):  # no API key: the statement is public
        headers = {"accept": accept} if accept else {}
        response = await client.get("/fhir/metadata", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    statement = response.json()
    validate(statement, r4=version is FhirVersion.R4)
    assert statement["fhirVersion"] == version.full
    assert statement["kind"] == "instance" and statement["status"] == "active"
    assert statement["implementation"]["url"] == "http://pursuit.test/fhir"
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    assert "Authorization: Bearer" in rest["security"]["description"]
    # Only what Pursuit does: one type-level operation, no RESTful interactions.
    (resource,) = rest["resource"]
    assert resource["type"] == "Questionnaire" and "interaction" not in resource
    (operation,) = resource["operation"]
    assert operation["name"] == "next-question"
    assert operation["definition"].endswith("OperationDefinition/Questionnaire-next-question")
    assert "application/fhir+json" in statement["format"]


async def _post(client: httpx.AsyncClient, body: Json, *, r4: bool) -> Json:
    media = R4 if r4 else R5
    response = await client.post(URL, json=body, headers={"content-type": media})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    result: Json = response.json()
    validate(result, r4=r4)
    return result


@pytest.mark.parametrize("r4", [True, False], ids=["R4", "R5"])
async def test_a_whole_interview_round_trips_in_each_version(
    client: httpx.AsyncClient, r4: bool
) -> None:
    # An R4 client's form has a "choice" item without answerConstraint (R5-only).
    posted = questionnaire_response(config=RANDOM_2, candidates_type="choice" if r4 else "string")
    qr = await _post(client, posted, r4=r4)
    candidates = item(contained_questionnaire(qr), "candidates")
    assert candidates is not None
    assert ("answerConstraint" in candidates) is not r4
    qr = await _post(client, answer(qr, "Yes, a little."), r4=r4)
    qr = await _post(client, answer(qr, "No."), r4=r4)
    assert qr["status"] == "completed"
    assert answer_value(qr, "stop-reason") == "budget"
    session_id = answer_value(qr, "session-id")
    bundle = await client.get(
        f"/v1/sessions/{session_id}/fhir", headers={"accept": R4 if r4 else R5}
    )
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == (R4 if r4 else R5)
    validate(bundle.json(), r4=r4)
    (response,) = [
        e["resource"]
        for e in bundle.json()["entry"]
        if e["resource"]["resourceType"] == "QuestionnaireResponse"
    ]
    rebuilt = item(contained_questionnaire(response), "candidates")
    assert rebuilt is not None
    assert rebuilt["type"] == ("choice" if r4 else "string")


async def test_an_r5_only_element_in_an_r4_body_is_refused(client: httpx.AsyncClient) -> None:
    # answerConstraint is R5: an R4 QR carrying it is not valid R4.
    response = await client.post(URL, json=questionnaire_response(), headers={"content-type": R4})
    assert response.status_code == 422
    assert "not a valid FHIR R4 QuestionnaireResponse" in response.json()["detail"]


def _outcome(response: httpx.Response, *, status: int, code: str, r4: bool = False) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: Json = response.json()
    validate(outcome, r4=r4)
    (issue,) = outcome["issue"]
    assert issue["severity"] == "error" and issue["code"] == code
    (request_id,) = outcome["extension"]
    assert request_id["valueString"] == response.headers["x-request-id"]
    return outcome


async def test_errors_are_operation_outcomes_when_accept_asks_for_fhir(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    fhir = {"accept": "application/fhir+json", "content-type": "application/fhir+json"}
    bad = await client.post(URL, json={"resourceType": "Patient"}, headers=fhir)
    outcome = _outcome(bad, status=422, code="invalid")
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "invalid-input"
    assert "post a QuestionnaireResponse" in outcome["issue"][0]["diagnostics"]
    # R4 asked for: the same outcome, validated as R4.
    r4 = await client.post(URL, json={"resourceType": "Patient"}, headers={"accept": R4})
    _outcome(r4, status=422, code="invalid", r4=True)
    assert r4.headers["content-type"] == R4
    missing = await client.get(
        "/v1/sessions/00000000-0000-0000-0000-000000000000/fhir", headers=fhir
    )
    _outcome(missing, status=404, code="not-found")
    unsupported = await client.post(
        URL, content=b"{}", headers={"accept": "application/fhir+json", "content-type": "text/xml"}
    )
    _outcome(unsupported, status=415, code="not-supported")
    wrong_version = await client.get(
        "/fhir/metadata", headers={"accept": "application/fhir+json; fhirVersion=3.0"}
    )
    # FHIR wanted, in a version Pursuit does not speak: the 406 says so in the default one.
    _outcome(wrong_version, status=406, code="not-supported")
    assert wrong_version.headers["content-type"] == "application/fhir+json"
    # Without a key (authentication fails before any route code), and over the body limit.
    async for anonymous in open_client(app):
        unauthenticated = await anonymous.post(URL, json={}, headers=fhir)
        _outcome(unauthenticated, status=401, code="login")
        assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
        huge = await anonymous.post(URL, content=b" " * (2**21), headers=fhir)
        _outcome(huge, status=413, code="too-costly")


async def test_errors_stay_problem_json_otherwise(client: httpx.AsyncClient) -> None:
    for accept in (None, "*/*", "application/json", "application/problem+json"):
        headers = {"content-type": "application/fhir+json"}
        if accept:
            headers["accept"] = accept
        response = await client.post(URL, json={"resourceType": "Patient"}, headers=headers)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == response.headers["x-request-id"]
    # Not a FHIR route: problem+json even when Accept prefers FHIR.
    other = await client.get(
        "/v1/sessions/00000000-0000-0000-0000-000000000000",
        headers={"accept": "application/fhir+json"},
    )
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"


def test_the_middleware_is_outermost(app: FastAPI) -> None:
    outermost: Any = app.user_middleware[0].cls
    assert outermost is FhirErrorsMiddleware


class _Broken(ScriptedProvider):
    async def label_posteriors(self, **_: Any) -> Any:
        raise RuntimeError("an unexpected failure")


async def test_an_unexpected_error_is_an_operation_outcome_too(
    settings: Settings, api_key: str
) -> None:
    broken = _Broken(table={(): [0.25, 0.25, 0.25, 0.25]})
    async for client in open_client(create_app(settings, provider=broken), api_key=api_key):
        headers = {"accept": R4, "content-type": R5}  # an R5 body, an R4 reply
        response = await client.post(URL, json=questionnaire_response(), headers=headers)
    outcome = _outcome(response, status=500, code="exception", r4=True)
    assert "an unexpected failure" not in str(outcome)


async def test_the_openapi_document_declares_both_error_shapes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, method in (
        ("/fhir/Questionnaire/$next-question", "post"),
        ("/v1/sessions/{session_id}/fhir", "get"),
        ("/fhir/metadata", "get"),
    ):
        for status, response in paths[path][method]["responses"].items():
            if status.startswith(("4", "5")):
                content = response["content"]
                model = "ValidationProblem" if status == "422" else "Problem"
                assert content["application/problem+json"]["schema"] == {
                    "$ref": f"#/components/schemas/{model}"
                }, (path, status)
                assert (
                    "OperationOutcome" in content["application/fhir+json"]["schema"]["description"]
                )


def test_the_r4_check_refuses_what_only_r5_defines() -> None:
    """The R4 validator is no rubber stamp: R5's answerConstraint in an R4 item is refused
    (Pursuit's R4 output drops it, app/fhir/versions.py)."""
    item = {"linkId": "a", "type": "open-choice", "answerConstraint": "optionsOrString"}
    questionnaire = {"resourceType": "Questionnaire", "status": "active", "item": [item]}
    with pytest.raises(FHIRValidationError):
        validate(questionnaire, r4=True)
    del item["answerConstraint"]
    validate(questionnaire, r4=True)
