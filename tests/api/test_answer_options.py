"""Structured answers through the sessions API: options on questions, answers by option.

The first two questions of the shipped neurology bank (policy ``fixed`` asks in bank order):
a closed question (yes / no / unsure) and one that names its own alternatives (free text).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.engine.banks import load_query_bank
from app.engine.types import QA
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _body, _provider
from tests.engine.scripted import ScriptedProvider

NEUROLOGY = load_query_bank("neurology")
YES_NO_UNSURE = [
    {"code": "yes", "display": "Yes"},
    {"code": "no", "display": "No"},
    {"code": "unsure", "display": "Unsure"},
]
BANK: dict[str, Any] = {
    "policy": "fixed",
    "question_source": "bank",
    "question_bank_name": "neurology",
    "stop_on_no_gain": False,
    "max_questions": 3,
}


@pytest.fixture
def provider() -> ScriptedProvider:
    return _provider()


@pytest.fixture
async def app(settings: Settings, provider: ScriptedProvider) -> FastAPI:
    return create_app(settings, provider=provider)


async def _answer(
    client: httpx.AsyncClient, session_id: str, body: dict[str, Any], status: int = 200
) -> dict[str, Any]:
    response = await client.post(f"/v1/sessions/{session_id}/answers", json=body)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_bank_question_offers_options_and_an_option_answers_as_its_text(
    client: httpx.AsyncClient, provider: ScriptedProvider
) -> None:
    created = await client.post("/v1/sessions", json=_body(**BANK))
    assert created.status_code == 201, created.text
    session = created.json()
    first = session["next_question"]
    assert first["text"] == NEUROLOGY[0]
    assert first["answer_options"] == YES_NO_UNSURE

    # An unknown code, both forms at once, or neither: refused before any model call.
    calls = len(provider.posterior_calls)
    wrong = await _answer(
        client, session["id"], {"question_id": first["id"], "option": "maybe"}, 422
    )
    assert "its codes: yes, no, unsure" in wrong["detail"] and "maybe" not in wrong["detail"]
    both = {"question_id": first["id"], "option": "yes", "answer": "Yes"}
    await _answer(client, session["id"], both, 422)
    await _answer(client, session["id"], {"question_id": first["id"]}, 422)
    assert len(provider.posterior_calls) == calls

    second = (await _answer(client, session["id"], {"question_id": first["id"], "option": "yes"}))[
        "next_question"
    ]
    # The engine read the option as its display text, as if typed.
    assert any(
        QA(NEUROLOGY[0], "Yes") in history
        for batch in provider.posterior_calls[calls:]
        for history in batch
    )
    assert second["text"] == NEUROLOGY[1]  # "... one ear or are they bilateral?"
    assert second["answer_options"] is None
    free = await _answer(client, session["id"], {"question_id": second["id"], "option": "yes"}, 422)
    assert "offers no answer options" in free["detail"]
    third = (
        await _answer(client, session["id"], {"question_id": second["id"], "answer": "Left."})
    )["next_question"]

    detail = (await client.get(f"/v1/sessions/{session['id']}")).json()
    transcript = [(t["question"] or {}).get("answer_options") for t in detail["transcript"]]
    assert transcript == [YES_NO_UNSURE, None, third["answer_options"]]
    assert [t["answer"] for t in detail["transcript"]] == ["Yes", "Left.", None]


async def test_free_text_stays_possible_and_generated_questions_have_no_options(
    client: httpx.AsyncClient,
) -> None:
    bank = (await client.post("/v1/sessions", json=_body(**BANK))).json()
    question = bank["next_question"]
    typed = {"question_id": question["id"], "answer": "Yes, on waking."}
    await _answer(client, bank["id"], typed)
    detail = (await client.get(f"/v1/sessions/{bank['id']}")).json()
    assert detail["transcript"][0]["answer"] == "Yes, on waking."

    generated = (await client.post("/v1/sessions", json=_body())).json()
    assert generated["next_question"]["answer_options"] is None


async def test_the_openapi_document_describes_options(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert "answer_options" in schemas["QuestionOut"]["properties"]
    assert set(schemas["AnswerOptionOut"]["required"]) == {"code", "display"}
    assert {"answer", "option"} <= set(schemas["AnswerIn"]["properties"])
    assert schemas["AnswerIn"]["required"] == ["question_id"]
