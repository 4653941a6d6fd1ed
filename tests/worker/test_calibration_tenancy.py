"""Calibrations belong to a tenant: the security probe's finding H1, on PostgreSQL and SQLite.

Tenant B (every tenant scope) could list, read and activate tenant A's runs, and a run it
queued with ``"activate": true`` switched A's off and served A's sessions. Now a tenant sees
and changes only its own runs; an operator (``platform:admin``) publishes platform runs,
which serve a tenant only where it has no active run of its own, and every activation that
changes what a tenant is served is in that tenant's audit trail.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from app.auth.keys import OPERATOR_SCOPES, TENANT_SCOPES, Scope
from app.settings import Settings
from tests.conftest import make_key, open_client
from tests.engine.scripted import ScriptedProvider
from tests.worker.conftest import Maker, make_worker
from tests.worker.test_worker_api import _body

# A session whose question policy is the run's (tests.worker.test_worker_api._body).
SESSION = {
    "patient": {"summary": "A patient with a fever."},
    "inquiry": "What is the most likely diagnosis?",
    "candidates": ["Influenza", "Measles", "Migraine", "Common cold"],
    "alpha": 0.1,
    "policy": "cip",
    "max_questions": 2,
    "question_source": "generated",
    "n_candidate_questions": 3,
    "n_answers": 2,
}


@asynccontextmanager
async def _tenant(
    app: FastAPI, settings: Settings, tenant: str, scopes: tuple[Scope, ...] = TENANT_SCOPES
) -> AsyncIterator[httpx.AsyncClient]:
    key = await make_key(settings, tenant=tenant, scopes=scopes)
    async for client in open_client(app, api_key=key):
        yield client


async def _run(
    client: httpx.AsyncClient, maker: Maker, provider: ScriptedProvider, **overrides: Any
) -> dict[str, Any]:
    """Queue a run, let a worker finish it, return it as its owner reads it."""
    response = await client.post("/v1/calibrations", json=_body(**overrides))
    assert response.status_code == 202, response.text
    outcome = await make_worker(maker, provider).run_once()
    assert outcome is not None and outcome.status == "succeeded"
    run: dict[str, Any] = (await client.get(f"/v1/calibrations/{response.json()['id']}")).json()
    return run


async def _served_by(client: httpx.AsyncClient) -> str | None:
    response = await client.post("/v1/sessions", json=SESSION)
    assert response.status_code == 201, response.text
    calibration_id: str | None = response.json()["differential"]["calibration_id"]
    return calibration_id


async def _activations(client: httpx.AsyncClient, run_id: str) -> int:
    """Activation events of a run in the caller's own audit trail."""
    response = await client.get("/v1/audit", params={"resource_id": run_id})
    assert response.status_code == 200, response.text
    return sum(e["action"] == "calibration.activate" for e in response.json()["events"])


async def test_one_tenant_can_neither_see_nor_change_nor_displace_another_tenants_run(
    app: FastAPI, settings: Settings, maker: Maker, provider: ScriptedProvider
) -> None:
    async with _tenant(app, settings, "clinic-a") as a, _tenant(app, settings, "clinic-b") as b:
        a_run = await _run(a, maker, provider, activate=True)
        assert a_run["active"] is True and a_run["owner"] == "tenant"
        assert await _served_by(a) == a_run["id"]
        run_url = f"/v1/calibrations/{a_run['id']}"

        assert (await b.get("/v1/calibrations")).json()["calibrations"] == []
        for response in (
            await b.get(run_url),
            await b.post(f"{run_url}/activate"),
            await b.post(f"{run_url}/resume"),
            await b.get(f"{run_url}/plot.png"),
        ):
            assert response.status_code == 404, response.text
            assert response.headers["content-type"] == "application/problem+json"
        assert await _served_by(b) is None  # A's run does not serve B's sessions

        # B's own run, activated on creation, serves B and leaves A's run and A's sessions be.
        b_run = await _run(b, maker, provider, activate=True)
        assert b_run["active"] is True
        assert await _served_by(b) == b_run["id"]
        assert await _served_by(a) == a_run["id"]
        assert (await a.get(run_url)).json()["active"] is True
        assert [c["id"] for c in (await a.get("/v1/calibrations")).json()["calibrations"]] == [
            a_run["id"]
        ]
        assert await _activations(a, b_run["id"]) == 0
        assert await _activations(b, b_run["id"]) == 1


