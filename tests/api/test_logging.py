"""Logs are JSON lines with the request id, and never carry request bodies."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from app.logging import configure_logging


@pytest.fixture
def log_stream(client: httpx.AsyncClient) -> Iterator[io.StringIO]:
    """Everything logged while the test runs (set up after the app so only the test is seen)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="DEBUG", json=True, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


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
