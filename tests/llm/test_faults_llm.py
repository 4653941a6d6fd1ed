"""The LLM server down or timing out: 503 with Retry-After, the session unchanged, and the
same answer retried later succeeds. The real vLLM server sits behind a TCP proxy that the
test takes down and stalls (stopping vLLM itself would cost minutes of start-up)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.conftest import open_client
from tests.proxy import TcpProxy
from tests.sessions.test_sessions_llm import _body

pytestmark = pytest.mark.llm

READ_TIMEOUT_S = 4.0


@pytest.fixture
async def proxy(live_server: tuple[str, str]) -> AsyncIterator[TcpProxy]:
    target = urlsplit(live_server[0])
    assert target.hostname and target.port
    proxy = TcpProxy(target.hostname, target.port)
    await proxy.up()
    yield proxy
    await proxy.down()


def _proxied(settings: Settings, proxy: TcpProxy, model: str, read_timeout_s: float) -> Settings:
    return settings.model_copy(
        update={
            "llm_base_url": proxy.url,
            "llm_model": model,
            "llm_read_timeout_s": read_timeout_s,
            "llm_connect_timeout_s": 1.0,
            "llm_max_retries": 1,
            "llm_retry_backoff_s": 0.1,
        }
    )


@pytest.fixture
async def proxied_client(
    settings: Settings, api_key: str, live_server: tuple[str, str], proxy: TcpProxy
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the proxied real server, with the default (generous) read timeout."""
    app = create_app(_proxied(settings, proxy, live_server[1], settings.llm_read_timeout_s))
    async for client in open_client(app, api_key=api_key):
        yield client


@pytest.fixture
async def impatient_client(
    settings: Settings, api_key: str, live_server: tuple[str, str], proxy: TcpProxy
) -> AsyncIterator[httpx.AsyncClient]:
    """The same service with a short read timeout, to meet a stalled server quickly."""
    app = create_app(_proxied(settings, proxy, live_server[1], READ_TIMEOUT_S))
    async for client in open_client(app, api_key=api_key):
        yield client


async def _state(client: httpx.AsyncClient, session_id: str) -> tuple[int, int, str]:
    detail = (await client.get(f"/v1/sessions/{session_id}")).json()
    return detail["step"], detail["version"], detail["next_question"]["id"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_llm_down_then_back(proxied_client: httpx.AsyncClient, proxy: TcpProxy) -> None:
    created = await proxied_client.post("/v1/sessions", json=_body(n_candidate_questions=2))
    assert created.status_code == 201, created.text
    session = created.json()
    before = await _state(proxied_client, session["id"])
    url = f"/v1/sessions/{session['id']}/answers"
    answer = {"question_id": session["next_question"]["id"], "answer": "Yes, my neck is stiff."}

    await proxy.down()
    started = time.monotonic()
    refused = await proxied_client.post(url, json=answer)
    assert time.monotonic() - started < 30
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert await _state(proxied_client, session["id"]) == before

    await proxy.up()
    retried = await proxied_client.post(url, json=answer)
    assert retried.status_code == 200, retried.text
    assert retried.json()["step"] == 1


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_llm_timing_out_then_back(
    proxied_client: httpx.AsyncClient, impatient_client: httpx.AsyncClient, proxy: TcpProxy
) -> None:
    created = await proxied_client.post("/v1/sessions", json=_body(n_candidate_questions=2))
    assert created.status_code == 201, created.text
    session = created.json()
    before = await _state(proxied_client, session["id"])
    url = f"/v1/sessions/{session['id']}/answers"
    answer = {"question_id": session["next_question"]["id"], "answer": "No cough."}

    proxy.stall()
    started = time.monotonic()
    timed_out = await impatient_client.post(url, json=answer)
    elapsed = time.monotonic() - started
    assert timed_out.status_code == 503, timed_out.text
    assert "timed out" in timed_out.json()["detail"]
    assert int(timed_out.headers["retry-after"]) >= 1
    # One try and one retry of the first LLM call, each bounded by the read timeout.
    assert elapsed < 2 * READ_TIMEOUT_S + 10
    assert await _state(proxied_client, session["id"]) == before

    await proxy.down()
    await proxy.up()
    retried = await proxied_client.post(url, json=answer)
    assert retried.status_code == 200, retried.text
    assert retried.json()["step"] == 1