async def test_a_platform_run_serves_tenants_without_their_own_and_is_in_their_audit_trail(
    app: FastAPI, settings: Settings, maker: Maker, provider: ScriptedProvider
) -> None:
    operator_scopes = (Scope.PLATFORM_ADMIN,)
    async with (
        _tenant(app, settings, "clinic-a") as a,
        _tenant(app, settings, "clinic-b") as b,
        _tenant(app, settings, "operations", operator_scopes) as ops,
    ):
        platform = await _run(ops, maker, provider)
        assert platform["owner"] == "platform" and platform["active"] is False
        assert await _served_by(a) is None
        activated = await ops.post(f"/v1/calibrations/{platform['id']}/activate")
        assert activated.status_code == 200, activated.text
        assert await _served_by(a) == platform["id"]
        assert await _served_by(b) == platform["id"]
        # The activation changed what A and B are served: it is in both trails.
        assert await _activations(a, platform["id"]) == 1
        assert await _activations(b, platform["id"]) == 1

        # Tenants read the platform's run (their sets cite it) but cannot change it.
        seen = await a.get(f"/v1/calibrations/{platform['id']}")
        assert seen.status_code == 200 and seen.json()["owner"] == "platform"
        assert [c["id"] for c in (await a.get("/v1/calibrations")).json()["calibrations"]] == [
            platform["id"]
        ]
        refused = await a.post(f"/v1/calibrations/{platform['id']}/activate")
        assert refused.status_code == 403 and "platform" in refused.json()["detail"]

        # A's own active run takes over for A only.
        own = await _run(a, maker, provider, activate=True)
        assert await _served_by(a) == own["id"]
        assert await _served_by(b) == platform["id"]
        # The operator manages the platform's runs, not a tenant's.
        assert (await ops.get(f"/v1/calibrations/{own['id']}")).status_code == 404


async def test_a_run_shows_no_server_path_and_nobody_elses_tenant_or_key(
    app: FastAPI, settings: Settings, maker: Maker, provider: ScriptedProvider
) -> None:
    async with (
        _tenant(app, settings, "operations-team", (Scope.PLATFORM_ADMIN, Scope.AUDIT_READ)) as ops,
        _tenant(app, settings, "clinic-a") as a,
    ):
        platform = await _run(ops, maker, provider)
        key_ids = {e["actor_key_id"] for e in (await ops.get("/v1/audit")).json()["events"]}
        key_ids.discard(None)
        assert key_ids  # the operator's key id is recorded, in the operator's own trail
        for body in (
            (await a.get(f"/v1/calibrations/{platform['id']}")).json(),
            (await a.get("/v1/calibrations")).json(),
        ):
            text = json.dumps(body)
            assert str(settings.data_dir) not in text and "/" not in json.dumps(
                body.get("params", {}).get("dataset", "")
            )
            assert "operations-team" not in text
            assert not any(k in text for k in key_ids)
        assert (await a.get(f"/v1/calibrations/{platform['id']}")).json()["params"][
            "dataset"
        ] == "tiny"


def test_a_tenant_key_never_holds_an_operator_scope() -> None:
    assert Scope.PLATFORM_ADMIN in OPERATOR_SCOPES and Scope.METRICS_READ in OPERATOR_SCOPES
    assert not set(TENANT_SCOPES) & OPERATOR_SCOPES
    assert set(TENANT_SCOPES) | OPERATOR_SCOPES == set(Scope)
