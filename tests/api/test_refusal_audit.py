"""Refused requests are audited once per caller, outcome and minute (security probe, low):
401s, 403s and 429s were not audited at all; now they are, without flooding the trail."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.db.engine import create_engine
from app.db.models import AuditEvent
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _provider
from tests.conftest import make_key, open_client


async def _refusals(settings: Settings) -> list[tuple[str | None, str, str | None]]:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(AuditEvent.tenant, AuditEvent.outcome, AuditEvent.resource_id).where(
                    AuditEvent.action == "request.refused"
                )
            )
            return sorted(((t, o, r) for t, o, r in rows.all()), key=str)
    finally:
        await engine.dispose()


async def test_a_forbidden_key_is_audited_once_a_minute_in_its_tenants_trail(
    app: FastAPI, settings: Settings
) -> None:
    reader = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_READ])
    auditor = await make_key(settings, tenant="clinic-a", scopes=[Scope.AUDIT_READ])
    async for client in open_client(app, api_key=reader):
        for _ in range(3):
            assert (await client.get("/v1/audit")).status_code == 403
    assert await _refusals(settings) == [("clinic-a", "forbidden", "/v1/audit")]
    async for client in open_client(app, api_key=auditor):
        events = (await client.get("/v1/audit")).json()["events"]
    refused = [e for e in events if e["action"] == "request.refused"]
    assert len(refused) == 1 and refused[0]["actor_key_id"]


async def test_unknown_keys_and_rate_limits_are_audited(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_per_minute": 1})
    app = create_app(limited, provider=_provider())
    key = await make_key(settings, tenant="clinic-b", scopes=[Scope.AUDIT_READ])
    async for anonymous in open_client(app):
        for _ in range(4):
            bad = {"Authorization": "Bearer pk_000000000000_nope"}
            assert (await anonymous.get("/v1/audit", headers=bad)).status_code == 401
    async for keyed in open_client(app, api_key=key):
        assert (await keyed.get("/v1/audit")).status_code == 200
        assert (await keyed.get("/v1/audit")).status_code == 429
        assert (await keyed.get("/v1/audit")).status_code == 429
    assert await _refusals(settings) == [
        ("clinic-b", "rate_limited", "/v1/audit"),
        (None, "unauthorized", "/v1/audit"),  # no key known: the operator's, by address
    ]
