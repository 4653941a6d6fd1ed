"""Keys, scopes, tenants, rate limits, body limits and the per-tenant LLM budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI

from app.auth.keys import Scope
from app.auth.service import list_keys, revoke_key
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _body, _provider
from tests.conftest import make_key, open_client
from tests.ports import free_port


async def test_health_endpoints_are_public(app: FastAPI) -> None:
    async for client in open_client(app):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Bearer ", "Bearer not-a-key", "Bearer pk_000000000000_nope"],
)
async def test_missing_or_bad_keys_are_401(app: FastAPI, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async for client in open_client(app):
        response = await client.get("/v1/audit", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_openapi_document_declares_the_bearer_key_where_it_is_needed(
    app: FastAPI,
) -> None:
    async for client in open_client(app):
        document = (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            public = path in ("/healthz", "/readyz", "/metrics", "/fhir/metadata")
            declared = operation.get("security") == [{"apiKey": []}]
            assert declared != public, f"{method.upper()} {path}"


async def test_a_revoked_key_stops_working(app: FastAPI, settings: Settings) -> None:
    secret = await make_key(settings, tenant="clinic-a", scopes=[Scope.AUDIT_READ])
    async for client in open_client(app, api_key=secret):
        assert (await client.get("/v1/audit")).status_code == 200
        keys = await list_keys(settings.effective_database_url)
        (row,) = [k for k in keys if k.scopes == ["audit:read"]]
        assert await revoke_key(settings.effective_database_url, row.id)
        assert (await client.get("/v1/audit")).status_code == 401


async def test_a_missing_scope_is_403(app: FastAPI, settings: Settings) -> None:
    reader = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_READ])
    async for client in open_client(app, api_key=reader):
        response = await client.post("/v1/sessions", json=_body())
        assert response.status_code == 403
        assert "sessions:write" in response.json()["detail"]
        assert (await client.get("/v1/audit")).status_code == 403


async def test_reading_a_session_needs_sessions_read_only(
    app_with_provider: FastAPI, settings: Settings
) -> None:
    writer = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_WRITE])
    reader = await make_key(settings, tenant="clinic-a", scopes=[Scope.SESSIONS_READ])
    async for client in open_client(app_with_provider, api_key=writer):
        created = await client.post("/v1/sessions", json=_body())
        assert created.status_code == 201, created.text
        sid, qid = created.json()["id"], created.json()["next_question"]["id"]
        assert (await client.get(f"/v1/sessions/{sid}")).status_code == 403
    async for client in open_client(app_with_provider, api_key=reader):
        read = await client.get(f"/v1/sessions/{sid}")
        assert read.status_code == 200 and read.json()["step"] == 0
        answer = await client.post(
            f"/v1/sessions/{sid}/answers", json={"question_id": qid, "answer": "No."}
        )
        assert answer.status_code == 403


@pytest.fixture
async def app_with_provider(settings: Settings) -> FastAPI:
    return create_app(settings, provider=_provider())


async def test_another_tenants_session_is_404(
    app_with_provider: FastAPI, settings: Settings
) -> None:
    mine = await make_key(settings, tenant="clinic-a")
    theirs = await make_key(settings, tenant="clinic-b")
    async for a in open_client(app_with_provider, api_key=mine):
        created = (await a.post("/v1/sessions", json=_body())).json()
        sid, qid = created["id"], created["next_question"]["id"]
        async for b in open_client(app_with_provider, api_key=theirs):
            assert (await b.get(f"/v1/sessions/{sid}")).status_code == 404
            answer = await b.post(
                f"/v1/sessions/{sid}/answers", json={"question_id": qid, "answer": "yes"}
            )
            assert answer.status_code == 404
            assert (await b.post(f"/v1/sessions/{sid}/finalize")).status_code == 404
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 404
            their_audit = (await b.get("/v1/audit")).json()["events"]
            assert their_audit and all(e["tenant"] == "clinic-b" for e in their_audit)
            # B's own key creation is in its trail too; its reads of A's session were refused.
            reads = [e for e in their_audit if e["resource_type"] == "session"]
            assert reads and {e["outcome"] for e in reads} == {"not_found"}
        assert (await a.get(f"/v1/sessions/{sid}")).json()["step"] == 0
        my_audit = (await a.get("/v1/audit", params={"resource_id": sid})).json()["events"]
        assert {e["action"] for e in my_audit} == {"session.create", "session.read"}
        assert all(e["actor_key_id"] and e["request_id"] for e in my_audit)


def _with(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update=changes)


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_rate_limit_is_429_with_headers(settings: Settings, backend: str) -> None:
    limited = _with(
        settings,
        rate_limit_per_minute=3,
        redis_url=settings.redis_url if backend == "redis" else None,
    )
    secret = await make_key(settings, tenant=f"rl-{backend}-{id(settings)}")
    async for client in open_client(create_app(limited), api_key=secret):
        responses = [await client.get("/v1/audit") for _ in range(4)]
    assert [r.status_code for r in responses[:3]] == [200, 200, 200]
    assert [r.headers["ratelimit-remaining"] for r in responses[:3]] == ["2", "1", "0"]
    refused = responses[3]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3"


async def test_redis_down_keeps_serving_and_limiting(settings: Settings, api_key: str) -> None:
    """With Redis unreachable, interviews go on and an in-process limiter counts instead."""
    broken = _with(
        settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_per_minute=3
    )
    async for client in open_client(create_app(broken, provider=_provider()), api_key=api_key):
        created = await client.post("/v1/sessions", json=_body())
        assert created.status_code == 201, created.text
        assert created.headers["ratelimit-remaining"] == "2"
        session_url = f"/v1/sessions/{created.json()['id']}"
        reads = [await client.get(session_url) for _ in range(2)]
        assert [r.status_code for r in reads] == [200, 200]
        # A GET of a session is sent pre-rendered; it carries the limiter's headers all the same.
        assert [r.headers["ratelimit-remaining"] for r in reads] == ["1", "0"]
        assert reads[1].headers["etag"] == f'"{created.json()["version"]}"'
        refused = await client.get(session_url)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"


async def test_oversized_bodies_are_413(settings: Settings, api_key: str) -> None:
    small = _with(settings, max_body_bytes=2048)
    async for client in open_client(create_app(small, provider=_provider()), api_key=api_key):
        declared = await client.post("/v1/sessions", json=_body(patient={"summary": "x" * 4000}))
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"

        async def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 512

        streamed = await client.post(
            "/v1/sessions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        fine = await client.post("/v1/sessions", json=_body())
        assert fine.status_code == 201


class _GatedProvider:
    """The scripted provider, but every posterior call waits for ``gate``."""

    def __init__(self) -> None:
        self.inner = _provider()
        self.gate = asyncio.Event()
        self.arrivals: asyncio.Queue[None] = asyncio.Queue()

    @property
    def info(self) -> Any:
        return self.inner.info

    async def label_posteriors(self, **kwargs: Any) -> Any:
        self.arrivals.put_nowait(None)
        await self.gate.wait()
        return await self.inner.label_posteriors(**kwargs)

    async def propose_questions(self, **kwargs: Any) -> Any:
        return await self.inner.propose_questions(**kwargs)

    async def simulate_answers(self, **kwargs: Any) -> Any:
        return await self.inner.simulate_answers(**kwargs)


async def test_one_tenant_cannot_take_every_llm_slot(settings: Settings) -> None:
    budgeted = _with(settings, tenant_llm_concurrency=1, tenant_llm_wait_s=0.2)
    provider = _GatedProvider()
    app = create_app(budgeted, provider=provider)
    greedy = await make_key(settings, tenant="greedy")
    other = await make_key(settings, tenant="other")
    async for g in open_client(app, api_key=greedy):
        async for o in open_client(app, api_key=other):
            first = asyncio.create_task(g.post("/v1/sessions", json=_body()))
            await asyncio.wait_for(provider.arrivals.get(), 10)
            second = await g.post("/v1/sessions", json=_body())
            assert second.status_code == 429
            assert second.headers["retry-after"] == "2"
            others = asyncio.create_task(o.post("/v1/sessions", json=_body()))
            await asyncio.wait_for(provider.arrivals.get(), 10)  # the other tenant got a slot
            provider.gate.set()
            assert (await first).status_code == 201
            assert (await others).status_code == 201
