"""Measure what one interview turn asks of the LLM server (the numbers in docs/deploy.md).

Runs the real API in-process against the process stack's database and LLM server
(``scripts/stack.sh up`` first), with every posterior cache off, and records each request the
LLM gateway sends: kind, prompts, sampled answers, prompt and generated tokens (vLLM's
``usage``), wall time. Opens one C-IP session (turn 0) and answers its question (turn 1)::

    .venv/bin/python -m benchmarks.measure_turn [--questions 8] [--answers 4] [--json OUT]

Not a test: it takes minutes on a CPU vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.logging import configure_logging
from app.main import create_app
from app.settings import Settings

STACK_DIR = Path("var/stack")
CASE = {
    "patient": {
        "summary": "A 34-year-old woman with two days of fever, headache and a stiff neck. "
        "She vomited twice this morning and finds the light in the room unpleasant.",
        "age": 34,
        "sex": "female",
    },
    "inquiry": "What is the most likely diagnosis?",
    "candidates": ["Bacterial meningitis", "Viral meningitis", "Migraine", "Influenza"],
    "alpha": 0.1,
    "policy": "cip",
    "question_source": "generated",
    "max_questions": 5,
}


@dataclass
class Call:
    kind: str
    prompts: int
    n: int
    max_tokens: int | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class Turn:
    name: str
    seconds: float = 0.0
    calls: list[Call] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # vLLM /metrics deltas

    def summary(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for call in self.calls:
            row = by_kind[call.kind]
            row["requests"] += 1
            row["prompts"] += call.prompts
            row["sequences"] += call.prompts * call.n
            row["prompt_tokens"] += call.prompt_tokens
            row["completion_tokens"] += call.completion_tokens
        for row in by_kind.values():
            row["prompt_tokens_per_prompt"] = round(row["prompt_tokens"] / row["prompts"], 1)
        return {
            "turn": self.name,
            "seconds": round(self.seconds, 1),
            "requests": len(self.calls),
            "prompts": sum(c.prompts for c in self.calls),
            "prompt_tokens": sum(c.prompt_tokens for c in self.calls),
            "completion_tokens": sum(c.completion_tokens for c in self.calls),
            "by_kind": {k: dict(v) for k, v in by_kind.items()},
            "vllm_metrics_delta": self.metrics,
        }


def _kind(body: dict[str, Any]) -> str:
    if body.get("logprob_token_ids"):
        return "posterior"
    if body.get("structured_outputs"):
        return "structured (question proposal)"
    return "generation (candidate answers)"


METRICS = (
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
)


async def _metrics(http: httpx.AsyncClient) -> dict[str, float]:
    """Selected vLLM counters, summed over their labels."""
    totals = dict.fromkeys(METRICS, 0.0)
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


async def _timed_turn(turns: list[Turn], name: str, http: httpx.AsyncClient, send: Any) -> Any:
    turns.append(Turn(name))
    before = await _metrics(http)
    t0 = time.monotonic()
    response = await send()
    turns[-1].seconds = time.monotonic() - t0
    after = await _metrics(http)
    turns[-1].metrics = {k.removeprefix("vllm:"): after[k] - before[k] for k in METRICS}
    response.raise_for_status()
    print(json.dumps(turns[-1].summary(), indent=2), flush=True)
    return response.json()


def _stack_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (STACK_DIR / "stack.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


async def measure(
    questions: int, answers: int, *, env: dict[str, str], key: str, alpha: float = 0.1
) -> list[Turn]:
    settings = Settings(
        database_url=env["PURSUIT_DATABASE_URL"],
        redis_url=None,  # no shared posterior cache: count every call a cold turn makes
        llm_base_url=env["PURSUIT_LLM_BASE_URL"],
        llm_model=env["PURSUIT_LLM_MODEL"],
        llm_cache_size=0,
        data_dir=STACK_DIR / "data",
        llm_read_timeout_s=600,
    )
    app = create_app(settings)
    turns: list[Turn] = []
    started: dict[int, float] = {}

    async def on_request(request: httpx.Request) -> None:
        started[id(request)] = time.monotonic()

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path != "/v1/completions" or not turns:
            return
        await response.aread()
        body = json.loads(response.request.content)
        usage = response.json().get("usage") or {}
        prompt = body["prompt"]
        turns[-1].calls.append(
            Call(
                kind=_kind(body),
                prompts=len(prompt) if isinstance(prompt, list) else 1,
                n=int(body.get("n") or 1),
                max_tokens=body.get("max_tokens"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                seconds=time.monotonic() - started.pop(id(response.request), time.monotonic()),
            )
        )

    async with app.router.lifespan_context(app):
        http = app.state.resources.llm_http
        http.event_hooks = {"request": [on_request], "response": [on_response]}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://measure",
            headers={"Authorization": f"Bearer {key}"},
            timeout=1800,
        ) as client:
            body = {
                **CASE,
                "n_candidate_questions": questions,
                "n_answers": answers,
                "alpha": alpha,
            }
            session = await _timed_turn(
                turns,
                "turn 0 (open the session)",
                http,
                lambda: client.post("/v1/sessions", json=body),
            )
            question = session["next_question"]
            if question is None:
                print(f"stopped after turn 0: {session['stop_reason']}")
            else:
                await _timed_turn(
                    turns,
                    "turn 1 (answer the first question)",
                    http,
                    lambda: client.post(
                        f"/v1/sessions/{session['id']}/answers",
                        json={"question_id": question["id"], "answer": "Yes, since yesterday."},
                    ),
                )
            await client.delete(f"/v1/sessions/{session['id']}")
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the LLM calls of one interview turn.")
    parser.add_argument("--questions", type=int, default=8, help="Q: candidate questions")
    parser.add_argument("--answers", type=int, default=4, help="M: answers per question")
    parser.add_argument("--alpha", type=float, default=0.1, help="miscoverage level")
    parser.add_argument("--json", type=Path, help="also write the raw calls here")
    parser.add_argument("--llm-base-url", help="another vLLM server (default: the stack's)")
    args = parser.parse_args()
    configure_logging(level="WARNING", json=False)
    env = _stack_env()
    if args.llm_base_url:
        env["PURSUIT_LLM_BASE_URL"] = args.llm_base_url
    key = Path(env["PURSUIT_STACK_API_KEY_FILE"]).read_text().strip()
    turns = asyncio.run(measure(args.questions, args.answers, env=env, key=key, alpha=args.alpha))
    if args.json:
        args.json.write_text(
            json.dumps([{"turn": t.name, "calls": [asdict(c) for c in t.calls]} for t in turns])
        )


if __name__ == "__main__":
    main()
