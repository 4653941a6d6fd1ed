"""Selection calibrations through the API: made, named by a C-IP display run, served."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.calibrations.repository import CalibrationRepository
from tests.engine.scripted import ScriptedProvider
from tests.worker.conftest import Maker, make_worker

BANK = {"question_source": "bank", "question_bank_name": "internal_medicine"}


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": "tiny",
        "alpha": 0.1,
        "max_questions": 2,
        "cases": 9,
        **BANK,
        "n_candidate_questions": 3,
        "n_answers": 2,
        "concurrency": 1,
    }
    body.update(overrides)
    return body


async def _run(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider, **overrides: Any
) -> dict[str, Any]:
    response = await client.post("/v1/calibrations", json=_body(**overrides))
    assert response.status_code == 202, response.text
    outcome = await make_worker(maker, provider).run_once()
    assert outcome is not None and outcome.status == "succeeded", outcome
    run: dict[str, Any] = (await client.get(f"/v1/calibrations/{response.json()['id']}")).json()
    return run


async def _session(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "patient": {"summary": "A patient with a fever."},
        "inquiry": "What is the most likely diagnosis?",
        "candidates": ["Influenza", "Measles", "Migraine", "Common cold"],
        "max_questions": 2,
        **BANK,
        "n_candidate_questions": 3,
        "n_answers": 2,
        "stop_on_no_gain": False,
        **overrides,
    }
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def test_a_selection_run_calibrates_random_histories_to_t_plus_one(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    run = await _run(client, maker, provider, purpose="selection", policy="cip")
    assert run["params"]["purpose"] == "selection"
    assert run["policy"] == "random"  # the choice rule is ignored: questions in random order
    assert len(run["result"]["thresholds"]) == 2 + 2  # tau_0 .. tau_{T+1}
    assert run["result"]["n_per_step"] == [9] * 4
    # Its thresholds are for the objective, not for shown sets: it is never served alone.
    refused = await client.post(f"/v1/calibrations/{run['id']}/activate")
    assert refused.status_code == 409, refused.text
    assert "selection" in refused.json()["detail"]
    refused = await client.post("/v1/calibrations", json=_body(purpose="selection", activate=True))
    assert refused.status_code == 422


async def test_a_cip_run_naming_a_selection_run_is_served_with_its_thresholds(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    # Without any calibration: the nominal rule, said in the question.
    before = await _session(client)
    assert before["next_question"]["selection_rule"] == "nominal"
    assert before["next_question"]["selection_calibration_id"] is None

    selection = await _run(client, maker, provider, purpose="selection")
    display = await _run(
        client, maker, provider, policy="cip", selection_calibration_id=selection["id"]
    )
    assert display["params"]["selection_calibration_id"] == selection["id"]
    async with maker() as db:
        row = await CalibrationRepository(db).get(uuid.UUID(display["id"]))
    assert row is not None and row.result is not None
    stored = row.result["selection"]
    assert stored["calibration_id"] == selection["id"]
    assert stored["thresholds"] == selection["result"]["thresholds"]
    activated = await client.post(f"/v1/calibrations/{display['id']}/activate")
    assert activated.status_code == 200, activated.text

    # A session that names no selection takes the calibration's; one that names it too.
    for overrides in ({}, {"selection_calibration_id": selection["id"]}):
        served = await _session(client, **overrides)
        assert served["calibration_id"] == display["id"]
        question = served["next_question"]
        assert question["selection_rule"] == "calibrated"
        assert question["selection_calibration_id"] == selection["id"]
        assert question["objective"] == "set_size"
    # Naming another selection calibration: no calibration applies, the reply says why.
    other = await _session(client, selection_calibration_id=str(uuid.uuid4()))
    assert other["calibration_id"] is None
    assert other["next_question"]["selection_rule"] == "nominal"
    fields = [m["field"] for m in other["differential"]["calibration_mismatches"]]
    assert fields == ["selection_calibration_id"]


async def test_a_display_run_cannot_name_what_is_not_a_disjoint_selection_run(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider
) -> None:
    display = await _run(client, maker, provider, policy="ip")
    named = await client.post(
        "/v1/calibrations", json=_body(policy="cip", selection_calibration_id=display["id"])
    )
    assert named.status_code == 422 and "display calibration" in named.json()["detail"]
    missing = await client.post(
        "/v1/calibrations",
        json=_body(policy="cip", selection_calibration_id=str(uuid.uuid4())),
    )
    assert missing.status_code == 422 and "no selection calibration" in missing.json()["detail"]
    not_cip = await client.post(
        "/v1/calibrations", json=_body(policy="ip", selection_calibration_id=display["id"])
    )
    assert not_cip.status_code == 422

    # 12 cases from the end of the calibration split and 12 from its front share some.
    selection = await _run(client, maker, provider, purpose="selection", cases=12)
    shared = 24 - selection["params"]["splits"]["calibration"]
    assert shared > 0
    overlapping = await client.post(
        "/v1/calibrations",
        json=_body(policy="cip", cases=12, selection_calibration_id=selection["id"]),
    )
    assert overlapping.status_code == 422, overlapping.text
    assert "also cases of selection calibration" in overlapping.json()["detail"]
    assert f"{shared} of this run's cases" in overlapping.json()["detail"]
