"""The stub LLM server (``app/tooling/stub_llm.py``) over real HTTP: the gateway works against it, its
outputs are deterministic, its latency is what it was told, and its response shapes are the
real vLLM server's (keys and types, compared on the same requests)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from app.engine.types import QA, CaseContext
from app.llm import prompts
from app.llm.cache import LRUPosteriorCache
from app.llm.gateway import LLMGateway
from app.patients import LLMPatient
from app.settings import Settings
from app.tooling.stub_llm import StubConfig, create_stub_app
from tests.ports import free_port

CASE = CaseContext(summary="Fever and cough for three days.", age=30, sex="female")
LABELS = ["flu", "cold", "covid", "allergy"]
INQUIRY = "What is the most likely diagnosis?"
HISTORIES = [(), (QA("Any fever?", "Yes."),), (QA("Any fever?", "No."),)]


def run_stub(config: StubConfig) -> Iterator[str]:
    """The stub under uvicorn in a thread on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_stub_app(config), host="127.0.0.1", port=port, log_config=None, access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the stub did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    yield from run_stub(StubConfig())


@pytest.fixture
async def stub_http(stub_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stub_url, timeout=10) as http:
        yield http


def stub_gateway(http: httpx.AsyncClient, permutations: int = 1) -> LLMGateway:
    return LLMGateway(
        http=http,
        model="pursuit-stub",
        settings=Settings(llm_retry_backoff_s=0.0),
        cache=LRUPosteriorCache(0),
        permutations=permutations,
    )


# --- the gateway against the stub --------------------------------------------------------------


@pytest.mark.parametrize("permutations", [1, 4])
async def test_posteriors_through_the_gateway_are_deterministic(
    stub_http: httpx.AsyncClient, permutations: int
) -> None:
    first = await stub_gateway(stub_http, permutations).label_posteriors(
        case=CASE, histories=HISTORIES, inquiry=INQUIRY, labels=LABELS
    )
    again = await stub_gateway(stub_http, permutations).label_posteriors(
        case=CASE, histories=HISTORIES, inquiry=INQUIRY, labels=LABELS
    )
    assert first.shape == (3, 4)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[1], first[2])  # the answer changes the prompt, so the output


async def test_the_gateway_learns_chatml_and_both_letter_tokens(
    stub_http: httpx.AsyncClient,
) -> None:
    gateway = stub_gateway(stub_http)
    setup = await gateway._ensure_setup()
    assert not setup.frame.system_in_user
    assert all(len(ids) == 2 for ids in setup.letter_ids)  # "A" and " A"
    rendered = setup.frame.render(system="S", user="U", prefill=prompts.POSTERIOR_PREFILL)
    assert rendered.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU")


async def test_proposals_answers_and_fact_selection(stub_http: httpx.AsyncClient) -> None:
    gateway = stub_gateway(stub_http)
    questions = await gateway.propose_questions(
        case=CASE, history=(), inquiry=INQUIRY, labels=LABELS, n=4
    )
    assert len(questions) == 4 and len(set(questions)) == 4
    assert all(q.endswith("?") for q in questions)
    again = await stub_gateway(stub_http).propose_questions(
        case=CASE, history=(), inquiry=INQUIRY, labels=LABELS, n=4
    )
    assert again == questions
    answers = await gateway.simulate_answers_batch(
        case=CASE, history=(), questions=questions[:2], m=4
    )
    assert len(answers) == 2
    for weighted in answers:
        assert weighted and sum(a.weight for a in weighted) == pytest.approx(1.0)
    facts = ["She has a fever of 39 C.", "She coughs at night.", "No rash."]
    replies = await LLMPatient(gateway).patient_replies(facts=facts, questions=questions[:3])
    for reply in replies:
        assert reply == prompts.CANNOT_ANSWER or all(
            part.strip() in " ".join(facts) for part in reply.split(".") if part.strip()
        )


async def test_latency_per_request_and_per_token() -> None:
    for url in run_stub(StubConfig(latency_ms=150, per_token_ms=10)):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            body = {"model": "pursuit-stub", "prompt": "hello", "max_tokens": 1}
            started = time.perf_counter()
            await http.post("/v1/completions", json=body)
            one = time.perf_counter() - started
            started = time.perf_counter()
            await http.post("/v1/completions", json={**body, "prompt": "x", "max_tokens": 30})
            many = time.perf_counter() - started
    assert 0.15 <= one < 0.5
    assert many >= 0.15 + 0.01 * 2  # "Yes." at least: 4 tokens of 10 ms on top


