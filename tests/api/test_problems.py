"""Every error is RFC 9457 problem+json carrying the request id; nothing echoes input."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import ConflictError
from tests.conftest import open_client

PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id"}


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_path_is_404_with_the_callers_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/path", headers={"X-Request-Id": "clinic-42.a"})
    body = _assert_problem(response, 404)
    assert body["request_id"] == "clinic-42.a"
    assert str(body["type"]).endswith("/not-found")


async def test_request_id_is_generated_when_missing_or_malformed(client: httpx.AsyncClient) -> None:
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    malformed = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert malformed.headers["x-request-id"] != "bad id\twith spaces"
    assert len(malformed.headers["x-request-id"]) == 32


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    body = _assert_problem(await client.delete("/healthz"), 405)
    assert str(body["type"]).endswith("/method-not-allowed")


async def test_validation_error_is_422_without_echoing_input(client: httpx.AsyncClient) -> None:
    secret = "patient-secret-text-7731"
    response = await client.get("/v1/audit", params={"limit": secret})
    body = _assert_problem(response, 422)
    assert secret not in response.text
    assert body["errors"] == [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]


async def test_unexpected_exception_is_a_500_problem(app: FastAPI) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    async for client in open_client(app):
        response = await client.get("/boom", headers={"X-Request-Id": "req-500"})
    body = _assert_problem(response, 500)
    assert body["request_id"] == "req-500"
    assert "internal detail" not in response.text


async def test_domain_errors_carry_their_status(app: FastAPI) -> None:
    @app.get("/conflict")
    async def conflict() -> None:
        raise ConflictError("question q1 is not the current question", retry_after_s=None)

    async for client in open_client(app):
        response = await client.get("/conflict")
    body = _assert_problem(response, 409)
    assert body["detail"] == "question q1 is not the current question"


async def test_no_free_database_connection_is_a_503_to_retry(app: FastAPI) -> None:
    @app.get("/pool-exhausted")
    async def pool_exhausted() -> None:
        raise PoolTimeoutError("QueuePool limit of size 20 overflow 0 reached")

    async for client in open_client(app):
        response = await client.get("/pool-exhausted")
    body = _assert_problem(response, 503)
    assert str(body["type"]).endswith("/database-unavailable")
    assert response.headers["retry-after"] == "2"


async def test_the_document_declares_the_refusals_any_operation_can_get(
    client: httpx.AsyncClient,
) -> None:
    # Found by tests/api/test_fuzz.py: 413, 400 and the audit log's 401 were sent undeclared.
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label, declared = f"{method.upper()} {path}", operation["responses"].keys()
            if method != "get":
                assert "413" in declared, label  # BodyLimitMiddleware, before any handler
            if label not in {"GET /healthz", "GET /readyz", "GET /metrics", "GET /fhir/metadata"}:
                assert {"401", "403", "429"} <= declared, label
    not_text = await client.post(
        "/v1/sessions", content=b'{"inquiry": "\xff"}', headers={"content-type": "application/json"}
    )
    _assert_problem(not_text, 400)
    assert "400" in document["paths"]["/v1/sessions"]["post"]["responses"]
