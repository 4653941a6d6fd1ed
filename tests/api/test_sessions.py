"""The sessions API on real PostgreSQL and SQLite, with a scripted posterior provider.

The same flows run against the real vLLM server in tests/sessions/test_sessions_llm.py.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.conformal.rank import conformal_rank
from app.db.engine import create_engine
from app.db.models import IdempotencyRecord, InterviewSession, Turn
from app.engine.types import WeightedAnswer
from app.main import create_app
from app.settings import Settings
from tests.calibrations.fakes import grouped_result
from tests.conftest import (
    DEFAULT_SESSION_POLICY,
    insert_calibration,
    insert_scripted_calibration,
    open_client,
)
from tests.engine.scripted import ScriptedProvider

LABELS = ["Meningitis", "Migraine", "Influenza", "Sinusitis"]
QUESTIONS = ["Do you have a stiff neck?", "Is light painful?", "Any cough?", "Any rash?"]


def _provider() -> ScriptedProvider:
    yes, no = WeightedAnswer("yes", 0.5), WeightedAnswer("no", 0.5)
    return ScriptedProvider(
        table={
            (): [0.35, 0.3, 0.2, 0.15],
            ((QUESTIONS[0], "yes"),): [0.9, 0.05, 0.03, 0.02],
            ((QUESTIONS[0], "no"),): [0.05, 0.5, 0.3, 0.15],
            ((QUESTIONS[1], "yes"),): [0.3, 0.6, 0.05, 0.05],
            ((QUESTIONS[1], "no"),): [0.4, 0.1, 0.3, 0.2],
        },
        default_answers=(yes, no),
        proposals=QUESTIONS,
    )


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient": {"summary": "34-year-old with fever and headache", "age": 34, "sex": "female"},
        "inquiry": "What is the most likely diagnosis?",
        "candidates": LABELS,
        "alpha": 0.1,
        "policy": "cip",
        "max_questions": 3,
        # The scripted provider generates questions: not the defaults (a bank, 4 x 2).
        "question_source": "generated",
        "n_candidate_questions": 8,
        "n_answers": 4,
        "stop_on_no_gain": True,
    }
    body.update(overrides)
    return body


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
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(model))).scalar_one()
            )
    finally:
        await engine.dispose()


async def _create(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/sessions", json=_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_returns_first_question_and_uncalibrated_differential(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/sessions", json=_body())
    assert response.status_code == 201, response.text
    session = response.json()
    assert response.headers["location"] == f"/v1/sessions/{session['id']}"
    assert response.headers["etag"] == '"1"'
    assert session["status"] == "active" and session["step"] == 0
    assert session["should_stop"] is False and session["stop_reason"] is None
    assert session["next_question"]["text"] in QUESTIONS
    differential = session["differential"]
    assert differential["calibrated"] is False and differential["calibration_id"] is None
    assert "Uncalibrated" in differential["guarantee"]
    assert differential["top"] == "Meningitis"
    # Nominal set: fewest top labels with mass >= 0.9 -> 0.35 + 0.3 + 0.2 + 0.15.
    assert [x["label"] for x in differential["labels"]] == LABELS
    assert all(x["p_value"] is None for x in differential["labels"])


async def test_a_whole_interview_then_finalize(client: httpx.AsyncClient) -> None:
    # "random" has no no-gain stop, so the scripted interview runs to its budget.
    session = await _create(client, policy="random")
    asked = []
    for step in range(3):
        question = session["next_question"]
        assert question is not None, session
        asked.append(question["text"])
        response = await client.post(
            f"/v1/sessions/{session['id']}/answers",
            json={"question_id": question["id"], "answer": "no"},
        )
        assert response.status_code == 200, response.text
        session = response.json()
        assert session["step"] == step + 1
    assert len(set(asked)) == 3
    assert session["should_stop"] is True and session["stop_reason"] == "budget"
    assert session["status"] == "stopped" and session["next_question"] is None

    final = await client.post(f"/v1/sessions/{session['id']}/finalize")
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "finalized"
    assert final.json()["final_answer"] == session["differential"]["top"]
    assert final.json()["final_set"] == [x["label"] for x in session["differential"]["labels"]]

    detail = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert detail["status"] == "finalized"
    assert [t["question"]["text"] for t in detail["transcript"][:3]] == asked
    assert [t["answer"] for t in detail["transcript"]] == ["no", "no", "no", None]
    assert [t["differential"]["step"] for t in detail["transcript"]] == [0, 1, 2, 3]
    assert detail["patient"]["summary"] == "34-year-old with fever and headache"


async def test_cip_chooses_the_question_with_the_smallest_expected_set(
    client: httpx.AsyncClient,
) -> None:
    session = await _create(client)
    question = session["next_question"]
    # Q0 splits into a singleton-ish "yes" (0.9 -> set {Meningitis, ...}) and a spread "no".
    assert question["text"] == QUESTIONS[0]
    sizes = [
        question["expected_set_size"],
        *(r["expected_set_size"] for r in question["runner_ups"]),
    ]
    assert sizes == sorted(sizes)


async def test_answering_another_question_is_409_and_changes_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    session = await _create(client)
    response = await client.post(
        f"/v1/sessions/{session['id']}/answers",
        json={"question_id": str(uuid.uuid4()), "answer": "yes"},
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/sessions/{session['id']}")).json()["step"] == 0
    assert await _count(settings, Turn) == 1


async def test_idempotency_key_replays_and_rejects_other_bodies(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    session = await _create(client)
    url = f"/v1/sessions/{session['id']}/answers"
    body = {"question_id": session["next_question"]["id"], "answer": "yes"}
    first = await client.post(url, json=body, headers={"Idempotency-Key": "k-1"})
    again = await client.post(url, json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["step"] == 1

    other = await client.post(
        url, json={**body, "answer": "no"}, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422
    assert await _count(settings, Turn) == 2
    assert await _count(settings, IdempotencyRecord) == 1


async def test_stale_if_match_is_412(client: httpx.AsyncClient) -> None:
    session = await _create(client)
    url = f"/v1/sessions/{session['id']}/answers"
    body = {"question_id": session["next_question"]["id"], "answer": "yes"}
    stale = await client.post(url, json=body, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    fresh = await client.post(url, json=body, headers={"If-Match": '"1"'})
    assert fresh.status_code == 200 and fresh.headers["etag"] == '"2"'


async def test_concurrent_answers_never_both_apply(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    session = await _create(client)
    url = f"/v1/sessions/{session['id']}/answers"
    qid = session["next_question"]["id"]
    responses = await asyncio.gather(
        *(client.post(url, json={"question_id": qid, "answer": a}) for a in ("yes", "no", "yes"))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409], [r.text for r in responses]
    detail = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert detail["step"] == 1
    assert await _count(settings, Turn) == 2


@pytest.mark.parametrize(
    "body",
    [
        _body(patient={"summary": "   "}),
        _body(patient={"summary": "x" * 8001}),
        _body(candidates=["Flu", "flu "]),
        _body(candidates=["only one"]),
        _body(candidates=[f"L{i}" for i in range(27)]),
        _body(alpha=0.5),
        _body(alpha=0),
        _body(policy="oracle"),
        _body(question_source="bank", question_bank=[]),
        _body(question_source="bank", question_bank_name="cardiology"),
        _body(question_bank_name="neurology"),  # a bank with generated questions
        _body(max_questions=-1),
        _body(unexpected="field"),
        # PostgreSQL cannot store U+0000 (it was a 500 there); SQLite can: both refuse it.
        _body(patient={"summary": "fever\x00 and headache"}),
        _body(candidates=["Meningitis", "Migraine\x00"]),
    ],
)
async def test_bad_input_is_a_422_problem_and_writes_nothing(
    client: httpx.AsyncClient, settings: Settings, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await _count(settings, InterviewSession) == 0


@pytest.mark.parametrize(
    ("body", "field", "secret"),
    [
        (_body(candidates=["Mrs Jones's lupus", "mrs jones's  LUPUS"]), "candidates", "jones"),
        (
            _body(question_source="bank", question_bank_name="patient-jane-doe"),
            "question_bank_name",
            "jane",
        ),
    ],
)
async def test_a_422_names_the_field_and_never_echoes_the_value(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, secret: str
) -> None:
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text
    assert secret not in response.text.casefold()


async def test_malformed_json_and_unknown_session(client: httpx.AsyncClient) -> None:
    malformed = await client.post(
        "/v1/sessions", content=b'{"patient": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    missing = await client.get(f"/v1/sessions/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    not_a_uuid = await client.get("/v1/sessions/not-a-uuid")
    assert not_a_uuid.status_code == 422


async def test_an_answer_with_a_nul_character_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    session = await _create(client)
    response = await client.post(
        f"/v1/sessions/{session['id']}/answers",
        json={"question_id": session["next_question"]["id"], "answer": "yes\x00"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "answer"]
    assert (await client.get(f"/v1/sessions/{session['id']}")).json()["step"] == 0


async def test_delete_erases_the_patient_data(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    session = await _create(client)
    await client.post(
        f"/v1/sessions/{session['id']}/answers",
        json={"question_id": session["next_question"]["id"], "answer": "yes"},
        headers={"Idempotency-Key": "del-1"},
    )
    response = await client.delete(f"/v1/sessions/{session['id']}")
    assert response.status_code == 204
    assert (await client.get(f"/v1/sessions/{session['id']}")).status_code == 404
    for model in (InterviewSession, Turn, IdempotencyRecord):
        assert await _count(settings, model) == 0
    audit = (await client.get("/v1/audit", params={"resource_id": session["id"]})).json()
    assert {e["action"] for e in audit["events"]} >= {"session.create", "session.delete"}


async def test_a_cached_session_state_is_never_stale_across_processes(
    settings: Settings, api_key: str
) -> None:
    """Two app instances on one database, as two workers: what one caches for its GETs never
    hides the other's answer or erasure, and every read is audited, cached or not."""
    first, second = (
        create_app(settings, provider=_provider()),
        create_app(settings, provider=_provider()),
    )
    async for a in open_client(first, api_key=api_key):
        async for b in open_client(second, api_key=api_key):
            session = await _create(a)
            url = f"/v1/sessions/{session['id']}"
            reads = [await a.get(url) for _ in range(3)]  # the 2nd and 3rd from a's cache
            assert {r.json()["step"] for r in reads} == {0}
            assert reads[0].json() == reads[2].json()
            answered = await b.post(
                f"{url}/answers",
                json={"question_id": session["next_question"]["id"], "answer": "yes"},
            )
            assert answered.status_code == 200, answered.text
            after = await a.get(url)
            assert after.json()["step"] == 1 and after.headers["etag"] == '"2"'
            assert [t["answer"] for t in after.json()["transcript"]] == ["yes", None]
            assert (await b.delete(url)).status_code == 204
            assert (await a.get(url)).status_code == 404
            audit = (await a.get("/v1/audit", params={"resource_id": session["id"]})).json()
    outcomes = [e["outcome"] for e in audit["events"] if e["action"] == "session.read"]
    assert sorted(outcomes) == ["not_found"] + ["success"] * 4


