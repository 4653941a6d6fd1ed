"""Logs are JSON lines with the request id, and never carry request bodies."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import captured_logs


@pytest.fixture
def log_stream(client: httpx.AsyncClient) -> Iterator[io.StringIO]:
    """Logs of the test body only (set up after the app, so its start-up is not seen)."""
    with captured_logs() as stream:
        yield stream


async def test_request_log_line_has_id_and_no_body(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    secret = "Patient reports chest pain since Tuesday 8842"
    await client.post("/v1/audit", json={"note": secret}, headers={"X-Request-Id": "log-1"})
    await client.get(
        "/v1/audit", params={"resource_id": secret[:60]}, headers={"X-Request-Id": "log-2"}
    )

    text = log_stream.getvalue()
    assert "8842" not in text and "chest pain" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert {(r["request_id"], r["status"], r["route"]) for r in requests} == {
        ("log-1", 405, "/v1/audit"),
        ("log-2", 200, "/v1/audit"),
    }
