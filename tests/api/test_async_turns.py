"""Async turns (``Prefer: respond-async``) on real PostgreSQL and SQLite, scripted posteriors.

202 with a Location to poll, the poll's reply equal to the synchronous one, idempotent
replays, tenants kept apart, the SSE progress stream, failures as the synchronous problem,
and abandoned jobs (a process that stopped) that never leave a half-applied turn. The same
flow against the real vLLM server is in tests/sessions/test_sessions_llm.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from typing import Any, cast

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.db.base import utcnow
from app.db.engine import create_engine
from app.db.models import InterviewSession, TurnJob
from app.engine.progress import scoring_progress_var
from app.engine.types import CaseContext, History
from app.errors import UpstreamBadOutputError
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import QUESTIONS, _body, _provider
from tests.conftest import make_key, open_client
from tests.engine.scripted import ScriptedProvider

ASYNC = {"Prefer": "respond-async"}


class GatedProvider(ScriptedProvider):
    """Scores like the gateway, one history at a time (telling the engine each), once
    ``gate`` opens; ``fail`` makes the scoring fail as a bad LLM output would."""

    def __init__(self) -> None:
        base = _provider()
        super().__init__(
            table={k: list(v) for k, v in base.table.items()},
            default_answers=base.default_answers,
            proposals=QUESTIONS,
        )
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        tell = scoring_progress_var.get()
        await self.gate.wait()
        if self.fail:
            raise UpstreamBadOutputError("LLM server returned no letter logprobs")
        for done in range(1, len(histories) + 1):
            if tell is not None:
                tell(done, len(histories))
            await asyncio.sleep(0.01)
        return await super().label_posteriors(
            case=case, histories=histories, inquiry=inquiry, labels=labels
        )


@pytest.fixture
def provider() -> GatedProvider:
    return GatedProvider()


@pytest.fixture
async def app(settings: Settings, provider: GatedProvider) -> FastAPI:
    return create_app(settings, provider=provider)


async def _poll(client: httpx.AsyncClient, location: str) -> httpx.Response:
    for _ in range(500):
        response = await client.get(location)
        if response.status_code != 202:
            return response
        assert response.json()["status"] == "running"
        await asyncio.sleep(0.02)
    raise AssertionError("the turn job never finished")


async def _submit(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    response = await client.post(path, json=body, headers={**ASYNC, **headers})
    assert response.status_code == 202, response.text
    assert response.headers["preference-applied"] == "respond-async"
    assert response.headers["location"] == f"/v1/turn-jobs/{response.json()['id']}"
    return response


async def _count(settings: Settings, model: type[Any]) -> int:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(model)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


def _shape(reply: dict[str, Any]) -> dict[str, Any]:
    """A reply without what differs between two sessions (ids), for comparing shapes."""
    reply = json.loads(json.dumps(reply))
    reply.pop("id")
    if reply["next_question"]:
        reply["next_question"].pop("id")
    return reply


async def test_create_and_answer_async_reply_as_the_synchronous_calls(
    client: httpx.AsyncClient,
) -> None:
    sync_created = await client.post("/v1/sessions", json=_body(policy="random"))
    accepted = await _submit(client, "/v1/sessions", _body(policy="random"))
    job = accepted.json()
    assert job["kind"] == "create" and job["status"] == "running"
    assert job["events"] == f"{job['location']}/events"
    done = await _poll(client, accepted.headers["location"])
    assert done.status_code == 200, done.text
    assert done.headers["etag"] == '"1"'
    created = done.json()
    assert set(created) == set(sync_created.json())
    assert created["status"] == "active" and created["step"] == 0

    question = created["next_question"]
    answer = {"question_id": question["id"], "answer": "no"}
    accepted = await _submit(client, f"/v1/sessions/{created['id']}/answers", answer)
    assert accepted.json()["session_id"] == created["id"]
    done = await _poll(client, accepted.headers["location"])
    assert done.status_code == 200, done.text
    assert done.headers["etag"] == '"2"'
    answered = done.json()
    assert answered["step"] == 1 and answered["version"] == 2

    # The same answer synchronously on the synchronous twin: the same reply, field for field
    # (both sessions ask the same bank-free random questions from their own seeds).
    twin = sync_created.json()
    sync_answer = await client.post(
        f"/v1/sessions/{twin['id']}/answers",
        json={"question_id": twin["next_question"]["id"], "answer": "no"},
    )
    assert sync_answer.status_code == 200
    assert set(sync_answer.json()) == set(answered)
    assert _shape(sync_answer.json())["differential"].keys() == answered["differential"].keys()
    detail = (await client.get(f"/v1/sessions/{created['id']}")).json()
    assert [t["answer"] for t in detail["transcript"]] == ["no", None]


async def test_without_the_preference_nothing_changes(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions", json=_body(), headers={"Prefer": "return=minimal"})
    assert response.status_code == 201 and "preference-applied" not in response.headers


async def test_idempotent_replay_is_the_same_job_and_one_turn(
    client: httpx.AsyncClient, provider: GatedProvider, settings: Settings
) -> None:
    provider.gate.clear()
    first = await _submit(client, "/v1/sessions", _body(), **{"Idempotency-Key": "open-1"})
    again = await _submit(client, "/v1/sessions", _body(), **{"Idempotency-Key": "open-1"})
    assert again.json()["id"] == first.json()["id"]  # running: the same job, not a second
    other = await client.post(
        "/v1/sessions", json=_body(alpha=0.2), headers={**ASYNC, "Idempotency-Key": "open-1"}
    )
    assert other.status_code == 422 and "different request body" in other.json()["detail"]
    provider.gate.set()
    session = (await _poll(client, first.headers["location"])).json()
    after = await _submit(client, "/v1/sessions", _body(), **{"Idempotency-Key": "open-1"})
    assert after.json()["id"] == first.json()["id"]  # done: still the same job
    assert (await _poll(client, after.headers["location"])).json() == session
    assert await _count(settings, InterviewSession) == 1

    path = f"/v1/sessions/{session['id']}/answers"
    answer = {"question_id": session["next_question"]["id"], "answer": "yes"}
    one = await _submit(client, path, answer, **{"Idempotency-Key": "a-1"})
    two = await _submit(client, path, answer, **{"Idempotency-Key": "a-1"})
    assert one.json()["id"] == two.json()["id"]
    reply = (await _poll(client, one.headers["location"])).json()
    # A synchronous resend with the key replays the same turn; If-Match of the old version
    # does not matter to a replay, as without the preference.
    sync = await client.post(
        path, json=answer, headers={"Idempotency-Key": "a-1", "If-Match": '"1"'}
    )
    assert sync.status_code == 200 and sync.json() == reply
    three = await _submit(client, path, answer, **{"Idempotency-Key": "a-1"})
    assert three.json()["id"] == one.json()["id"]
    detail = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert detail["step"] == 1 and [t["answer"] for t in detail["transcript"]] == ["yes", None]


async def test_checks_without_llm_work_are_answered_at_once(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    session = (await client.post("/v1/sessions", json=_body())).json()
    path = f"/v1/sessions/{session['id']}/answers"
    stale = await client.post(
        path, json={"question_id": str(uuid.uuid4()), "answer": "x"}, headers=ASYNC
    )
    assert stale.status_code == 409 and stale.headers["content-type"].startswith(
        "application/problem+json"
    )
    answer = {"question_id": session["next_question"]["id"], "answer": "x"}
    moved = await client.post(path, json=answer, headers={**ASYNC, "If-Match": '"7"'})
    assert moved.status_code == 412
    missing = await client.post(f"/v1/sessions/{uuid.uuid4()}/answers", json=answer, headers=ASYNC)
    assert missing.status_code == 404
    invalid = await client.post("/v1/sessions", json=_body(alpha=2), headers=ASYNC)
    assert invalid.status_code == 422
    assert await _count(settings, TurnJob) == 0


async def test_another_tenants_job_is_404(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = await _submit(client, "/v1/sessions", _body())
    await _poll(client, accepted.headers["location"])
    other_key = await make_key(settings, tenant="clinic-b")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://pursuit.test",
        headers={"Authorization": f"Bearer {other_key}"},
    ) as other:
        for path in (accepted.headers["location"], f"{accepted.headers['location']}/events"):
            response = await other.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(f"/v1/turn-jobs/{uuid.uuid4()}")).status_code == 404


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def _stream(client: httpx.AsyncClient, location: str) -> httpx.Response:
    return await client.get(f"{location}/events")


async def test_sse_progress_in_order_ending_with_done(
    client: httpx.AsyncClient, provider: GatedProvider
) -> None:
    provider.gate.clear()
    accepted = await _submit(client, "/v1/sessions", _body(n_candidate_questions=4))
    location = accepted.headers["location"]
    stream = asyncio.create_task(_stream(client, location))
    # The turn now waits at the scoring stage, long enough for a heartbeat to store it.
    await asyncio.sleep(2.3)
    running = await client.get(location)
    assert running.status_code == 202
    assert running.json()["progress"]["stage"] == "scoring"
    provider.gate.set()
    response = await stream
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == (
        "done",
        {"status": "succeeded", "status_code": 201, "location": location},
    )
    progress = [data for name, data in events[:-1]]
    assert all(name == "progress" for name, _ in events[:-1])
    order = ["questions", "answers", "scoring"]
    keys = [(order.index(p["stage"]), p["done"]) for p in progress]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    last = progress[-1]
    assert last["stage"] == "scoring" and last["done"] == last["total"] == 8  # 4 x 2 answers
    assert last["message"] == "scored 8 of 8 candidate answers"
    assert any(p["stage"] == "scoring" and 0 < p["done"] < 8 for p in progress)
    # Counts only: no question, answer or patient text in the stream.
    assert not any(q in response.text for q in QUESTIONS) and "fever" not in response.text
    # A stream opened after the end is just the done event.
    assert [name for name, _ in _events((await _stream(client, location)).text)] == ["done"]


async def test_a_failed_turn_polls_as_the_synchronous_problem(
    client: httpx.AsyncClient, provider: GatedProvider, settings: Settings
) -> None:
    provider.fail = True
    sync = await client.post("/v1/sessions", json=_body())
    accepted = await _submit(client, "/v1/sessions", _body(), **{"Idempotency-Key": "k"})
    failed = await _poll(client, accepted.headers["location"])
    assert failed.status_code == sync.status_code == 502
    assert failed.headers["content-type"].startswith("application/problem+json")
    problem, expected = failed.json(), sync.json()
    assert {k: problem[k] for k in ("type", "title", "status", "detail")} == {
        k: expected[k] for k in ("type", "title", "status", "detail")
    }
    assert problem["request_id"] == accepted.headers["x-request-id"]
    events = _events((await _stream(client, accepted.headers["location"])).text)
    assert events == [
        (
            "done",
            {"status": "failed", "status_code": 502, "location": accepted.headers["location"]},
        )
    ]
    assert await _count(settings, InterviewSession) == 0
    # A failed job may be retried with its key: the same job runs again.
    provider.fail = False
    again = await _submit(client, "/v1/sessions", _body(), **{"Idempotency-Key": "k"})
    assert again.json()["id"] == accepted.json()["id"]
    assert (await _poll(client, again.headers["location"])).status_code == 200


async def _age_job(settings: Settings, job_id: str, **values: Any) -> None:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(TurnJob).where(TurnJob.id == uuid.UUID(job_id)).values(**values)
            )
    finally:
        await engine.dispose()


async def test_a_job_whose_process_died_is_abandoned_never_half_applied(
    app: FastAPI, client: httpx.AsyncClient, provider: GatedProvider, settings: Settings
) -> None:
    session = (await client.post("/v1/sessions", json=_body())).json()
    path = f"/v1/sessions/{session['id']}/answers"
    answer = {"question_id": session["next_question"]["id"], "answer": "yes"}
    provider.gate.clear()
    accepted = await _submit(client, path, answer, **{"Idempotency-Key": "crash"})
    job_id = accepted.json()["id"]
    await asyncio.sleep(0.1)
    # As another process sees a job whose process stopped: another owner, a stale heartbeat.
    await _age_job(
        settings, job_id, owner="gone:1:dead", heartbeat_at=utcnow() - timedelta(hours=1)
    )
    second = create_app(settings, provider=provider)
    async for elsewhere in open_client(second, api_key=client.headers["authorization"][7:]):
        abandoned = await elsewhere.get(accepted.headers["location"])
        assert abandoned.status_code == 503
        assert abandoned.json()["type"].endswith("/turn-abandoned")
        assert "session is unchanged" in abandoned.json()["detail"]
        assert abandoned.headers["retry-after"] == "1"
    # The original task finishes its LLM work after all: its commit fails, the turn rolls back.
    provider.gate.set()
    await asyncio.sleep(0.3)
    detail = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert detail["step"] == 0 and detail["version"] == 1
    assert (await client.get(accepted.headers["location"])).status_code == 503
    # The client sends it again (same key): the same job runs again and applies once.
    again = await _submit(client, path, answer, **{"Idempotency-Key": "crash"})
    assert again.json()["id"] == job_id
    reply = await _poll(client, again.headers["location"])
    assert reply.status_code == 200 and reply.json()["step"] == 1


async def test_a_poll_or_stream_on_another_process_reads_the_database(
    client: httpx.AsyncClient, provider: GatedProvider, settings: Settings
) -> None:
    provider.gate.clear()
    accepted = await _submit(client, "/v1/sessions", _body())
    location = accepted.headers["location"]
    second = create_app(settings, provider=_provider())
    async for elsewhere in open_client(second, api_key=client.headers["authorization"][7:]):
        second.state.resources.turn_jobs.watch_poll_s = 0.05
        stream = asyncio.create_task(_stream(elsewhere, location))
        await asyncio.sleep(2.5)  # a heartbeat (every 2 s) has stored the progress
        running = await elsewhere.get(location)
        assert running.status_code == 202 and running.json()["progress"]["stage"] == "scoring"
        provider.gate.set()
        events = _events((await stream).text)
        assert [name for name, _ in events][-1] == "done"
        assert ("progress", running.json()["progress"]) in events
        assert (await elsewhere.get(location)).status_code == 200


async def test_deleting_the_session_erases_its_jobs(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = await _submit(client, "/v1/sessions", _body())
    session = (await _poll(client, accepted.headers["location"])).json()
    assert (await client.delete(f"/v1/sessions/{session['id']}")).status_code == 204
    assert await _count(settings, TurnJob) == 0
    assert (await client.get(accepted.headers["location"])).status_code == 404


async def test_shutdown_abandons_running_jobs(
    app: FastAPI, api_key: str, provider: GatedProvider, settings: Settings
) -> None:
    provider.gate.clear()
    clients = cast(AsyncGenerator[httpx.AsyncClient, None], open_client(app, api_key=api_key))
    async for client in clients:
        accepted = await _submit(client, "/v1/sessions", _body())
        await asyncio.sleep(0.1)
        break
    await clients.aclose()  # the lifespan ends: the server stops
    async for client in open_client(create_app(settings, provider=provider), api_key=api_key):
        response = await client.get(accepted.headers["location"])
        assert response.status_code == 503 and response.json()["type"].endswith("turn-abandoned")
    assert await _count(settings, InterviewSession) == 0
