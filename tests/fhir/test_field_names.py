"""FHIR config items use the sessions API's field names (kebab case); older linkIds stay read."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.db.engine import create_engine
from app.db.models import InterviewSession
from app.fhir.vocab import CONFIG_ITEMS
from app.main import create_app
from app.sessions.schemas import SessionCreate
from app.settings import Settings
from tests.api.test_sessions import _provider
from tests.engine.scripted import ScriptedProvider
from tests.fhir.fhir_helpers import questionnaire_response

URL = "/fhir/Questionnaire/$next-question"
OLDER_LINK_IDS = {"question-bank"}


@pytest.fixture
def provider() -> ScriptedProvider:
    return _provider()


@pytest.fixture
async def app(settings: Settings, provider: ScriptedProvider) -> FastAPI:
    return create_app(settings, provider=provider)


def test_every_config_item_is_its_field_in_kebab_case() -> None:
    for link_id, field_name in CONFIG_ITEMS.items():
        assert field_name in SessionCreate.model_fields
        if link_id not in OLDER_LINK_IDS:
            assert link_id == field_name.replace("_", "-")


@pytest.mark.parametrize("link_id", ["question-bank-name", "question-bank"])
async def test_the_bank_item_by_its_field_name_or_its_older_link_id(
    client: httpx.AsyncClient, settings: Settings, link_id: str
) -> None:
    config = {link_id: {"valueString": "neurology"}, "n-candidate-questions": {"valueInteger": 2}}
    response = await client.post(URL, json=questionnaire_response(config=config))
    assert response.status_code == 200, response.text
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(sa.select(InterviewSession.config))).scalar_one()
    finally:
        await engine.dispose()
    assert stored["question_bank_name"] == "neurology"
    assert stored["n_candidate_questions"] == 2
