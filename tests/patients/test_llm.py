"""MediQ's fact-select patient on the LLM (``LLMPatient``): against an in-memory vLLM, and
(marked ``llm``) against the real local server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.errors import UpstreamBadOutputError
from app.llm import prompts
from app.llm.cache import LRUPosteriorCache
from app.llm.gateway import LLMGateway
from app.patients import LLMPatient, SimulatedPatient
from tests.fake_vllm import FakeVLLM, unit_settings

FACTS = ["Smokes 20 a day.", "No fever.", "Pain at rest."]


def _patient(fake: FakeVLLM) -> LLMPatient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle), base_url="http://fake")
    return LLMPatient(
        LLMGateway(http=http, model="fake", settings=unit_settings(), cache=LRUPosteriorCache(0))
    )


async def test_patient_replies_are_built_from_facts_only() -> None:
    fake = FakeVLLM(fact_ids=[3, 1, 9, 1])
    patient: SimulatedPatient = _patient(fake)
    reply = await patient.patient_reply(facts=FACTS, question="Do you smoke?")
    assert reply == "Smokes 20 a day. Pain at rest."
    fake.fact_ids = []
    assert await patient.patient_reply(facts=FACTS, question="Pets?") == prompts.CANNOT_ANSWER
    assert await patient.patient_reply(facts=[], question="Pets?") == prompts.CANNOT_ANSWER
    assert len(fake.completions()) == 2  # no facts: no request


async def test_one_greedy_request_per_case_under_the_fact_ids_schema() -> None:
    fake = FakeVLLM(fact_ids=[2])
    patient = _patient(fake)
    replies = await patient.patient_replies(facts=[" ", *FACTS], questions=["Fever?", "Temp?"])
    assert replies == ["No fever.", "No fever."]
    (body,) = fake.completions()
    assert len(body["prompt"]) == 2 and body["temperature"] == 0.0
    assert body["max_tokens"] == 32 + 8 * 3  # blank facts are dropped before numbering
    fact_ids = body["structured_outputs"]["json"]["properties"]["fact_ids"]
    assert fact_ids["items"]["maximum"] == 3 and fact_ids["maxItems"] == 3
    assert "2. No fever." in body["prompt"][0] and prompts.SYSTEM_FACTS in body["prompt"][0]
    assert await patient.patient_replies(facts=FACTS, questions=[]) == []


class GarbledVLLM(FakeVLLM):
    """Answers fact selections with JSON that has no ``fact_ids``."""

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        out = super()._complete(body)
        for choice in out["choices"]:
            choice["text"] = json.dumps({"facts": [1]})
        return out


async def test_an_unparseable_selection_is_a_bad_output() -> None:
    with pytest.raises(UpstreamBadOutputError):
        await _patient(GarbledVLLM()).patient_reply(facts=FACTS, question="Do you smoke?")


@pytest.mark.llm
async def test_fact_select_patient_uses_only_facts(live_gateway: LLMGateway) -> None:
    facts = ["He smokes 20 cigarettes a day.", "The pain started at rest.", "He has no fever."]
    replies = await LLMPatient(live_gateway).patient_replies(
        facts=facts, questions=["Do you smoke?", "What is your favourite colour?"]
    )
    for reply in replies:
        if reply != prompts.CANNOT_ANSWER:
            rest = reply
            for fact in facts:
                rest = rest.replace(fact, "")
            assert not rest.strip()
