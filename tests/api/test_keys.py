"""API key lifecycle and failed logins (security probe, low findings): expiry, last-used
time, rotation, audited key events, and a throttle on guessing, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.auth.repository import ApiKeyRepository
from app.auth.service import create_key, list_keys, revoke_key, rotate_key
from app.db.base import utcnow
from app.db.engine import create_engine
from app.db.models import ApiKey
from app.settings import Settings
from tests.conftest import open_client

SCOPES = [Scope.SESSIONS_READ, Scope.AUDIT_READ]


async def _row(settings: Settings, key_id: uuid.UUID) -> ApiKey:
    (row,) = [r for r in await list_keys(settings.effective_database_url) if r.id == key_id]
    return row


async def _status(app: FastAPI, secret: str, path: str = "/v1/audit") -> httpx.Response:
    async for client in open_client(app, api_key=secret):
        return await client.get(path)
    raise AssertionError("no client")


async def test_an_expired_key_is_refused(app: FastAPI, settings: Settings) -> None:
    row, secret = await create_key(
        settings.effective_database_url, tenant="clinic-a", scopes=SCOPES, expires_in_days=30
    )
    assert (await _status(app, secret)).status_code == 200
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(ApiKey)
                .where(ApiKey.id == row.id)
                .values(expires_at=utcnow() - timedelta(minutes=1))
            )
    finally:
        await engine.dispose()
    refused = await _status(app, secret)
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]


async def test_a_key_records_when_it_was_last_used(app: FastAPI, settings: Settings) -> None:
    row, secret = await create_key(
        settings.effective_database_url, tenant="clinic-a", scopes=SCOPES
    )
    assert (await _row(settings, row.id)).last_used_at is None
    assert (await _status(app, secret)).status_code == 200
    assert (await _row(settings, row.id)).last_used_at is not None


async def test_rotation_replaces_the_key_and_is_audited(app: FastAPI, settings: Settings) -> None:
    old, old_secret = await create_key(
        settings.effective_database_url, tenant="clinic-a", scopes=SCOPES, name="front desk"
    )
    rotated = await rotate_key(settings.effective_database_url, old.id)
    assert rotated is not None
    new, new_secret = rotated
    assert (new.tenant, new.scopes, new.name) == ("clinic-a", old.scopes, "front desk")
    assert (await _status(app, old_secret)).status_code == 401
    trail = await _status(app, new_secret)
    assert trail.status_code == 200
    events = {(e["action"], e["resource_id"]) for e in trail.json()["events"]}
    assert {
        ("key.create", str(old.id)),
        ("key.rotate", str(old.id)),
        ("key.create", str(new.id)),
    } <= events
    assert await rotate_key(settings.effective_database_url, old.id) is None  # not active
    assert await revoke_key(settings.effective_database_url, new.id)
    _, auditor = await create_key(
        settings.effective_database_url, tenant="clinic-a", scopes=[Scope.AUDIT_READ]
    )
    trail = await _status(app, auditor)
    assert ("key.revoke", str(new.id)) in {
        (e["action"], e["resource_id"]) for e in trail.json()["events"]
    }


async def test_guessing_keys_is_throttled_before_the_database(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = settings.auth_failures_per_minute
    lookups = 0
    original = ApiKeyRepository.by_lookup

    async def counting(self: ApiKeyRepository, lookup: str) -> ApiKey | None:
        nonlocal lookups
        lookups += 1
        return await original(self, lookup)

    monkeypatch.setattr(ApiKeyRepository, "by_lookup", counting)
    async for client in open_client(app):
        for i in range(limit):
            guess = {"Authorization": f"Bearer pk_{i:012x}_guess"}
            assert (await client.get("/v1/audit", headers=guess)).status_code == 401
        assert lookups == limit
        throttled = await client.get("/v1/audit", headers={"Authorization": "Bearer pk_x_y"})
        assert throttled.status_code == 429
        assert throttled.headers["content-type"] == "application/problem+json"
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert lookups == limit  # refused without a lookup
