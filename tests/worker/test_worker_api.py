"""The calibrations API and the worker on real PostgreSQL and SQLite, scripted provider."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.db.models import AuditEvent
from app.settings import Settings
from tests.calibrations.fakes import Crash, StubPatient, scripted_provider, write_dataset
from tests.conftest import make_key, open_client
from tests.engine.scripted import ScriptedProvider
from tests.worker.conftest import Maker, make_worker


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "tiny cip",
        "dataset": "tiny",
        "policy": "cip",
        "alpha": 0.1,
        "max_questions": 2,
        "cases": 12,
        "question_source": "generated",
        "bank": None,
        "n_questions": 3,
        "n_answers": 2,
        "concurrency": 2,
    }
    body.update(overrides)
    return body


async def test_post_then_a_worker_runs_it_then_activate_serves_sessions(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    response = await client.post("/v1/calibrations", json=_body())
    assert response.status_code == 202, response.text
    run = response.json()
    assert response.headers["location"] == f"/v1/calibrations/{run['id']}"
    assert run["status"] == "queued" and run["model"] == "scripted"
    assert run["progress"] == {"done": 0, "total": 12, "n_per_step": [0, 0, 0], "stop_reasons": {}}
    assert run["params"]["dataset_hash"] == run["dataset_hash"] and run["result"] is None

    outcome = await make_worker(maker, provider).run_once()
    assert outcome is not None and outcome.status == "succeeded"
    assert await make_worker(maker, provider).run_once() is None  # nothing left

    done = (await client.get(f"/v1/calibrations/{run['id']}")).json()
    assert done["status"] == "succeeded" and done["active"] is False
    assert done["progress"]["done"] == 12 and done["progress"]["n_per_step"] == [12, 12, 12]
    assert done["progress"]["stop_reasons"] == {"budget": 12}
    assert len(done["result"]["thresholds"]) == 3 and done["result"]["n_per_step"] == [12] * 3
    assert done["lease"]["worker"] == "w"

    listed = (await client.get("/v1/calibrations")).json()["calibrations"]
    assert [c["id"] for c in listed] == [run["id"]]

    activated = await client.post(f"/v1/calibrations/{run['id']}/activate")
    assert activated.status_code == 200 and activated.json()["active"] is True

    session = await client.post(
        "/v1/sessions",
        json={
            "patient": {"summary": "A patient with a fever."},
            "inquiry": "What is the most likely diagnosis?",
            "candidates": ["Influenza", "Measles", "Migraine", "Common cold"],
            "alpha": 0.1,
            "policy": "cip",
            "max_questions": 2,
            # The calibration's question policy (_body): generated, 3 questions, 2 answers.
            "question_source": "generated",
            "n_candidate_questions": 3,
            "n_answers": 2,
        },
    )
    assert session.status_code == 201, session.text
    differential = session.json()["differential"]
    assert differential["calibrated"] is True
    assert differential["calibration_id"] == run["id"]
    assert differential["calibration_n"] == 12

    events = (await client.get("/v1/audit", params={"resource_id": run["id"]})).json()["events"]
    assert {
        "calibration.create",
        "calibration.claim",
        "calibration.succeeded",
        "calibration.activate",
    } <= {e["action"] for e in events}


async def test_activate_on_post_and_a_worker_that_dies_is_resumed_by_another(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    run = (await client.post("/v1/calibrations", json=_body(activate=True, concurrency=1))).json()
    # The first worker's process dies in the 4th case (2 answers per case).
    with pytest.raises(BaseExceptionGroup) as died:
        await make_worker(maker, provider, patient=StubPatient(crash_after=7)).run_once()
    assert died.group_contains(Crash)
    mid = (await client.get(f"/v1/calibrations/{run['id']}")).json()
    assert mid["status"] == "running" and mid["progress"]["done"] == 3
    assert mid["progress"]["n_per_step"] == [3, 3, 3]

    # A live-looking lease is left alone, but its unclaimed cases are not: a helper does the
    # 8 nobody holds (the dead owner's 4th case is still claimed) and leaves the run running.
    helper_provider, helper_patient = scripted_provider(), StubPatient()
    helper = make_worker(maker, helper_provider, patient=helper_patient, lease_timeout_s=60)
    helped = await helper.run_once()
    assert helped is not None and (helped.status, helped.computed_cases) == ("helped", 8)
    assert len(helper_patient.calls) == 8 * 2
    assert (await client.get(f"/v1/calibrations/{run['id']}")).json()["status"] == "running"
    assert await make_worker(maker, provider, lease_timeout_s=60).run_once() is None
    # Once the lease is stale, another worker owns the run, redoes the dead owner's case
    # (once) and computes the thresholds.
    fresh_provider, patient = scripted_provider(), StubPatient()
    second = make_worker(maker, fresh_provider, patient=patient, lease_timeout_s=0)
    outcome = await second.run_once()
    assert outcome is not None and outcome.status == "succeeded"
    assert (outcome.computed_cases, outcome.skipped_cases) == (1, 11)
    assert len(patient.calls) == 1 * 2 and len(fresh_provider.posterior_calls) == 1 * 3

    final = (await client.get(f"/v1/calibrations/{run['id']}")).json()
    assert final["status"] == "succeeded" and final["active"] is True
    assert final["lease"]["attempts"] == 2
    async with maker() as db:
        actions = (
            await db.scalars(
                sa.select(AuditEvent.action).where(AuditEvent.resource_id == run["id"])
            )
        ).all()
    assert "calibration.reclaim" in actions


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_body(extra="field"), 422),
        (_body(dataset="../etc/passwd"), 422),
        (_body(dataset="nope"), 422),
        (_body(policy="oracle"), 422),
        (_body(alpha=0.7), 422),
        (_body(cases=500), 422),  # more than the calibration split holds
        (_body(answer_source="estimation", activate=True), 422),
        (_body(name="run\x00"), 422),  # PostgreSQL cannot store U+0000: it was a 500 there
    ],
)
async def test_bad_requests_are_problems_and_queue_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    response = await client.post("/v1/calibrations", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/calibrations")).json()["calibrations"] == []


async def test_unknown_ids_unfinished_runs_and_scopes(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    missing = await client.get(f"/v1/calibrations/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    run = (await client.post("/v1/calibrations", json=_body())).json()
    early = await client.post(f"/v1/calibrations/{run['id']}/activate")
    assert early.status_code == 409 and "queued" in early.json()["detail"]

    key = await make_key(settings, tenant="clinic-b", scopes=[Scope.SESSIONS_WRITE])
    async for other in open_client(app, api_key=key):
        assert (await other.get("/v1/calibrations")).status_code == 403
        assert (await other.post("/v1/calibrations", json=_body())).status_code == 403


async def test_the_openapi_document_has_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    create = schema["components"]["schemas"]["CalibrationCreate"]
    assert create["additionalProperties"] is False and create["examples"]
    assert "/v1/calibrations/{calibration_id}/activate" in schema["paths"]


def test_estimation_dataset_dir_is_under_the_data_dir(tmp_path: Path) -> None:
    from app.calibrations.service import resolve_dataset

    write_dataset(tmp_path / "datasets" / "mine.jsonl", n=2)
    assert resolve_dataset("mine", tmp_path) == (tmp_path / "datasets" / "mine.jsonl").resolve()
    assert resolve_dataset("imedqa_dev", tmp_path).name == "imedqa_dev.jsonl"
