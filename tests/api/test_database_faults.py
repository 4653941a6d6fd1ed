"""PostgreSQL restarted under a running service: requests fail cleanly (503 problem+json,
nothing half-written) and the same service recovers without a restart of its own."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _body, _provider

CLUSTER_VERSIONS = (
    sorted(p.name for p in Path("/etc/postgresql").glob("*"))
    if Path("/etc/postgresql").exists()
    else []
)


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings, provider=_provider())


def _pg(action: str) -> None:
    subprocess.run(
        [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            CLUSTER_VERSIONS[-1],
            "main",
            action,
            "-m",
            "fast",
        ]
        if action == "stop"
        else ["pg_ctlcluster", "--skip-systemctl-redirect", CLUSTER_VERSIONS[-1], "main", action],
        check=True,
        capture_output=True,
    )


def _wait_ready() -> None:
    deadline = time.monotonic() + 60
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.3)


@pytest.mark.skipif(not CLUSTER_VERSIONS, reason="needs a local PostgreSQL cluster to restart")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_restart_fails_cleanly_and_recovers(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/sessions", json=_body())
    assert created.status_code == 201
    session = created.json()
    url = f"/v1/sessions/{session['id']}"

    _pg("stop")
    try:
        down = await client.get(url)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert down.headers["retry-after"] == "2"
        answer = await client.post(
            f"{url}/answers", json={"question_id": session["next_question"]["id"], "answer": "yes"}
        )
        assert answer.status_code == 503
    finally:
        _pg("start")
        _wait_ready()

    back = await client.get(url)
    assert back.status_code == 200, back.text
    assert back.json()["step"] == 0  # the refused answer left nothing behind
    answered = await client.post(
        f"{url}/answers", json={"question_id": session["next_question"]["id"], "answer": "yes"}
    )
    assert answered.status_code == 200 and answered.json()["step"] == 1
