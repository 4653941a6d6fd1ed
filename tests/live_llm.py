"""Fixtures on the real local vLLM server, for every test package (``tests/conftest.py``
registers this module as a plugin).

``live_server`` starts the server (idempotently) with the same code as ``pursuit llm up``;
``live_gateway``, ``live_http`` and ``live_client`` (the whole app on it) build on it. Only
tests marked ``llm`` use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.llm.cache import LRUPosteriorCache
from app.llm.gateway import LLMGateway
from app.main import create_app
from app.settings import Settings
from app.tooling import local_llm
from tests.conftest import open_client


@pytest.fixture(scope="session")
def live_server() -> tuple[str, str]:
    """(base_url, served model): starts the local vLLM server if needed (idempotent)."""
    try:
        return local_llm.up(Settings(), echo=print)
    except local_llm.LocalServerError as exc:
        pytest.fail(f"could not start the local vLLM server: {exc}")


# How far one prompt's letter probabilities may move between requests on the live server.
# float32: batched and one-at-a-time scoring agreed to 5.6e-6 at most over 400 MediQ prompts
# (docs/results.md, "Served dtype and batching"); the tolerance stays 1e-4 as it always was.
# bfloat16: in the same measurement they moved by up to 0.029 (p99 0.0094): a prompt's
# logits depend on the batch it is computed with. 0.05 leaves room for other prompts.
POSTERIOR_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.05}
# The same for a raw letter logprob: 0.029 on a renormalised probability near 0.18 (the
# smallest in the live tests' prompts) is 0.16 nats.
LOGPROB_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.25}


@pytest.fixture(scope="session")
def live_dtype(live_server: tuple[str, str]) -> str:
    """The dtype the live server computes in (bfloat16 when it was not started by us)."""
    return local_llm.status(Settings()).dtype or "bfloat16"


@pytest.fixture(scope="session")
def live_tol(live_dtype: str) -> float:
    """Absolute tolerance for comparing live posteriors across requests, per served dtype."""
    return POSTERIOR_TOLERANCE[live_dtype]


@pytest.fixture(scope="session")
async def live_http(live_server: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings()
    async with httpx.AsyncClient(
        base_url=live_server[0],
        timeout=httpx.Timeout(settings.llm_read_timeout_s, connect=settings.llm_connect_timeout_s),
    ) as http:
        yield http


@pytest.fixture(scope="session")
def live_gateway(live_server: tuple[str, str], live_http: httpx.AsyncClient) -> LLMGateway:
    """A gateway with the posterior cache disabled, so every comparison hits vLLM."""
    return LLMGateway(
        http=live_http, model=live_server[1], settings=Settings(), cache=LRUPosteriorCache(0)
    )


@pytest.fixture
async def live_client(
    settings: Settings, api_key: str, live_server: tuple[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the whole app (real database, Redis) over the real local vLLM server."""
    base_url, model = live_server
    live = settings.model_copy(update={"llm_base_url": base_url, "llm_model": model})
    async for client in open_client(create_app(live), api_key=api_key):
        yield client
