"""An in-memory stand-in for vLLM's HTTP API (``httpx.MockTransport``): a ChatML template,
" X"/"X" letter tokens and scripted outputs, for unit tests of the gateway and of everything
that talks to the LLM through it (the ``fake_vllm`` fixture in tests/llm/conftest.py)."""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.settings import Settings

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


def unit_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"llm_retry_backoff_s": 0.0, "llm_max_retries": 2}
    return Settings(**{**base, **overrides})
