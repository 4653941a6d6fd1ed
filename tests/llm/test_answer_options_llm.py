"""A bank session whose questions carry answer options, against the real local vLLM server.

Policy ``fixed`` asks the shipped internal-medicine bank in order, so the first question is
known (a closed one: yes / no / unsure); it is answered by option, and the model's posterior
after it must be the one the same answer typed as text gives.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.engine.banks import load_query_bank, shipped_bank_options

pytestmark = pytest.mark.llm

BANK = load_query_bank("internal_medicine")


def _body() -> dict[str, Any]:
    return {
        "patient": {"summary": "A 61-year-old man with three weeks of fatigue and weight loss."},
        "inquiry": "What is the most likely diagnosis?",
        "candidates": ["Hypothyroidism", "Colon cancer", "Depression"],
        "policy": "fixed",
        "question_source": "bank",
        "question_bank_name": "internal_medicine",
        "max_questions": 2,
        "stop_on_no_gain": False,
    }


async def _first_answer(client: httpx.AsyncClient, answer: dict[str, str]) -> dict[str, Any]:
    created = await client.post("/v1/sessions", json=_body())
    assert created.status_code == 201, created.text
    session = created.json()
    question = session["next_question"]
    assert question["text"] == BANK[0]
    response = await client.post(
        f"/v1/sessions/{session['id']}/answers", json={"question_id": question["id"], **answer}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = {"created": session, "answered": response.json()}
    return result


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_option_answers_a_live_bank_question_as_its_text(
    live_client: httpx.AsyncClient, live_tol: float
) -> None:
    assert shipped_bank_options("internal_medicine", BANK[0]) is not None
    by_option = await _first_answer(live_client, {"option": "yes"})
    question = by_option["created"]["next_question"]
    assert [o["display"] for o in question["answer_options"]] == ["Yes", "No", "Unsure"]
    answered = by_option["answered"]
    assert answered["step"] == 1 and answered["differential"]["step"] == 1
    detail = (await live_client.get(f"/v1/sessions/{answered['id']}")).json()
    assert detail["transcript"][0]["answer"] == "Yes"
    assert detail["transcript"][0]["question"]["answer_options"] == question["answer_options"]

    # The engine saw what typing "Yes" gives: the same posterior (to the served dtype's
    # request-to-request tolerance).
    by_text = await _first_answer(live_client, {"answer": "Yes"})
    option_p = {x["label"]: x["probability"] for x in answered["differential"]["all_labels"]}
    text_p = {
        x["label"]: x["probability"] for x in by_text["answered"]["differential"]["all_labels"]
    }
    assert option_p == pytest.approx(text_p, abs=live_tol)
