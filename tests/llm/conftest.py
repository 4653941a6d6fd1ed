"""Fixtures for the LLM gateway tests.

- ``fake_vllm``: a ``tests.fake_vllm.FakeVLLM`` (an in-memory vLLM HTTP API) with a
  ChatML template, " X"/"X" letter tokens and scripted outputs, for unit tests.
- The real local vLLM server's fixtures (``live_server``, ``live_gateway``, ...) are in
  ``tests/live_llm.py``, for every test package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.llm.cache import LRUPosteriorCache
from app.llm.gateway import LLMGateway
from app.llm.screening import Drop
from tests.fake_vllm import FakeVLLM, unit_settings


@pytest.fixture
def fake_vllm() -> FakeVLLM:
    return FakeVLLM(preference={"flu": 2.0, "cold": 1.0, "covid": 0.0, "allergy": -1.0})


@pytest.fixture
def make_gateway(
    fake_vllm: FakeVLLM,
) -> Callable[..., tuple[LLMGateway, LRUPosteriorCache]]:
    def make(
        *,
        cache_size: int = 1024,
        permutations: int = 1,
        on_drop: Callable[[str, Drop], None] | None = None,
        **settings: Any,
    ) -> tuple[LLMGateway, LRUPosteriorCache]:
        http = httpx.AsyncClient(
            transport=httpx.MockTransport(fake_vllm.handle), base_url="http://fake"
        )
        cache = LRUPosteriorCache(cache_size)
        gateway = LLMGateway(
            http=http,
            model="fake",
            settings=unit_settings(**settings),
            cache=cache,
            permutations=permutations,
            on_drop=on_drop,
        )
        return gateway, cache

    return make