async def test_a_restart_loses_nothing(settings: Settings, api_key: str) -> None:
    async for client in open_client(create_app(settings, provider=_provider()), api_key=api_key):
        session = await _create(client)
    async for client in open_client(create_app(settings, provider=_provider()), api_key=api_key):
        response = await client.post(
            f"/v1/sessions/{session['id']}/answers",
            json={"question_id": session["next_question"]["id"], "answer": "yes"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["step"] == 1


async def test_without_an_llm_server_create_is_503(settings: Settings, api_key: str) -> None:
    async for client in open_client(create_app(settings), api_key=api_key):
        response = await client.post("/v1/sessions", json=_body())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert await _count(settings, InterviewSession) == 0


@pytest.fixture
async def calibration(settings: Settings) -> tuple[str, list[float]]:
    """An active calibration for the scripted provider, cip, alpha 0.1."""
    return await insert_scripted_calibration(settings)


async def test_a_matching_calibration_gives_a_guaranteed_set(
    client: httpx.AsyncClient, calibration: tuple[str, list[float]]
) -> None:
    calibration_id, taus = calibration
    session = await _create(client)
    differential = session["differential"]
    assert differential["calibrated"] is True
    assert differential["calibration_id"] == calibration_id == session["calibration_id"]
    assert differential["calibration_n"] == 40
    assert (
        "at least 90%" in differential["guarantee"]
        and "not a diagnosis" in differential["guarantee"]
    )
    prior = dict(zip(LABELS, [0.35, 0.3, 0.2, 0.15], strict=True))
    expected = {label for label, p in prior.items() if 1 - p <= taus[0]}
    assert {x["label"] for x in differential["labels"]} == expected
    assert all(x["p_value"] is not None for x in differential["all_labels"])

    other_alpha = await _create(client, alpha=0.2)
    assert other_alpha["differential"]["calibrated"] is False


# -- which calibration serves: the question policy, the horizon, the patient's group --------


async def _answer(client: httpx.AsyncClient, session: dict[str, Any], text: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/sessions/{session['id']}/answers",
        json={"question_id": session["next_question"]["id"], "answer": text},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("params", "session", "mismatch"),
    [
        ({"n_answers": 2}, {}, {"field": "n_answers", "session": 4, "calibration": 2}),
        (
            {"n_questions": 3},
            {},
            {"field": "n_candidate_questions", "session": 8, "calibration": 3},
        ),
        (
            {"question_source": "bank", "bank": "neurology"},
            {},
            {"field": "question_source", "session": "generated", "calibration": "bank"},
        ),
        (
            {"question_source": "bank", "bank": "neurology"},
            {"question_source": "bank", "question_bank_name": "pediatrics"},
            {"field": "question_bank_name", "session": "pediatrics", "calibration": "neurology"},
        ),
        (
            {"answer_source": "estimation"},
            {},
            {"field": "answer_source", "session": "llm", "calibration": "estimation"},
        ),
        (
            {"specialty": "Neurology"},
            {"specialty": "Pediatrics"},
            {"field": "specialty", "session": "Pediatrics", "calibration": "Neurology"},
        ),
    ],
    ids=["n_answers", "n_questions", "source", "bank", "estimation", "specialty"],
)
async def test_a_calibration_of_another_question_policy_does_not_serve_and_says_why(
    client: httpx.AsyncClient,
    settings: Settings,
    params: dict[str, Any],
    session: dict[str, Any],
    mismatch: dict[str, Any],
) -> None:
    # Server-side details of the calibration that must never reach a session's reply.
    secret = {"dataset": "/srv/secret/cases.jsonl", "requested_by": {"key_id": "k-secret"}}
    calibration_id, _ = await insert_scripted_calibration(settings, **params, **secret)
    created = await _create(client, **session)
    assert created["calibration_id"] is None
    replies = [created]
    if created["next_question"] is not None:  # a later turn says it again
        replies.append(await _answer(client, created, "no"))
    for reply in replies:
        differential = reply["differential"]
        assert differential["calibrated"] is False and differential["calibration_id"] is None
        assert differential["coverage_scope"] is None
        assert differential["calibration_mismatches"] == [mismatch]
        assert mismatch["field"] in differential["calibration_note"]
        assert differential["guarantee"].startswith("Uncalibrated")
        assert mismatch["field"] in differential["guarantee"]
        # The nominal set, as without any calibration.
        assert all(x["p_value"] is None for x in differential["all_labels"])
        text = str(reply)
        assert "secret" not in text and calibration_id not in text


async def test_the_same_question_policy_is_served_by_its_calibration(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    bank = {"question_source": "bank", "bank": "neurology", "n_questions": 4, "n_answers": 2}
    calibration_id, _ = await insert_scripted_calibration(settings, **bank)
    session = await _create(
        client,
        question_source="bank",
        question_bank_name="neurology",
        n_candidate_questions=4,
        n_answers=2,
        stop_on_no_gain=False,  # stop rules end an interview, they do not change its questions
        spread_epsilon=0.5,
    )
    differential = session["differential"]
    assert differential["calibrated"] is True and differential["calibration_id"] == calibration_id
    assert differential["coverage_scope"] == "pooled" and differential["calibration_note"] is None
    assert (
        differential["calibration_mismatches"] == [] and differential["calibration_max_step"] == 3
    )


async def test_no_active_calibration_at_all_is_said_too(client: httpx.AsyncClient) -> None:
    differential = (await _create(client))["differential"]
    assert differential["calibrated"] is False and differential["calibration_mismatches"] == []
    assert differential["calibration_note"] == (
        "no calibration is active for this model and prompt version"
    )
    assert differential["calibration_note"] in differential["guarantee"]


async def test_steps_beyond_the_calibrated_ones_get_no_calibrated_set(
    client: httpx.AsyncClient, calibration: tuple[str, list[float]]
) -> None:
    calibration_id, _ = calibration  # steps 0..3
    session = await _create(client, max_questions=5, stop_on_no_gain=False)
    steps = [session]
    while steps[-1]["next_question"] is not None:
        # An answer the scripted model has no row for: the prior, so never a singleton.
        steps.append(await _answer(client, steps[-1], "unclear"))
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4]  # the 4 questions run out at step 4
    for reply in steps[:4]:
        assert reply["differential"]["calibrated"] is True
        assert reply["differential"]["calibration_id"] == calibration_id
    beyond = steps[4]["differential"]
    assert steps[4]["calibration_id"] == calibration_id  # the session's calibration, ...
    assert beyond["calibrated"] is False and beyond["calibration_id"] is None  # ... not this set's
    assert beyond["calibration_n"] is None and beyond["calibration_max_step"] == 3
    assert beyond["guarantee"].startswith("Uncalibrated at step 4")
    assert "steps 0 to 3 only" in beyond["guarantee"]
    assert "beyond the calibrated steps 0..3" in beyond["calibration_note"]
    # The nominal set at the model's own 90%, not "every candidate" labelled calibrated.
    assert [x["label"] for x in beyond["labels"]] == LABELS
    assert all(x["p_value"] is None for x in beyond["all_labels"])


async def test_a_data_dependent_stop_is_stated_with_the_guarantee(
    client: httpx.AsyncClient, calibration: tuple[str, list[float]]
) -> None:
    session = await _create(client)
    assert session["next_question"]["text"] == QUESTIONS[0]
    stopped = await _answer(client, session, "yes")  # posterior 0.9: a singleton set
    assert stopped["stop_reason"] == "singleton"
    differential = stopped["differential"]
    assert differential["calibrated"] is True and differential["set_size"] == 1
    assert "data-dependent rule (singleton)" in differential["guarantee"]
    assert "data-dependent" not in session["differential"]["guarantee"]


GROUPED_PARAMS = {**DEFAULT_SESSION_POLICY, "group_by": "specialty"}


async def test_a_declared_specialty_gets_its_own_thresholds_with_per_group_coverage(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    calibration_id = await insert_calibration(
        settings, result=result, params=GROUPED_PARAMS, group_keys=keys
    )
    session = await _create(client, specialty="pediatrics", max_questions=2)
    for reply in (session, await _answer(client, session, "unclear")):
        differential = reply["differential"]
        step = differential["step"]
        own = sorted(
            s for s, g in zip(result["scores"][step], keys, strict=True) if g == "Pediatrics"
        )
        assert differential["calibrated"] is True
        assert differential["calibration_id"] == calibration_id
        assert differential["coverage_scope"] == "group"
        assert differential["calibration_group"] == "Pediatrics"
        assert differential["calibration_n"] == 20
        assert differential["threshold"] == pytest.approx(own[conformal_rank(20, 0.1) - 1])
        assert differential["threshold"] != pytest.approx(result["thresholds"][step])
        assert "for patients of specialty 'Pediatrics'" in differential["guarantee"]
        assert "coverage per specialty" in differential["guarantee"]
        assert all(x["p_value"] is not None for x in differential["all_labels"])

    # Without a declared specialty: the pooled thresholds, marginal coverage.
    pooled = (await _create(client))["differential"]
    assert pooled["coverage_scope"] == "pooled" and pooled["calibration_n"] == 50
    assert pooled["threshold"] == pytest.approx(result["thresholds"][0])
    assert "per specialty" not in pooled["guarantee"]


async def test_a_specialty_too_small_for_its_own_threshold_gets_the_pooled_one_said_so(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 5})  # n >= 9 needed at alpha 0.1
    await insert_calibration(settings, result=result, params=GROUPED_PARAMS, group_keys=keys)
    for specialty, why in [
        ("Pediatrics", "'Pediatrics' has 5 calibration cases, too few"),
        ("Cardiology", "'Cardiology' has no calibration cases"),
    ]:
        differential = (await _create(client, specialty=specialty))["differential"]
        assert differential["calibrated"] is True and differential["coverage_scope"] == "pooled"
        assert differential["calibration_group"] is None and differential["calibration_n"] == 35
        assert differential["threshold"] == pytest.approx(result["thresholds"][0])
        assert why in differential["calibration_note"]
        assert "not per specialty" in differential["calibration_note"]
        assert differential["calibration_note"] in differential["guarantee"]


async def test_when_no_threshold_is_finite_the_set_is_every_candidate_said_so(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    result, keys = grouped_result({"Neurology": 5, "Pediatrics": 3})  # pooled n = 8 < 9 too
    await insert_calibration(settings, result=result, params=GROUPED_PARAMS, group_keys=keys)
    differential = (await _create(client, specialty="Neurology"))["differential"]
    assert differential["calibrated"] is True and differential["threshold"] is None
    assert [x["label"] for x in differential["labels"]] == LABELS  # every candidate
    assert differential["guarantee"].startswith("Calibrated on too few cases (8)")
    assert "'Neurology' has 5 calibration cases, too few" in differential["guarantee"]


async def test_a_specialty_against_an_ungrouped_calibration_is_told_coverage_is_pooled(
    client: httpx.AsyncClient, calibration: tuple[str, list[float]]
) -> None:
    differential = (await _create(client, specialty="Neurology"))["differential"]
    assert differential["calibrated"] is True and differential["coverage_scope"] == "pooled"
    assert "no per-specialty thresholds" in differential["calibration_note"]
    assert "no per-specialty thresholds" in differential["guarantee"]
