"""Answer options as SDC ``answerOption`` (R5 ``coding`` + ``optionsOrString``, R4
``open-choice``), and an answer posted as the option's ``valueCoding``."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.engine.banks import load_query_bank
from app.fhir.vocab import ANSWER_OPTION_SYSTEM
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _provider
from tests.fhir.fhir_helpers import (
    Json,
    answer,
    answer_value,
    item,
    last_question,
    questionnaire_response,
    validate,
)

URL = "/fhir/Questionnaire/$next-question"
NEUROLOGY = load_query_bank("neurology")
BANK_IN_ORDER: dict[str, Any] = {
    "policy": {"valueString": "fixed"},
    "question-bank": {"valueString": "neurology"},
    "stop-on-no-gain": {"valueBoolean": False},
    "max-questions": {"valueInteger": 3},
}


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings, provider=_provider())


async def _post(client: httpx.AsyncClient, body: Json, *, r4: bool) -> Json:
    media = f"application/fhir+json; fhirVersion={'4.0' if r4 else '5.0'}"
    response = await client.post(URL, json=body, headers={"content-type": media})
    assert response.status_code == 200, response.text
    result: Json = response.json()
    validate(result, r4=r4)
    return result


def _coding(code: str, display: str) -> Json:
    return {"system": ANSWER_OPTION_SYSTEM, "code": code, "display": display}


@pytest.mark.parametrize("r4", [False, True], ids=["R5", "R4"])
async def test_options_are_answer_options_and_a_coding_answers_as_the_display(
    client: httpx.AsyncClient, r4: bool
) -> None:
    posted = questionnaire_response(
        config=BANK_IN_ORDER, candidates_type="choice" if r4 else "string"
    )
    qr = await _post(client, posted, r4=r4)
    question = last_question(qr)
    assert question["text"] == NEUROLOGY[0]
    assert question["answerOption"] == [
        {"valueCoding": _coding("yes", "Yes")},
        {"valueCoding": _coding("no", "No")},
        {"valueCoding": _coding("unsure", "Unsure")},
    ]
    if r4:
        assert question["type"] == "open-choice" and "answerConstraint" not in question
    else:
        assert question["type"] == "coding"
        assert question["answerConstraint"] == "optionsOrString"  # free text stays possible

    # The client answers with the option's coding (the code alone identifies it).
    picked = copy.deepcopy(qr)
    coding = {"system": ANSWER_OPTION_SYSTEM, "code": "no"}
    picked["item"].append({"linkId": question["linkId"], "answer": [{"valueCoding": coding}]})
    qr = await _post(client, picked, r4=r4)
    session_id = answer_value(qr, "session-id")
    detail = (await client.get(f"/v1/sessions/{session_id}")).json()
    assert detail["transcript"][0]["answer"] == "No"  # stored and scored as the display text
    # The free-text question that follows is a plain string item.
    follow_up = last_question(qr)
    assert follow_up["text"] == NEUROLOGY[1]
    assert follow_up["type"] == "string" and "answerOption" not in follow_up
    # A re-post of the same coding is the same answer, not a conflict.
    await _post(client, picked, r4=r4)

    # The session's Bundle writes the recorded option back as its coding.
    bundle = await client.get(
        f"/v1/sessions/{session_id}/fhir",
        headers={"accept": "application/fhir+json; fhirVersion=4.0"} if r4 else {},
    )
    validate(bundle.json(), r4=r4)
    (response,) = [
        e["resource"]
        for e in bundle.json()["entry"]
        if e["resource"]["resourceType"] == "QuestionnaireResponse"
    ]
    recorded = item(response, question["linkId"])
    assert recorded is not None
    assert recorded["answer"] == [{"valueCoding": _coding("no", "No")}]


async def test_free_text_to_an_option_question_is_kept_as_text(
    client: httpx.AsyncClient,
) -> None:
    qr = await _post(client, questionnaire_response(config=BANK_IN_ORDER), r4=False)
    question = last_question(qr)
    qr = await _post(client, answer(qr, "Only in the mornings."), r4=False)
    detail = (await client.get(f"/v1/sessions/{answer_value(qr, 'session-id')}")).json()
    assert detail["transcript"][0]["answer"] == "Only in the mornings."
    assert answer_value(qr, question["linkId"]) == "Only in the mornings."
