"""One C-IP turn against a running vLLM server: gateway overhead and what batching buys.

A turn scores |questions| x |answers| histories (default 8 x 4 = 32) that share a ~500-token
prefix (system, case, inquiry, options, interview so far) and differ in the last QA. Per round
it times, each on a fresh prefix (a nonce opens the case text, so no method profits from the
prefix cache warmed by another):

- raw:        one POST /v1/completions with the list of prompts (the gateway's exact body);
- gateway:    ``LLMGateway.label_posteriors`` over the 32 histories (render, dedupe, request,
              parse, renormalise; posterior cache disabled);
- sequential: the same 32 histories one call (one request) at a time.

Then it samples the candidate answers (``simulate_answers_batch``, m per question) and reports
the evaluations per turn before and after merging identical answers.

    .venv/bin/python benchmarks/llm_bench.py            # server from PURSUIT_LLM_* or 127.0.0.1:8001
    .venv/bin/python benchmarks/llm_bench.py --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import structlog

from app.engine.types import QA, CaseContext, History
from app.llm.cache import LRUPosteriorCache
from app.llm.client import llm_http_client
from app.llm.gateway import LLMGateway
from app.settings import Settings

INQUIRY = "What is the most likely diagnosis?"
LABELS = [
    "Acute myocardial infarction",
    "Pulmonary embolism",
    "Aortic dissection",
    "Gastro-oesophageal reflux disease",
]
SUMMARY = (
    "A 58-year-old man presents to the emergency department with chest pain that began about "
    "two hours ago while he was carrying shopping up the stairs. He describes the pain as a "
    "heavy pressure in the centre of the chest, 8 out of 10 in severity, spreading to the left "
    "shoulder and jaw. It did not settle with rest. He feels sweaty and short of breath and "
    "vomited once in the ambulance. He has a history of type 2 diabetes treated with "
    "metformin, high blood pressure treated with amlodipine, and raised cholesterol for which "
    "he stopped taking a statin last year because of muscle aches. He has smoked 20 cigarettes "
    "a day for 35 years and drinks about 14 units of alcohol a week. His father died of a "
    "heart attack at 61. He works as a lorry driver and recently completed a long-distance "
    "trip across the country, sitting for many hours at a time. On examination he is pale and "
    "clammy. Heart rate 104 beats per minute and regular, blood pressure 152/94 mmHg in the "
    "right arm and 148/90 mmHg in the left arm, respiratory rate 22 per minute, oxygen "
    "saturation 94% on room air, temperature 36.8 C. Heart sounds are normal with no murmur. "
    "The chest is clear. There is no calf swelling or tenderness. The abdomen is soft and "
    "non-tender. Peripheral pulses are present and equal. He is anxious and asks whether he is "
    "having a heart attack. An ECG and blood tests have been requested but results are not yet "
    "available. He took an aspirin at home before calling the ambulance. He has never had "
    "similar pain before, although he has noticed some indigestion after large meals over the "
    "past few months, which settled with antacids bought at the pharmacy."
)
HISTORY: History = (
    QA(
        "Did anything make the pain better or worse?",
        "Nothing helps; breathing does not change it.",
    ),
    QA("Have you had any recent surgery or long periods in bed?", "No surgery, but long drives."),
)
QUESTIONS = [
    "Does the pain go through to your back?",
    "Is the pain worse when you lie flat?",
    "Have you coughed up any blood?",
    "Does the pain get worse after eating?",
    "Did the pain start suddenly, like a tear?",
    "Have you noticed any swelling in your legs?",
    "Do you feel the pain when you press on your chest?",
    "Have you had a sour taste in your mouth?",
]
ANSWERS = ["Yes.", "No.", "A little, I am not sure.", "I have not noticed."]


def _case(nonce: str) -> CaseContext:
    return CaseContext(summary=f"Case ref {nonce}. {SUMMARY}", age=58, sex="male")


def _histories(n_questions: int, n_answers: int) -> list[History]:
    return [(*HISTORY, QA(q, a)) for q in QUESTIONS[:n_questions] for a in ANSWERS[:n_answers]]


async def _prompt_tokens(http: httpx.AsyncClient) -> dict[str, float]:
    """vLLM's counters of prompt tokens computed vs served from the prefix cache."""
    out = {"local_compute": 0.0, "local_cache_hit": 0.0}
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("vllm:prompt_tokens_by_source_total{"):
            for source in out:
                if f'source="{source}"' in line:
                    out[source] = float(line.rsplit(" ", 1)[1])
    return out


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    base_url = args.base_url or settings.llm_base_url or "http://127.0.0.1:8001"
    model = args.model or settings.llm_model or "smollm2-135m"
    histories = _histories(args.questions, args.answers)
    async with llm_http_client(settings, base_url) as http:
        gateway = LLMGateway(http=http, model=model, settings=settings, cache=LRUPosteriorCache(0))
        setup = await gateway._ensure_setup()
        letter_ids = setup.letter_ids[: len(LABELS)]

        def prompts_for(nonce: str) -> list[str]:
            table, _ = gateway.posterior_prompts(
                setup, case=_case(nonce), histories=histories, inquiry=INQUIRY, labels=LABELS
            )
            return table[0]

        sample = prompts_for("warmup")
        shared = 0
        while shared < min(len(sample[0]), len(sample[-1])) and (
            sample[0][shared] == sample[-1][shared]
        ):
            shared += 1
        tok = await http.post(
            "/tokenize", json={"model": model, "prompt": sample[0], "add_special_tokens": False}
        )
        tok_prefix = await http.post(
            "/tokenize",
            json={"model": model, "prompt": sample[0][:shared], "add_special_tokens": False},
        )
        prompt_tokens, prefix_tokens = tok.json()["count"], tok_prefix.json()["count"]
        await gateway.label_posteriors(
            case=_case("warmup"), histories=histories[:4], inquiry=INQUIRY, labels=LABELS
        )

        recorded: list[bytes] = []

        async def raw(nonce: str) -> None:
            body = gateway.scoring_request(prompts_for(nonce), letter_ids).to_json()
            resp = await http.post(
                "/v1/completions", content=body, headers={"Content-Type": "application/json"}
            )
            resp.raise_for_status()
            assert len(resp.json()["choices"]) == len(histories)
            recorded.append(resp.content)

        async def via_gateway(nonce: str) -> None:
            await gateway.label_posteriors(
                case=_case(nonce), histories=histories, inquiry=INQUIRY, labels=LABELS
            )

        async def sequential(nonce: str) -> None:
            for history in histories:
                await gateway.label_posteriors(
                    case=_case(nonce), histories=[history], inquiry=INQUIRY, labels=LABELS
                )

        methods: dict[str, Callable[[str], Awaitable[None]]] = {
            "raw_list_request": raw,
            "gateway_batched": via_gateway,
            "one_at_a_time": sequential,
        }
        if args.methods:
            methods = {name: methods[name] for name in args.methods.split(",")}
        times: dict[str, list[float]] = {name: [] for name in methods}
        computed: dict[str, list[float]] = {name: [] for name in methods}
        cache_hit: dict[str, list[float]] = {name: [] for name in methods}
        for r in range(args.rounds):
            names = list(methods)
            names = names[r % len(names) :] + names[: r % len(names)]  # rotate to cancel drift
            for name in names:
                nonce = uuid.uuid4().hex[:8]
                before = await _prompt_tokens(http)
                elapsed = await _timed(partial(methods[name], nonce))
                after = await _prompt_tokens(http)
                times[name].append(elapsed)
                computed[name].append(after["local_compute"] - before["local_compute"])
                cache_hit[name].append(after["local_cache_hit"] - before["local_cache_hit"])
                print(
                    f"round {r + 1} {name:18s} {elapsed:7.2f} s  prompt tokens computed "
                    f"{computed[name][-1]:6.0f}, from prefix cache {cache_hit[name][-1]:6.0f}",
                    flush=True,
                )

        med = {name: statistics.median(v) for name, v in times.items()}
        result: dict[str, Any] = {
            "base_url": base_url,
            "model": model,
            "posteriors_per_turn": len(histories),
            "prompt_tokens": prompt_tokens,
            "shared_prefix_tokens": prefix_tokens,
            "rounds": args.rounds,
            "seconds": times,
            "median_s": med,
            "median_prompt_tokens_computed": {
                name: statistics.median(v) for name, v in computed.items()
            },
            "median_prompt_tokens_from_cache": {
                name: statistics.median(v) for name, v in cache_hit.items()
            },
            "gateway_overhead_vs_raw": med["gateway_batched"] / med["raw_list_request"] - 1,
            "paired_overhead_per_round": [
                g / r - 1
                for g, r in zip(times["gateway_batched"], times["raw_list_request"], strict=True)
            ],
            "one_at_a_time_vs_batched": (
                med["one_at_a_time"] / med["gateway_batched"] if "one_at_a_time" in med else None
            ),
        }

        # The gateway's own work (render, dedupe, cache keys, request/response models,
        # renormalising), timed without the server's noise: the recorded raw response is
        # replayed by an in-process transport.
        recorded_json = json.loads(recorded[0])

        def replay(request: httpx.Request) -> httpx.Response:
            n = len(json.loads(request.content)["prompt"])
            return httpx.Response(
                200, json={**recorded_json, "choices": recorded_json["choices"][:n]}
            )

        async with httpx.AsyncClient(
            transport=httpx.MockTransport(replay), base_url="http://replay"
        ) as fake:
            offline = LLMGateway(
                http=fake, model=model, settings=settings, cache=LRUPosteriorCache(0)
            )
            offline._setup = setup
            client_ms: list[float] = []
            for _ in range(20):
                elapsed = await _timed(
                    lambda: offline.label_posteriors(
                        case=_case(uuid.uuid4().hex[:8]),
                        histories=histories,
                        inquiry=INQUIRY,
                        labels=LABELS,
                    )
                )
                client_ms.append(elapsed * 1000)
        result["gateway_client_side_ms_median"] = statistics.median(client_ms)
        result["gateway_client_side_vs_raw"] = (
            statistics.median(client_ms) / 1000 / med["raw_list_request"]
        )

        if not args.skip_simulate:
            started = time.perf_counter()
            answers = await gateway.simulate_answers_batch(
                case=_case("simulate"),
                history=HISTORY,
                questions=QUESTIONS[: args.questions],
                m=args.answers,
            )
            result["simulate_s"] = time.perf_counter() - started
            result["evaluations_before_merge"] = args.questions * args.answers
            result["evaluations_after_merge"] = sum(len(a) for a in answers)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--answers", type=int, default=4)
    parser.add_argument("--skip-simulate", action="store_true")
    parser.add_argument(
        "--methods", help="comma-separated subset, e.g. raw_list_request,gateway_batched"
    )
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
