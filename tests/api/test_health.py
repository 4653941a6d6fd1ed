"""Liveness and readiness against real PostgreSQL/SQLite, Redis and an unreachable LLM."""

from __future__ import annotations

import httpx

from app.main import create_app
from app.settings import Settings
from tests.conftest import open_client
from tests.ports import free_port


async def test_healthz_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"
    assert checks["llm"]["status"] == "not_configured"


async def test_readyz_is_degraded_not_unready_when_redis_and_the_llm_are_down(
    settings: Settings,
) -> None:
    broken = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "llm_base_url": f"http://127.0.0.1:{free_port()}",
        }
    )
    async for client in open_client(create_app(broken)):
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "degraded"
    assert body["checks"]["llm"]["status"] == "degraded"


async def test_readyz_is_503_when_the_database_is_down(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"}
    )
    async for client in open_client(create_app(broken)):
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["detail"] == "Failing: database"
    assert body["checks"]["database"]["status"] == "fail"
    assert response.headers["retry-after"] == "5"
