"""Listings on real PostgreSQL and SQLite: GET /v1/sessions, /v1/calibrations and /v1/audit.

One cursor scheme for all three (app.pagination): newest first by (timestamp, id), so rows
sharing a timestamp are neither repeated nor skipped across pages; every listing stays
tenant-scoped, and a cursor that is not the listing's own is a 422 problem.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.db.engine import create_engine
from app.db.models import AuditEvent, Calibration, InterviewSession
from app.main import create_app
from app.pagination import Position, encode_cursor
from app.settings import Settings
from tests.api.test_sessions import _body, _provider
from tests.conftest import make_key, open_client
from tests.engine.scripted import ScriptedProvider

SUMMARY_TEXT = "34-year-old with fever and headache"
# Two instants: most rows share the first, so page boundaries fall inside a tie.
TIED = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
EARLIER = TIED - timedelta(minutes=5)


@pytest.fixture
def provider() -> ScriptedProvider:
    return _provider()


@pytest.fixture
async def app(settings: Settings, provider: ScriptedProvider) -> FastAPI:
    return create_app(settings, provider=provider)


async def _insert(settings: Settings, table: type[Any], rows: list[dict[str, Any]]) -> None:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(table), rows)
    finally:
        await engine.dispose()


def _session_row(tenant: str, at: datetime, status: str = "stopped") -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant": tenant,
        "status": status,
        "version": 1,
        "step": 0,
        "created_at": at,
        "updated_at": at,
        "patient_summary": SUMMARY_TEXT,
        "inquiry": "What is the most likely diagnosis?",
        "candidates": ["A", "B"],
        "config": {"policy": "cip"},
        "seed": 1,
        "model": "scripted",
        "prompt_version": "test",
        "stop_reason": "budget" if status == "stopped" else None,
    }


async def _walk(
    client: httpx.AsyncClient, url: str, key: str, *, limit: int, **params: Any
) -> list[list[str]]:
    """Every page's ids, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body[key]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor does not advance"


def _newest_first(rows: list[dict[str, Any]], at: str = "created_at") -> list[str]:
    ordered = sorted(rows, key=lambda r: (r[at], r["id"]), reverse=True)
    return [str(r["id"]) for r in ordered]


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["request_id"]
    return body


# -- sessions ---------------------------------------------------------------------------------


async def test_sessions_list_newest_first_as_summaries_without_patient_text(
    client: httpx.AsyncClient,
) -> None:
    created = []
    for _ in range(3):
        response = await client.post("/v1/sessions", json=_body())
        assert response.status_code == 201, response.text
        created.append(response.json())
    response = await client.get("/v1/sessions")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["id"] for item in body["items"]] == [s["id"] for s in reversed(created)]
    assert body["next_cursor"] is None
    item = body["items"][0]
    assert set(item) == {
        "id",
        "status",
        "step",
        "version",
        "policy",
        "stop_reason",
        "model",
        "prompt_version",
        "calibration_id",
        "created_at",
        "updated_at",
    }
    assert item["status"] == "active" and item["policy"] == "cip" and item["version"] == 1
    # Neither the patient's summary, the inquiry, the candidates nor a question.
    for text in (SUMMARY_TEXT, "most likely diagnosis", "Meningitis", "stiff neck"):
        assert text not in response.text


async def test_sessions_list_filters_by_status(client: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(3):
        ids.append((await client.post("/v1/sessions", json=_body())).json()["id"])
    assert (await client.post(f"/v1/sessions/{ids[1]}/finalize")).status_code == 200

    finalized = (await client.get("/v1/sessions", params={"status": "finalized"})).json()
    assert [i["id"] for i in finalized["items"]] == [ids[1]]
    assert finalized["items"][0]["stop_reason"] == "finalized"
    active = (await client.get("/v1/sessions", params={"status": "active"})).json()
    assert [i["id"] for i in active["items"]] == [ids[2], ids[0]]
    assert (await client.get("/v1/sessions", params={"status": "stopped"})).json()["items"] == []
    _assert_problem(await client.get("/v1/sessions", params={"status": "deleted"}), 422)


async def test_sessions_pages_have_no_duplicates_or_gaps_when_timestamps_tie(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    rows = [_session_row("clinic-a", TIED) for _ in range(7)]
    rows += [_session_row("clinic-a", EARLIER, status="active") for _ in range(3)]
    await _insert(settings, InterviewSession, rows)
    expected = _newest_first(rows)
    for limit in (1, 3, 4, 10):
        pages = await _walk(client, "/v1/sessions", "items", limit=limit)
        flat = [i for page in pages for i in page]
        assert flat == expected, limit
        assert all(len(page) == limit for page in pages[:-1])
    # The filter holds on every page.
    pages = await _walk(client, "/v1/sessions", "items", limit=2, status="active")
    assert [i for page in pages for i in page] == _newest_first(rows[7:])


async def test_sessions_list_is_the_tenants_only_whatever_the_cursor(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient
) -> None:
    mine = [_session_row("clinic-a", TIED) for _ in range(3)]
    theirs = [_session_row("clinic-b", TIED) for _ in range(3)]
    await _insert(settings, InterviewSession, mine + theirs)
    first = (await client.get("/v1/sessions", params={"limit": 1})).json()
    assert first["items"][0]["id"] in {str(r["id"]) for r in mine}

    other_key = await make_key(settings, tenant="clinic-b")
    async for other in open_client(app, api_key=other_key):
        # clinic-a's cursor on clinic-b's key: clinic-b's rows after that position only.
        page = await other.get("/v1/sessions", params={"cursor": first["next_cursor"]})
        assert page.status_code == 200, page.text
        assert {i["id"] for i in page.json()["items"]} <= {str(r["id"]) for r in theirs}
        everything = await _walk(other, "/v1/sessions", "items", limit=2)
        assert [i for p in everything for i in p] == _newest_first(theirs)


async def test_sessions_list_needs_sessions_read(app: FastAPI, settings: Settings) -> None:
    key = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_WRITE])
    async for client in open_client(app, api_key=key):
        _assert_problem(await client.get("/v1/sessions"), 403)
    async for client in open_client(app):
        _assert_problem(await client.get("/v1/sessions"), 401)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage-9f3k",
        "eyJ2IjoxfQ",  # {"v":1}
        encode_cursor("calibrations", Position(TIED, uuid.uuid4())),  # another listing's
        encode_cursor("sessions", Position(TIED, uuid.uuid4())) + "x" * 300,  # too long
        "",
    ],
)
async def test_a_bad_cursor_is_a_422_problem_that_does_not_echo_it(
    client: httpx.AsyncClient, cursor: str
) -> None:
    response = await client.get("/v1/sessions", params={"cursor": cursor})
    body = _assert_problem(response, 422)
    assert "cursor" in body["detail"]
    if cursor:
        assert cursor not in response.text


