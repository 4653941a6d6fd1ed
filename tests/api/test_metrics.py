"""Prometheus metrics: request latency by route, LLM calls, set sizes, stop reasons."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from app.auth.keys import Scope
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _body, _provider
from tests.conftest import make_key, open_client


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_llm_calls_sets_and_stops(
    settings: Settings, api_key: str
) -> None:
    app: FastAPI = create_app(settings, provider=_provider())
    async for client in open_client(app, api_key=api_key):
        session = (await client.post("/v1/sessions", json=_body(max_questions=1))).json()
        await client.post(
            f"/v1/sessions/{session['id']}/answers",
            json={"question_id": session["next_question"]["id"], "answer": "no"},
        )
        await client.get(f"/v1/sessions/{session['id']}")
        response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert (
        _sample(
            text,
            "pursuit_http_request_duration_seconds_count",
            method="GET",
            route="/v1/sessions/{session_id}",
            status="200",
        )
        == 1
    )
    # Two turns: the opening one and the one after the answer (which hits the budget).
    assert _sample(text, "pursuit_interview_turns_total", policy="cip") == 2
    assert _sample(text, "pursuit_llm_calls_total", operation="posteriors", outcome="ok") == 2
    assert _sample(text, "pursuit_interview_stops_total", reason="budget") == 1
    assert _sample(text, "pursuit_differential_set_size_count", calibrated="false") == 2
    # No patient text and no session ids in any label.
    assert "fever" not in text and session["id"] not in text


async def test_metrics_need_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert "pursuit_http_request_duration_seconds" in response.text


async def test_metrics_can_be_kept_behind_the_operator_scope(
    settings: Settings, api_key: str
) -> None:
    """PURSUIT_METRICS_PUBLIC=false: no key is 401, a tenant's key 403, metrics:read 200."""
    private = settings.model_copy(update={"metrics_public": False})
    app = create_app(private, provider=_provider())
    operator = await make_key(settings, tenant="operations", scopes=[Scope.METRICS_READ])
    async for client in open_client(app):
        anonymous = await client.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"
    async for client in open_client(app, api_key=api_key):
        assert (await client.get("/metrics")).status_code == 403  # every tenant scope
    async for client in open_client(app, api_key=operator):
        allowed = await client.get("/metrics")
        assert (
            allowed.status_code == 200 and "pursuit_http_request_duration_seconds" in allowed.text
        )
