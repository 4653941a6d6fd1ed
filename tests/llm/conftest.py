"""Fixtures for the LLM gateway tests.

- ``fake_vllm``: an in-memory stand-in for vLLM's HTTP API (``httpx.MockTransport``) with a
  ChatML template, " X"/"X" letter tokens and scripted outputs, for unit tests.
- ``live_server`` / ``live_gateway``: the real local vLLM server, started (idempotently) by
  the same code as ``pursuit llm up``. Only tests marked ``llm`` use them.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.llm import server
from app.llm.cache import LRUPosteriorCache
from app.llm.gateway import LLMGateway
from app.llm.screening import Drop
from app.main import create_app
from app.settings import Settings
from tests.conftest import open_client

SPACE_LETTER_BASE = 1000  # token id of " X" is 1000 + ord("X"); "X" is ord("X")
_OPTION = re.compile(r"^([A-Z])\. (.+)$", re.M)


def chatml(messages: list[dict[str, str]]) -> str:
    out = ""
    for i, msg in enumerate(messages):
        out += f"<|im_start|>{msg['role']}\n{msg['content']}"
        if i < len(messages) - 1:
            out += "<|im_end|>\n"
    return out


def encode(text: str) -> list[int]:
    if len(text) == 2 and text[0] == " " and text[1] in string.ascii_uppercase:
        return [SPACE_LETTER_BASE + ord(text[1])]
    return [ord(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(chr(i - SPACE_LETTER_BASE) if i >= SPACE_LETTER_BASE else chr(i) for i in ids)


@dataclass
class FakeVLLM:
    """Scores options by label preference (+ a bias towards letter A); scripts generations."""

    preference: dict[str, float] = field(default_factory=dict)
    letter_a_bias: float = 1.0
    questions: list[list[str]] = field(default_factory=list)  # one list per propose call
    answers: list[str] = field(default_factory=list)  # cycled over samples
    fact_ids: list[int] = field(default_factory=list)
    fail_first: int = 0  # answer this many requests with 503 first
    requests: list[tuple[str, dict[str, Any], httpx.Headers]] = field(default_factory=list)

    def completions(self) -> list[dict[str, Any]]:
        return [body for path, body, _ in self.requests if path == "/v1/completions"]

    def _letter_logprobs(self, prompt: str, ids: list[int]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for letter, label in _OPTION.findall(prompt):
            scores[letter] = self.preference.get(label, 0.0) + (
                self.letter_a_bias if letter == "A" else 0.0
            )
        top: dict[str, float] = {}
        for token_id in ids:
            letter = chr(
                token_id - SPACE_LETTER_BASE if token_id >= SPACE_LETTER_BASE else token_id
            )
            # Split each letter's mass 3:1 between " X" and "X" so both variants matter.
            share = 0.75 if token_id >= SPACE_LETTER_BASE else 0.25
            top[f"token_id:{token_id}"] = scores.get(letter, -20.0) + math.log(share) - 3.0
        return top

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.requests.append((request.url.path, body, request.headers))
        if self.fail_first > 0:
            self.fail_first -= 1
            return httpx.Response(503, json={"error": {"type": "Unavailable"}})
        path = request.url.path
        if path == "/health":
            return httpx.Response(200)
        if path == "/tokenize":
            text = chatml(body["messages"]) if "messages" in body else body["prompt"]
            ids = encode(text)
            return httpx.Response(200, json={"count": len(ids), "tokens": ids, "max_model_len": 1})
        if path == "/detokenize":
            return httpx.Response(200, json={"prompt": decode(body["tokens"])})
        if path == "/v1/completions":
            return httpx.Response(200, json=self._complete(body))
        return httpx.Response(404, json={"error": {"type": "NotFound"}})

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        n = body.get("n", 1)
        choices: list[dict[str, Any]] = []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                choice: dict[str, Any] = {"index": i * n + j, "text": "", "finish_reason": "stop"}
                if body.get("logprob_token_ids"):
                    choice["text"] = " A"
                    choice["logprobs"] = {
                        "tokens": ["token_id:1065"],
                        "token_logprobs": [-0.1],
                        "top_logprobs": [self._letter_logprobs(prompt, body["logprob_token_ids"])],
                    }
                elif "fact_ids" in json.dumps(body.get("structured_outputs", {})):
                    choice["text"] = json.dumps({"fact_ids": self.fact_ids})
                elif body.get("structured_outputs"):
                    batch = self.questions.pop(0) if self.questions else []
                    choice["text"] = json.dumps({"questions": batch})
                else:
                    k = (i * n + j) % max(1, len(self.answers))
                    choice["text"] = self.answers[k] if self.answers else ""
                choices.append(choice)
        return {"model": body["model"], "choices": choices, "usage": {"prompt_tokens": 1}}


@pytest.fixture
def fake_vllm() -> FakeVLLM:
    return FakeVLLM(preference={"flu": 2.0, "cold": 1.0, "covid": 0.0, "allergy": -1.0})


def unit_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"llm_retry_backoff_s": 0.0, "llm_max_retries": 2}
    return Settings(**{**base, **overrides})


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


# --- the real local server --------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server() -> tuple[str, str]:
    """(base_url, served model): starts the local vLLM server if needed (idempotent)."""
    try:
        return server.up(Settings(), echo=print)
    except server.LocalServerError as exc:
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
    return server.status(Settings()).dtype or "bfloat16"


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