# -- calibrations -----------------------------------------------------------------------------


def _calibration_row(tenant: str | None, at: datetime, **params: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant": tenant,
        "status": "queued",
        "created_at": at,
        "updated_at": at,
        "model": "scripted",
        "prompt_version": "test",
        "policy": "cip",
        "alpha": 0.1,
        "anytime": False,
        "max_questions": 1,
        "params": {"question_source": "bank", **params},
        "progress_done": 0,
        "progress_total": 10,
        "active": False,
    }


async def test_calibrations_page_by_cursor_tenant_scoped(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    visible = [_calibration_row("clinic-a", TIED) for _ in range(4)]
    visible += [_calibration_row(None, TIED), _calibration_row(None, EARLIER)]  # the platform's
    hidden = [_calibration_row("clinic-b", TIED) for _ in range(3)]
    await _insert(settings, Calibration, visible + hidden)
    for limit in (1, 4, 6):
        pages = await _walk(client, "/v1/calibrations", "calibrations", limit=limit)
        assert [i for page in pages for i in page] == _newest_first(visible), limit
    # Without a cursor, limit alone works as it did.
    body = (await client.get("/v1/calibrations", params={"limit": 2})).json()
    assert len(body["calibrations"]) == 2 and body["next_cursor"]
    session_cursor = encode_cursor("sessions", Position(TIED, uuid.uuid4()))
    _assert_problem(await client.get("/v1/calibrations", params={"cursor": session_cursor}), 422)


async def test_calibrations_show_the_sessions_names_for_runs_stored_with_older_ones(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    old = _calibration_row("clinic-a", TIED, bank="neurology", n_questions=4)
    await _insert(settings, Calibration, [old])
    shown = (await client.get(f"/v1/calibrations/{old['id']}")).json()["params"]
    assert shown["question_bank_name"] == "neurology" and shown["n_candidate_questions"] == 4
    assert "bank" not in shown and "n_questions" not in shown


# -- audit ------------------------------------------------------------------------------------


def _event(tenant: str | None, at: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "occurred_at": at,
        "action": "session.read",
        "resource_type": "session",
        "resource_id": "r-1",
        "outcome": "success",
        "tenant": tenant,
    }


async def test_audit_pages_by_cursor_within_the_tenant(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    mine = [_event("clinic-a", TIED) for _ in range(5)] + [_event("clinic-a", EARLIER)]
    await _insert(settings, AuditEvent, [*mine, *(_event("clinic-b", TIED) for _ in range(3))])
    expected = _newest_first(mine, at="occurred_at")
    for limit in (1, 2, 6):
        # resource_id keeps the audit events these very requests write out of the listing.
        pages = await _walk(client, "/v1/audit", "events", limit=limit, resource_id="r-1")
        assert [i for page in pages for i in page] == expected, limit


async def test_audit_before_still_filters_and_combines_with_the_cursor(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    mine = [_event("clinic-a", TIED) for _ in range(3)] + [_event("clinic-a", EARLIER)]
    await _insert(settings, AuditEvent, mine)
    before = (TIED - timedelta(seconds=1)).isoformat()
    body = (await client.get("/v1/audit", params={"before": before, "resource_id": "r-1"})).json()
    assert [e["id"] for e in body["events"]] == [str(mine[3]["id"])]
    assert body["next_cursor"] is None
    first = (await client.get("/v1/audit", params={"limit": 1, "resource_id": "r-1"})).json()
    rest = await client.get(
        "/v1/audit",
        params={"cursor": first["next_cursor"], "before": before, "resource_id": "r-1"},
    )
    assert [e["id"] for e in rest.json()["events"]] == [str(mine[3]["id"])]
    _assert_problem(await client.get("/v1/audit", params={"cursor": "%%%"}), 422)


async def test_the_listings_document_their_cursor_and_the_deprecated_before(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    for path in ("/v1/sessions", "/v1/calibrations", "/v1/audit"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        assert {"limit", "cursor"} <= set(parameters), path
    audit = {p["name"]: p for p in document["paths"]["/v1/audit"]["get"]["parameters"]}
    assert audit["before"]["deprecated"] is True
    status = {p["name"]: p for p in document["paths"]["/v1/sessions"]["get"]["parameters"]}
    assert {"$ref": "#/components/schemas/SessionStatus"} in status["status"]["schema"]["anyOf"]
    assert document["components"]["schemas"]["SessionStatus"]["enum"] == [
        "active",
        "stopped",
        "finalized",
    ]