async def test_the_wrong_model_is_refused_like_vllm(stub_http: httpx.AsyncClient) -> None:
    resp = await stub_http.post(
        "/v1/completions", json={"model": "other", "prompt": "x", "max_tokens": 1}
    )
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "NotFoundError"


# --- the same requests against the stub and the real server ------------------------------------

_TOKEN_KEY = re.compile(r"^token_id:\d+$")


def shape(value: Any) -> Any:
    """Keys and types of a JSON value; lists by their distinct element shapes; dicts keyed by
    token (``top_logprobs``) as one entry."""
    if isinstance(value, dict):
        if value and all(_TOKEN_KEY.match(k) for k in value):
            return {"token_id:N": sorted({shape(v) for v in value.values()}, key=str)}
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            s = shape(item)
            if s not in out:
                out.append(s)
        return out
    if value is None:
        return "null"
    return type(value).__name__


def _requests(model: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    messages = [
        {"role": "system", "content": "QQSYSTEMQQ"},
        {"role": "user", "content": "QQUSERQQ"},
        {"role": "assistant", "content": "QQASSISTANTQQ"},
    ]
    prompt = "<|im_start|>user\nWhich letter? A. flu B. cold<|im_end|>\n<|im_start|>assistant\n"
    return [
        ("GET", "/v1/models", None),
        (
            "POST",
            "/tokenize",
            {
                "model": model,
                "messages": messages,
                "add_generation_prompt": False,
                "continue_final_message": True,
                "add_special_tokens": False,
            },
        ),
        ("POST", "/tokenize", {"model": model, "prompt": " A", "add_special_tokens": False}),
        ("POST", "/detokenize", {"model": model, "tokens": [65, 66]}),
        (
            "POST",
            "/v1/completions",  # the letter scoring request (ids made valid below)
            {
                "model": model,
                "prompt": [prompt + "Answer:", prompt + "Answer: "],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 1,
                "logprob_token_ids": "LETTERS",
                "return_tokens_as_token_ids": True,
                "add_special_tokens": False,
            },
        ),
        (
            "POST",
            "/v1/completions",  # simulated answers: n samples of each prompt
            {
                "model": model,
                "prompt": [prompt, prompt + "Yes"],
                "n": 2,
                "max_tokens": 8,
                "temperature": 1.0,
                "top_p": 0.95,
                "stop": ["\n"],
                "seed": 7,
                "add_special_tokens": False,
            },
        ),
        (
            "POST",
            "/v1/completions",  # proposals and fact selection: a JSON schema
            {
                "model": model,
                "prompt": prompt,
                "max_tokens": 40,
                "temperature": 0.0,
                "structured_outputs": {
                    "json": {
                        "type": "object",
                        "properties": {
                            "fact_ids": {
                                "type": "array",
                                "items": {"type": "integer", "minimum": 1, "maximum": 3},
                                "maxItems": 2,
                            }
                        },
                        "required": ["fact_ids"],
                        "additionalProperties": False,
                    }
                },
                "add_special_tokens": False,
            },
        ),
        (
            "POST",
            "/v1/chat/completions",
            {
                "model": model,
                "messages": messages[:2],
                "max_tokens": 8,
                "temperature": 0.0,
            },
        ),
    ]


async def _send(
    http: httpx.AsyncClient, model: str, method: str, path: str, body: dict[str, Any] | None
) -> Any:
    if body is not None and body.get("logprob_token_ids") == "LETTERS":
        ids: list[int] = []
        for text in ("A", " A", "B", " B"):
            tok = await http.post(
                "/tokenize", json={"model": model, "prompt": text, "add_special_tokens": False}
            )
            ids.append(tok.json()["tokens"][0])
        body = {**body, "logprob_token_ids": ids}
    resp = await http.request(method, path, json=body)
    assert resp.status_code == 200, (path, resp.status_code)
    return resp.json()


@pytest.mark.llm
async def test_response_shapes_equal_the_real_servers(
    stub_http: httpx.AsyncClient, live_http: httpx.AsyncClient, live_server: tuple[str, str]
) -> None:
    live_model = live_server[1]
    live_requests = _requests(live_model)
    stub_requests = _requests("pursuit-stub")
    for (method, path, live_body), (_, _, stub_body) in zip(
        live_requests, stub_requests, strict=True
    ):
        real = await _send(live_http, live_model, method, path, live_body)
        ours = await _send(stub_http, "pursuit-stub", method, path, stub_body)
        assert shape(ours) == shape(real), path
