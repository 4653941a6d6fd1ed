"""Posterior cache entries are a session's own (security probe finding M3), on the real
local vLLM and real Redis.

Before: keys hashed the prompt alone and lived 7 days, so tenant B re-creating tenant A's
patient after A deleted the session got a cache hit, which confirmed that A had interviewed
that patient. Now every key carries its session, and DELETE removes the session's keys.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from app.llm.cache import scope_prefix, session_scope
from app.main import create_app
from app.settings import Settings
from tests.conftest import REDIS_URL, make_key, open_client

pytestmark = pytest.mark.llm

BODY: dict[str, Any] = {
    "patient": {"summary": f"A 41-year-old man with fever and a cough ({uuid.uuid4().hex[:6]})."},
    "inquiry": "What is the most likely diagnosis?",
    "candidates": ["Pneumonia", "Influenza", "Asthma", "Common cold"],
    "alpha": 0.1,
    "policy": "cip",
    "question_source": "bank",
    "question_bank": ["Do you have a fever?", "Are you short of breath?", "Do you wheeze?"],
    "n_candidate_questions": 3,
    "n_answers": 2,
    "max_questions": 2,
    "stop_on_no_gain": False,
}


async def _keys(redis: Redis, session_id: str) -> set[str]:
    """A session's cache keys, without their scope: (model, prompt version, prompt hash)."""
    prefix = scope_prefix(session_scope(session_id))
    return {
        key.decode().removeprefix(prefix)
        async for key in redis.scan_iter(match=f"{prefix}*", count=500)
    }


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_identical_sessions_of_two_tenants_share_no_entries_and_delete_purges(
    settings: Settings, live_server: tuple[str, str]
) -> None:
    base_url, model = live_server
    app = create_app(settings.model_copy(update={"llm_base_url": base_url, "llm_model": model}))
    redis = Redis.from_url(REDIS_URL)
    try:
        a_key = await make_key(settings, tenant="clinic-a")
        b_key = await make_key(settings, tenant="clinic-b")
        async for a in open_client(app, api_key=a_key):
            async for b in open_client(app, api_key=b_key):
                created_a = await a.post("/v1/sessions", json=BODY)
                assert created_a.status_code == 201, created_a.text
                a_id = created_a.json()["id"]
                a_keys = await _keys(redis, a_id)
                assert a_keys, "the session's posteriors were not cached under its scope"

                created_b = await b.post("/v1/sessions", json=BODY)
                assert created_b.status_code == 201, created_b.text
                b_id = created_b.json()["id"]
                # The prompts both sessions share (at least the step-0 posterior: the same
                # patient, no answers yet) were scored and stored by each: B read none of A's.
                b_keys = await _keys(redis, b_id)
                assert a_keys & b_keys

                deleted = await a.delete(f"/v1/sessions/{a_id}")
                assert deleted.status_code == 204, deleted.text
                assert await _keys(redis, a_id) == set()
                leftovers = [k async for k in redis.scan_iter(match=f"*{a_id}*", count=500)]
                assert leftovers == []
                assert await _keys(redis, b_id) == b_keys  # B's own entries stay
                assert (await b.delete(f"/v1/sessions/{b_id}")).status_code == 204
    finally:
        await redis.aclose()
