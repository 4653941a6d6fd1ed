"""The FHIR surface on real PostgreSQL and SQLite with the scripted provider.

Every resource the API produces is parsed with fhir.resources (R5) by ``validate``.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.db.engine import create_engine
from app.db.models import InterviewSession, Turn
from app.engine.policy import DEFAULT_BANK, QuestionPolicy, named_bank
from app.fhir.vocab import ANSWER_OPTION_SYSTEM
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _provider
from tests.conftest import insert_scripted_calibration, make_key, open_client
from tests.engine.scripted import ScriptedProvider
from tests.fhir.fhir_helpers import (
    INQUIRY,
    LABELS,
    SUMMARY,
    Json,
    answer,
    answer_value,
    as_parameters,
    contained_of,
    contained_questionnaire,
    hidden,
    item,
    last_question,
    questionnaire_response,
    validate,
)

FHIR_JSON = {"content-type": "application/fhir+json"}
URL = "/fhir/Questionnaire/$next-question"
# "random" never stops for lack of gain, so a scripted interview runs to its budget.
RANDOM_3: dict[str, Any] = {
    "policy": {"valueString": "random"},
    "max-questions": {"valueInteger": 3},
}


@pytest.fixture
def provider() -> ScriptedProvider:
    return _provider()


@pytest.fixture
async def app(settings: Settings, provider: ScriptedProvider) -> FastAPI:
    return create_app(settings, provider=provider)


async def _count(settings: Settings, model: type[Any]) -> int:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(model)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def _post(client: httpx.AsyncClient, body: Json, status: int = 200) -> Json:
    response = await client.post(URL, json=body, headers=FHIR_JSON)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["content-type"] == "application/fhir+json"
        validate(response.json())
    else:
        assert response.headers["content-type"] == "application/problem+json"
    result: Json = response.json()
    return result


async def test_the_first_call_opens_a_session_and_appends_its_first_question(
    client: httpx.AsyncClient,
) -> None:
    posted = questionnaire_response()
    qr = await _post(client, posted)
    assert qr["status"] == "in-progress"
    session_id = answer_value(qr, "session-id")
    session = (await client.get(f"/v1/sessions/{session_id}")).json()
    assert session["patient"]["summary"] == SUMMARY and session["inquiry"] == INQUIRY
    assert session["candidates"] == LABELS and session["policy"] == "cip"

    questionnaire = contained_questionnaire(qr)
    links = [i["linkId"] for i in questionnaire["item"]]
    # The caller's items first, unchanged; then Pursuit's hidden ones; then the question.
    assert links[:3] == ["summary", "inquiry", "candidates"]
    assert questionnaire["item"][:3] == posted["contained"][0]["item"]
    assert links[3:-1] == [
        "session-id",
        "alpha",
        "set-size",
        "calibration-id",
        "guarantee",
        "stop-reason",
        "differential",
    ]
    for definition in questionnaire["item"][3:-1]:
        assert hidden(definition) and definition["readOnly"] is True
    question = last_question(qr)
    base = "https://pursuit.invalid/fhir/StructureDefinition/"
    options = session["next_question"]["answer_options"]
    answerable: dict[str, Any] = (
        {
            "type": "coding",
            "answerConstraint": "optionsOrString",
            "answerOption": [
                {
                    "valueCoding": {
                        "system": ANSWER_OPTION_SYSTEM,
                        "code": o["code"],
                        "display": o["display"],
                    }
                }
                for o in options
            ],
        }
        if options
        else {"type": "string"}
    )
    assert question == {
        # Which rule chose it, as the session's reply says (nominal: no selection calibration).
        "extension": [
            {"url": base + "selection-rule", "valueCode": "nominal"},
            {"url": base + "objective", "valueCode": "set_size"},
        ],
        "linkId": session["next_question"]["id"],
        "text": session["next_question"]["text"],
        **answerable,
    }
    # The API's defaults: a question of the default bank.
    assert session["next_question"]["text"] in named_bank(DEFAULT_BANK)
    assert session["next_question"]["selection_rule"] == "nominal"
    assert session["next_question"]["selection_calibration_id"] is None
    assert item(qr, question["linkId"]) is None  # asked, not answered

    differential = session["differential"]
    assert answer_value(qr, "alpha") == 0.1
    assert answer_value(qr, "set-size") == differential["set_size"] == 4
    assert item(qr, "calibration-id") is None  # uncalibrated: nothing to name
    assert item(qr, "stop-reason") is None  # still running
    assert answer_value(qr, "guarantee") == differential["guarantee"]
    conditions = contained_of(qr, "Condition")
    assert [c["code"]["text"] for c in conditions] == [x["label"] for x in differential["labels"]]
    (risk,) = contained_of(qr, "RiskAssessment")
    assert risk["status"] == "preliminary" and risk["basis"] == [{"reference": "#"}]
    assert [(p["outcome"]["text"], p["probabilityDecimal"]) for p in risk["prediction"]] == [
        (x["label"], pytest.approx(x["probability"])) for x in differential["all_labels"]
    ]
    assert risk["note"][0]["text"] == differential["guarantee"]
    refs = [a["valueReference"]["reference"] for a in item(qr, "differential")["answer"]]  # type: ignore[index]
    assert refs == [f"#{c['id']}" for c in conditions] + [f"#{risk['id']}"]


async def test_a_whole_interview_runs_to_completed_then_finalizes(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    qr = await _post(client, as_parameters(questionnaire_response(config=RANDOM_3)))
    session_id = answer_value(qr, "session-id")
    asked: list[str] = []
    while qr["status"] == "in-progress":
        asked.append(last_question(qr)["text"])
        before = len(contained_questionnaire(qr)["item"])
        qr = await _post(client, answer(qr, f"answer {len(asked)}"))
        grown = len(contained_questionnaire(qr)["item"]) - before
        assert grown == (1 if qr["status"] == "in-progress" else 0)
    assert qr["status"] == "completed" and len(asked) == 3 == len(set(asked))
    assert answer_value(qr, "stop-reason") == "budget"

    detail = (await client.get(f"/v1/sessions/{session_id}")).json()
    assert detail["status"] == "stopped" and detail["stop_reason"] == "budget"
    assert [t["answer"] for t in detail["transcript"]] == ["answer 1", "answer 2", "answer 3", None]
    questions = [t["question"] for t in detail["transcript"][:3]]
    for question, text in zip(questions, asked, strict=True):
        assert question["text"] == text
        assert answer_value(qr, question["id"]) == f"answer {asked.index(text) + 1}"
    assert answer_value(qr, "set-size") == detail["differential"]["set_size"]
    assert contained_of(qr, "RiskAssessment")[0]["status"] == "preliminary"

    # Posting it back with status completed ends the session (finalize).
    done = copy.deepcopy(qr)
    done["status"] = "completed"
    final = await _post(client, done)
    assert final["status"] == "completed"
    assert contained_of(final, "RiskAssessment")[0]["status"] == "final"
    assert (await client.get(f"/v1/sessions/{session_id}")).json()["status"] == "finalized"
    assert answer_value(final, "stop-reason") == "budget"
    assert await _count(settings, InterviewSession) == 1


async def test_a_repost_returns_the_current_state_without_a_new_turn(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    first = await _post(client, questionnaire_response())
    answered = answer(first, "yes")
    second = await _post(client, answered)
    again = await _post(client, answered)
    assert again == second
    assert await _count(settings, Turn) == 2
    # The very first QR re-posted (its session id known) is the current state, too.
    first_again = await _post(client, first)
    assert contained_questionnaire(first_again) == contained_questionnaire(second)
    assert answer_value(first_again, last_question(first)["linkId"]) == "yes"
    assert await _count(settings, Turn) == 2


async def test_concurrent_posts_of_one_answer_both_see_it_applied_once(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    answered = answer(await _post(client, questionnaire_response()), "no")
    responses = await asyncio.gather(
        *(client.post(URL, json=answered, headers=FHIR_JSON) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert await _count(settings, Turn) == 2


async def test_a_different_answer_to_an_answered_question_is_409(
    client: httpx.AsyncClient,
) -> None:
    first = await _post(client, questionnaire_response())
    await _post(client, answer(first, "yes"))
    problem = await _post(client, answer(first, "no"), status=409)
    assert "already answered differently" in problem["detail"]
    assert "yes" not in problem["detail"]  # no patient text in errors


@pytest.mark.parametrize(
    ("variant", "headers"),
    [
        ({"inquiry_as": "answer"}, {"content-type": "application/json"}),
        ({"candidates_type": "choice"}, {"content-type": "application/fhir+json; fhirVersion=5.0"}),
    ],
)
async def test_input_variants_and_media_types(
    client: httpx.AsyncClient, variant: dict[str, Any], headers: dict[str, str]
) -> None:
    response = await client.post(URL, json=questionnaire_response(**variant), headers=headers)
    assert response.status_code == 200, response.text
    # A version named in the request is named in the reply too.
    named = "fhirVersion" in headers["content-type"]
    expected = "application/fhir+json" + ("; fhirVersion=5.0" if named else "")
    assert response.headers["content-type"] == expected
    session_id = answer_value(validate(response.json()).model_dump(), "session-id")
    session = (await client.get(f"/v1/sessions/{session_id}")).json()
    assert session["inquiry"] == INQUIRY and session["candidates"] == LABELS


async def test_hidden_items_configure_the_session(client: httpx.AsyncClient) -> None:
    config: dict[str, Any] = {
        "alpha": {"valueDecimal": 0.2},
        "policy": {"valueCoding": {"code": "ip"}},
        "max-questions": {"valueInteger": 2},
        "question-bank": {"valueString": "neurology"},
        "n-candidate-questions": {"valueInteger": 2},
        "n-answers": {"valueInteger": 1},
        "stop-on-no-gain": {"valueBoolean": False},
    }
    qr = await _post(client, questionnaire_response(config=config))
    assert answer_value(qr, "alpha") == 0.2
    # The caller's own alpha item is kept (not duplicated), and answered with the session's.
    links = [i["linkId"] for i in contained_questionnaire(qr)["item"]]
    assert links.count("alpha") == 1
    session = (await client.get(f"/v1/sessions/{answer_value(qr, 'session-id')}")).json()
    assert session["policy"] == "ip" and session["differential"]["alpha"] == 0.2


def _without(response: Json, link_id: str) -> Json:
    out = copy.deepcopy(response)
    out["item"] = [i for i in out["item"] if i["linkId"] != link_id]
    return out


def _bad_value(response: Json) -> Json:
    out = copy.deepcopy(response)
    out["item"][0]["answer"] = [{"valueString": "secret patient text", "valueInteger": 3}]
    return out


def _unknown_contained(response: Json) -> Json:
    out = copy.deepcopy(response)
    out["contained"].append({"resourceType": "NotAResource", "id": "x"})
    return out


def _canonical_questionnaire(response: Json) -> Json:
    out = copy.deepcopy(response)
    out["questionnaire"] = "http://example.org/Questionnaire/intake"
    return out


def _session_id(response: Json, value: str) -> Json:
    out = copy.deepcopy(response)
    out["item"].append({"linkId": "session-id", "answer": [{"valueString": value}]})
    return out


BASE = questionnaire_response()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (questionnaire_response(summary=None), 422, "'summary'"),
        (questionnaire_response(inquiry_as="none"), 422, "'inquiry'"),
        (questionnaire_response(candidates=["Only one"]), 422, "item 'candidates'"),
        (questionnaire_response(candidates=[]), 422, "'candidates'"),
        (questionnaire_response(config={"alpha": {"valueDecimal": 0.7}}), 422, "item 'alpha'"),
        (questionnaire_response(config={"policy": {"valueString": "oracle"}}), 422, "'policy'"),
        (
            questionnaire_response(config={"question-bank": {"valueString": "cardiology"}}),
            422,
            "names no shipped bank",  # the field, never the value
        ),
        (_bad_value(BASE), 422, "not a valid FHIR R5 QuestionnaireResponse"),
        (_unknown_contained(BASE), 422, "not a valid FHIR R5 QuestionnaireResponse"),
        (_canonical_questionnaire(BASE), 422, "contain its Questionnaire"),
        (_session_id(BASE, "not-a-uuid"), 422, "'session-id'"),
        (_session_id(BASE, str(uuid.uuid4())), 404, "no session"),
        ({"resourceType": "Patient"}, 422, "post a QuestionnaireResponse"),
        ({"resourceType": "Parameters", "parameter": []}, 422, "questionnaire-response"),
        ([1, 2], 422, "JSON object"),
    ],
)
async def test_bad_input_is_a_problem_and_writes_nothing(
    client: httpx.AsyncClient, settings: Settings, body: Any, status: int, needle: str
) -> None:
    problem = await _post(client, body, status=status)
    assert needle in problem["detail"], problem
    assert "secret patient text" not in str(problem)
    assert problem["request_id"]
    assert await _count(settings, InterviewSession) == 0


async def test_media_type_and_json_are_checked(client: httpx.AsyncClient) -> None:
    wrong = await client.post(URL, content=b"{}", headers={"content-type": "text/plain"})
    assert wrong.status_code == 415
    assert wrong.headers["content-type"] == "application/problem+json"
    broken = await client.post(URL, content=b'{"resourceType": ', headers=FHIR_JSON)
    assert broken.status_code == 422 and broken.json()["detail"] == "the body is not JSON"
    # Both were 500s: json.loads, then copying the resource, ran out of recursion.
    unparsable = await client.post(URL, content=b"[" * 5000, headers=FHIR_JSON)
    assert unparsable.status_code == 422 and "nests deeper" in unparsable.json()["detail"]
    nested: Any = "x"
    for _ in range(600):
        nested = [nested]
    deep = questionnaire_response(summary="fever")
    deep["meta"] = {"tag": nested}
    problem = await _post(client, deep, status=422)
    assert "nests deeper than 64 levels" in problem["detail"]


async def test_scopes_and_tenancy(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient
) -> None:
    qr = await _post(client, questionnaire_response())
    session_id = answer_value(qr, "session-id")
    reader = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_READ])
    writer = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_WRITE])
    other = await make_key(settings, tenant="clinic-b")
    async for c in open_client(app, api_key=reader):
        assert (await c.post(URL, json=qr, headers=FHIR_JSON)).status_code == 403
        assert (await c.get(f"/v1/sessions/{session_id}/fhir")).status_code == 200
    async for c in open_client(app, api_key=writer):
        assert (await c.get(f"/v1/sessions/{session_id}/fhir")).status_code == 403
        # Continuing returns the session's recorded answers: a write-only key may not.
        refused = await c.post(URL, json=answer(qr, "yes"), headers=FHIR_JSON)
        assert refused.status_code == 403 and "sessions:read" in refused.json()["detail"]
        # Starting an interview reads nothing recorded: write alone is enough.
        started = await c.post(URL, json=questionnaire_response(), headers=FHIR_JSON)
        assert started.status_code == 200, started.text
    async for c in open_client(app, api_key=other):
        assert (await c.post(URL, json=answer(qr, "yes"), headers=FHIR_JSON)).status_code == 404
        assert (await c.get(f"/v1/sessions/{session_id}/fhir")).status_code == 404
    async for c in open_client(app):
        assert (await c.post(URL, json=qr, headers=FHIR_JSON)).status_code == 401


async def test_the_session_bundle(client: httpx.AsyncClient) -> None:
    qr = await _post(client, questionnaire_response(config=RANDOM_3))
    qr = await _post(client, answer(qr, "no"))
    session_id = answer_value(qr, "session-id")
    response = await client.get(f"/v1/sessions/{session_id}/fhir")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    bundle = response.json()
    validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    n_set = answer_value(qr, "set-size")
    assert kinds == ["QuestionnaireResponse", *["Condition"] * n_set, "RiskAssessment"]
    bundled = bundle["entry"][0]["resource"]
    assert bundled["status"] == "in-progress"
    assert answer_value(bundled, "summary") == SUMMARY
    assert answer_value(bundled, "session-id") == session_id
    detail = (await client.get(f"/v1/sessions/{session_id}")).json()
    first, second = (t["question"] for t in detail["transcript"][:2])
    assert answer_value(bundled, first["id"]) == "no"
    assert [i["linkId"] for i in contained_questionnaire(bundled)["item"]][-2:] == [
        first["id"],
        second["id"],
    ]
    risk = bundle["entry"][-1]
    assert risk["resource"]["basis"] == [{"reference": bundle["entry"][0]["fullUrl"]}]
    refs = [a["valueReference"]["reference"] for a in item(bundled, "differential")["answer"]]  # type: ignore[index]
    assert refs == [e["fullUrl"] for e in bundle["entry"][1:]]
    # Stable ids: the same state gives the same Bundle.
    assert (await client.get(f"/v1/sessions/{session_id}/fhir")).json() == bundle

    missing = await client.get(f"/v1/sessions/{uuid.uuid4()}/fhir")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


@pytest.fixture
async def calibration(settings: Settings) -> str:
    """An active calibration for the scripted provider, cip, alpha 0.1, the default policy."""
    default = QuestionPolicy.build()
    assert (default.n_candidate_questions, default.n_answers) == (4, 2)
    bank = {"question_source": "bank", "bank": DEFAULT_BANK, "n_questions": 4, "n_answers": 2}
    return (await insert_scripted_calibration(settings, **bank))[0]


async def test_a_calibrated_set_names_its_calibration(
    client: httpx.AsyncClient, calibration: str
) -> None:
    qr = await _post(client, questionnaire_response())
    assert answer_value(qr, "calibration-id") == calibration
    assert "at least 90%" in answer_value(qr, "guarantee")
    (risk,) = contained_of(qr, "RiskAssessment")
    assert calibration in risk["method"]["text"]
    assert all("p-value" in p["rationale"] for p in risk["prediction"])


async def test_an_interview_that_asks_nothing_completes_at_once(client: httpx.AsyncClient) -> None:
    posted = questionnaire_response(config={"policy": {"valueString": "none"}})
    posted["subject"] = {"reference": "Patient/example"}
    qr = await _post(client, posted)
    assert qr["status"] == "completed"
    assert answer_value(qr, "stop-reason") is not None
    assert contained_questionnaire(qr)["item"][-1]["linkId"] == "differential"
    # The caller's subject is the subject of the differential.
    for resource in contained_of(qr, "Condition") + contained_of(qr, "RiskAssessment"):
        assert resource["subject"] == {"reference": "Patient/example"}


async def test_answering_a_finalized_interview_is_409(client: httpx.AsyncClient) -> None:
    first = await _post(client, questionnaire_response())
    done = copy.deepcopy(first)
    done["status"] = "completed"
    final = await _post(client, done)
    assert final["status"] == "completed"
    assert contained_of(final, "RiskAssessment")[0]["status"] == "final"
    # The question left waiting stays in the form, unanswered; answering it now is refused.
    assert last_question(final) == last_question(first)
    problem = await _post(client, answer(first, "yes"), status=409)
    assert "finalized" in problem["detail"]
    # Re-posting the final QR as it is just returns it.
    assert await _post(client, final) == final
