"""The calibrations API: resuming failed or interrupted runs, activation per question policy."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.calibrations.repository import CalibrationRepository
from app.db.models import AuditEvent, CalibrationLease
from app.settings import Settings
from tests.calibrations.fakes import StubPatient, scripted_provider
from tests.conftest import make_key, open_client
from tests.engine.scripted import ScriptedProvider
from tests.worker.conftest import Maker, make_worker


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": "tiny",
        "policy": "cip",
        "alpha": 0.1,
        "max_questions": 2,
        "cases": 12,
        "question_source": "generated",
        "bank": None,
        "n_questions": 3,
        "n_answers": 2,
        "concurrency": 1,
    }
    body.update(overrides)
    return body


async def _post(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/calibrations", json=_body(**overrides))
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    return run


async def _get(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/calibrations/{run_id}")).json()
    return body


async def _finished_cases(maker: Maker, run_id: str) -> dict[str, datetime]:
    async with maker() as db:
        cases = await CalibrationRepository(db).cases(uuid.UUID(run_id))
    return {c.case_id: c.created_at for c in cases}


async def _actions(maker: Maker, run_id: str) -> list[tuple[str, str | None]]:
    async with maker() as db:
        rows = await db.execute(
            sa.select(AuditEvent.action, AuditEvent.actor_key_id)
            .where(AuditEvent.resource_id == run_id)
            .order_by(AuditEvent.occurred_at)
        )
        return [(a, k) for a, k in rows.all()]


async def test_a_failed_run_resumes_through_the_api_without_redoing_finished_cases(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    run = await _post(client)
    # Two answers per case (T = 2): the 8th patient call fails, after 3 finished cases.
    failed = await make_worker(maker, provider, patient=StubPatient(error_after=7)).run_once()
    assert failed is not None and failed.status == "failed"
    before = await _get(client, run["id"])
    assert before["status"] == "failed" and "vLLM went away" in before["error"]
    assert before["progress"]["done"] == 3
    finished = await _finished_cases(maker, run["id"])
    assert len(finished) == 3
    # A failed run is nobody's work: no worker picks it up by itself.
    assert await make_worker(maker, provider).run_once() is None

    response = await client.post(f"/v1/calibrations/{run['id']}/resume")
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/calibrations/{run['id']}"
    queued = response.json()
    assert queued["status"] == "queued" and queued["error"] is None
    assert queued["progress"]["done"] == 3 and queued["lease"] is None

    fresh, patient = scripted_provider(), StubPatient()
    outcome = await make_worker(maker, fresh, patient=patient).run_once()
    assert outcome is not None and outcome.status == "succeeded"
    assert (outcome.computed_cases, outcome.skipped_cases) == (9, 3)
    # Only the 9 unfinished cases were interviewed: 3 posterior calls and 2 answers each.
    assert len(patient.calls) == 9 * 2 and len(fresh.posterior_calls) == 9 * 3
    after = await _finished_cases(maker, run["id"])
    assert len(after) == 12 and all(after[c] == t for c, t in finished.items())
    done = await _get(client, run["id"])
    assert done["status"] == "succeeded" and done["result"]["n_per_step"] == [12, 12, 12]

    actions = await _actions(maker, run["id"])
    resumes = [(a, k) for a, k in actions if a == "calibration.resume"]
    assert len(resumes) == 1 and resumes[0][1] is not None  # who asked is recorded
    names = [a for a, _ in actions]
    assert names.index("calibration.failed") < names.index("calibration.resume")
    assert names.index("calibration.resume") < names.index("calibration.succeeded")


async def test_an_interrupted_run_is_resumed_once_its_worker_is_silent(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    run = await _post(client)
    with pytest.raises(BaseExceptionGroup):  # the worker's process dies in the 4th case
        await make_worker(maker, provider, patient=StubPatient(crash_after=7)).run_once()
    assert (await _get(client, run["id"]))["status"] == "running"

    live = await client.post(f"/v1/calibrations/{run['id']}/resume")
    assert live.status_code == 409
    assert live.headers["content-type"] == "application/problem+json"
    assert "live worker" in live.json()["detail"]

    async with maker.begin() as db:  # a minute and more without a heartbeat
        await db.execute(
            sa.update(CalibrationLease)
            .where(CalibrationLease.calibration_id == uuid.UUID(run["id"]))
            .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    resumed = await client.post(f"/v1/calibrations/{run['id']}/resume")
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued"

    patient = StubPatient()
    outcome = await make_worker(maker, scripted_provider(), patient=patient).run_once()
    assert outcome is not None and outcome.status == "succeeded"
    assert (outcome.computed_cases, outcome.skipped_cases) == (9, 3)
    assert len(patient.calls) == 9 * 2


async def test_resume_refuses_runs_with_nothing_to_resume(
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    maker: Maker,
    provider: ScriptedProvider,
) -> None:
    missing = await client.post(f"/v1/calibrations/{uuid.uuid4()}/resume")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

    run = await _post(client)
    queued = await client.post(f"/v1/calibrations/{run['id']}/resume")
    assert queued.status_code == 409 and "is queued" in queued.json()["detail"]
    assert queued.headers["content-type"] == "application/problem+json"
    assert queued.json()["request_id"]

    await make_worker(maker, provider).run_once()
    succeeded = await client.post(f"/v1/calibrations/{run['id']}/resume")
    assert succeeded.status_code == 409 and "is succeeded" in succeeded.json()["detail"]
    assert (await _get(client, run["id"]))["status"] == "succeeded"
    assert "calibration.resume" not in [a for a, _ in await _actions(maker, run["id"])]

    key = await make_key(settings, tenant="clinic-b", scopes=[Scope.SESSIONS_WRITE])
    async for other in open_client(app, api_key=key):
        assert (await other.post(f"/v1/calibrations/{run['id']}/resume")).status_code == 403


async def test_a_worker_that_claimed_first_wins_over_a_resume(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    run = await _post(client)
    await make_worker(maker, provider, patient=StubPatient(error_after=7)).run_once()
    run_id = uuid.UUID(run["id"])
    async with maker.begin() as db:
        # The token seen before someone else claimed the run: the compare-and-set fails.
        assert not await CalibrationRepository(db).requeue(
            run_id, expected_token=uuid.uuid4(), stale_before=None
        )
    assert (await _get(client, run["id"]))["status"] == "failed"


async def test_the_openapi_document_has_resume_with_its_responses(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    resume = schema["paths"]["/v1/calibrations/{calibration_id}/resume"]["post"]
    assert {"202", "401", "403", "404", "409"} <= set(resume["responses"])
    assert "application/problem+json" in resume["responses"]["409"]["content"]
    ok = resume["responses"]["202"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/CalibrationOut")


async def test_activation_replaces_only_the_calibration_of_the_same_question_policy(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    two, four, two_again = (
        await _post(client, n_answers=2),
        await _post(client, n_answers=4),
        await _post(client, n_answers=2, seed=1),
    )
    for _ in range(3):
        assert (await make_worker(maker, provider).run_once()) is not None
    for run in (two, four):
        assert (await client.post(f"/v1/calibrations/{run['id']}/activate")).status_code == 200
    assert (await _get(client, two["id"]))["active"] and (await _get(client, four["id"]))["active"]

    assert (await client.post(f"/v1/calibrations/{two_again['id']}/activate")).status_code == 200
    assert not (await _get(client, two["id"]))["active"]
    assert (await _get(client, four["id"]))["active"]

    # Each session gets the calibration made with its own question policy.
    for n_answers, expected in ((2, two_again), (4, four)):
        session = await client.post(
            "/v1/sessions",
            json={
                "patient": {"summary": "A patient with a fever."},
                "inquiry": "What is the most likely diagnosis?",
                "candidates": ["Influenza", "Measles", "Migraine", "Common cold"],
                "max_questions": 2,
                "question_source": "generated",
                "n_candidate_questions": 3,
                "n_answers": n_answers,
            },
        )
        assert session.status_code == 201, session.text
        assert session.json()["differential"]["calibration_id"] == expected["id"]
