"""The audit table end to end: repository writes, API reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.audit.auditor import Auditor, ResourceType
from app.audit.repository import AuditRepository
from app.context import request_id_var
from app.db.engine import create_engine, create_sessionmaker, statement_session
from app.db.models import AuditEvent, InterviewSession
from app.sessions.repository import version_lookup
from app.settings import Settings


async def _record(settings: Settings, count: int, *, resource_prefix: str = "res") -> None:
    engine = create_engine(settings.effective_database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            repo = AuditRepository(session)
            for i in range(count):
                await repo.record(
                    action="session.create",
                    resource_type="session",
                    resource_id=f"{resource_prefix}-{i}",
                    outcome="success",
                    tenant="clinic-a",
                )
    finally:
        await engine.dispose()


def _sessions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["resource_type"] == "session"]


async def test_recorded_events_are_listed_newest_first(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    token = request_id_var.set("req-audit-1")
    try:
        await _record(settings, 3)
    finally:
        request_id_var.reset(token)

    response = await client.get("/v1/audit", params={"limit": 2})
    assert response.status_code == 200, response.text
    events = response.json()["events"]
    assert len(events) == 2
    assert [e["resource_id"] for e in events] == ["res-2", "res-1"]
    assert all(e["request_id"] == "req-audit-1" for e in events)
    assert all(e["tenant"] == "clinic-a" and e["outcome"] == "success" for e in events)


async def test_filters_by_resource_and_time(settings: Settings, client: httpx.AsyncClient) -> None:
    await _record(settings, 2)
    # The client's own key creation is audited as well: keep the sessions' events.
    everything = _sessions((await client.get("/v1/audit")).json()["events"])
    assert len(everything) == 2

    only_one = (await client.get("/v1/audit", params={"resource_id": "res-0"})).json()["events"]
    assert [e["resource_id"] for e in only_one] == ["res-0"]

    newest = everything[0]["occurred_at"]
    older = _sessions((await client.get("/v1/audit", params={"before": newest})).json()["events"])
    assert [e["resource_id"] for e in older] == ["res-0"]


@pytest.mark.parametrize(
    "params",
    [
        {"before": "0001-01-01T00:00:00+14:00"},  # year 0 in UTC
        {"before": "9999-12-31T23:59:59-14:00"},  # year 10000 in UTC
        {"resource_id": "res\x00"},  # PostgreSQL cannot hold U+0000
    ],
)
async def test_filters_the_database_cannot_take_are_422_not_500(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/v1/audit", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["query", *params]


async def test_a_failed_unit_of_work_writes_nothing(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        try:
            async with sessionmaker.begin() as session:
                await AuditRepository(session).record(
                    action="session.create", resource_type="session", resource_id="x", outcome="ok"
                )
                raise RuntimeError("crash after the write")
        except RuntimeError:
            pass
        async with sessionmaker() as session:
            assert list(await AuditRepository(session).list(limit=10)) == []
    finally:
        await engine.dispose()


@pytest.fixture
def postgres_settings(settings: Settings) -> Settings:
    if not settings.effective_database_url.startswith("postgresql"):
        pytest.skip("the append-only trigger is PostgreSQL's (SQLite is the single-user default)")
    return settings


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'success', tenant = 'someone-else'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ],
)
async def test_the_service_connection_cannot_change_the_audit_trail(
    postgres_settings: Settings, statement: str
) -> None:
    await _record(postgres_settings, 2)
    engine = create_engine(postgres_settings.effective_database_url)  # the service's own URL
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(sa.text(statement))
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT tenant FROM audit_events"))).all()
    finally:
        await engine.dispose()
    assert [r.tenant for r in rows] == ["clinic-a", "clinic-a"]


async def test_a_member_of_the_retention_role_can_purge(postgres_settings: Settings) -> None:
    await _record(postgres_settings, 3)
    url = make_url(postgres_settings.effective_database_url)
    purger = f"pursuit_test_purger_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_settings.effective_database_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"CREATE ROLE {purger} LOGIN"))
            await conn.execute(sa.text(f"GRANT pursuit_audit_retention TO {purger}"))
            await conn.execute(sa.text(f"GRANT SELECT, DELETE ON audit_events TO {purger}"))
        retention = create_engine(url.set(username=purger).render_as_string(hide_password=False))
        try:
            async with retention.begin() as conn:
                await conn.execute(sa.text("DELETE FROM audit_events"))
        finally:
            await retention.dispose()
        async with admin.connect() as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM audit_events"))).scalar()
        assert count == 0
    finally:
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"REVOKE ALL ON audit_events FROM {purger}"))
            await conn.execute(sa.text(f"DROP ROLE IF EXISTS {purger}"))
        await admin.dispose()


@pytest.mark.parametrize(
    ("asking_tenant", "exists", "found"),
    [("clinic-a", True, 3), (None, True, 3), ("clinic-b", True, None), ("clinic-a", False, None)],
)
async def test_an_audited_read_returns_what_it_found_and_records_one_event(
    settings: Settings, asking_tenant: str | None, exists: bool, found: int | None
) -> None:
    # The GET path's one statement: the session's version (only the asking tenant's session,
    # or any for a caller without a tenant) and the read's event, "not_found" when nothing was.
    engine = create_engine(settings.effective_database_url)
    session_id = uuid.uuid4()
    token = request_id_var.set("req-audited-read")
    try:
        maker = create_sessionmaker(engine)
        if exists:
            async with maker.begin() as db:
                db.add(_session_row(session_id, tenant="clinic-a", version=3))
        async with statement_session(maker) as db:
            auditor = Auditor(ResourceType.SESSION, tenant=asking_tenant, actor_key_id="key-1")
            version = await auditor.lookup(
                db,
                version_lookup(session_id, tenant=asking_tenant),
                action="session.read",
                resource_id=session_id,
            )
        async with maker() as db:
            events = (await db.execute(sa.select(AuditEvent))).scalars().all()
    finally:
        request_id_var.reset(token)
        await engine.dispose()
    assert version == found
    assert [(e.action, e.resource_id, e.outcome) for e in events] == [
        ("session.read", str(session_id), "success" if found else "not_found")
    ]
    event = events[0]
    assert (event.tenant, event.actor_key_id, event.request_id) == (
        asking_tenant,
        "key-1",
        "req-audited-read",
    )
    assert event.id is not None and event.occurred_at is not None


def _session_row(session_id: uuid.UUID, *, tenant: str, version: int) -> InterviewSession:
    return InterviewSession(
        id=session_id,
        tenant=tenant,
        status="active",
        version=version,
        patient_summary="",
        inquiry="",
        candidates=["a", "b"],
        config={},
        seed=0,
        model="m",
        prompt_version="p",
    )
