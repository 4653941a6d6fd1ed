"""A stub of vLLM's OpenAI-compatible server for capacity work: real HTTP, no model.

It speaks the subset of the API the gateway uses (``/health``, ``/v1/models``,
``/tokenize``, ``/detokenize``, ``/v1/completions`` with ``logprob_token_ids`` or
``structured_outputs``, and ``/v1/chat/completions``) with the response shapes of the
real server (``tests/tooling/test_stub_llm.py`` compares them, key by key and type by type,
with the live vLLM answer to the same request). Outputs are deterministic: every choice is
derived from a SHA-256 of the prompt, the seed and the choice's index, so two runs over the
same prompts see the same posteriors, questions and answers.

Latency is configurable: ``latency_ms`` per request plus ``per_token_ms`` per generated
token of the longest choice (vLLM decodes a request's choices side by side, one step per
token), slept on the event loop, so concurrent requests overlap as they do on a GPU with
spare batch slots; ``max_concurrency`` (like vLLM's ``--max-num-seqs``) queues the rest.

Tokens are characters (``ord``), except " A".." Z", which are single tokens above the
Unicode range, so both letter tokenisations the gateway probes exist. The chat template is
ChatML (SmolLM2's). Used by ``pursuit llm stub`` and the worker benchmark, never by serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import string
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["StubConfig", "create_stub_app", "decode", "encode", "serve"]

DEFAULT_MODEL = "pursuit-stub"
MAX_MODEL_LEN = 8192
# The response shapes are vLLM 0.32's (the version ``pursuit llm up`` installs).
FINGERPRINT = "pursuit-stub-vllm-0.32"
_SPACE_LETTER = 0x110000  # " X" is _SPACE_LETTER + ord("X"): past every code point
_ANSWERS = (
    "Yes.",
    "No.",
    "Yes, for about three days.",
    "No, not that I have noticed.",
    "I am not sure.",
    "Sometimes, mostly at night.",
)
_TOPICS = (
    "fever",
    "cough",
    "headache",
    "rash",
    "chest pain",
    "nausea",
    "fatigue",
    "joint pain",
    "shortness of breath",
    "dizziness",
    "sore throat",
    "back pain",
    "weight loss",
    "night sweats",
    "abdominal pain",
    "palpitations",
)
_FRAMES = (
    "Have you had any {t} recently?",
    "How long have you had the {t}?",
    "Does the {t} get worse with activity?",
    "Has anyone in your family had {t}?",
    "Did the {t} start suddenly?",
)


@dataclass(frozen=True, slots=True)
class StubConfig:
    """The stub's knobs: served name, latencies, concurrency cap (0: none)."""

    model: str = DEFAULT_MODEL
    latency_ms: float = 0.0
    per_token_ms: float = 0.0
    max_concurrency: int = 0


def encode(text: str) -> list[int]:
    """Character tokens; " A".." Z" alone is one token."""
    if len(text) == 2 and text[0] == " " and text[1] in string.ascii_uppercase:
        return [_SPACE_LETTER + ord(text[1])]
    return [ord(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(" " + chr(i - _SPACE_LETTER) if i >= _SPACE_LETTER else chr(i) for i in ids)


def _token_text(token_id: int) -> str:
    return decode([token_id])


def chatml(
    messages: list[dict[str, Any]], *, add_generation_prompt: bool, continue_final: bool
) -> str:
    """SmolLM2's ChatML template as vLLM applies it for /tokenize and chat completions."""
    out = ""
    for i, msg in enumerate(messages):
        out += f"<|im_start|>{msg['role']}\n{msg['content']}"
        last = i == len(messages) - 1
        if not (last and continue_final):
            out += "<|im_end|>\n"
    if add_generation_prompt and not continue_final:
        out += "<|im_start|>assistant\n"
    return out


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2.0**64


def _pick(options: tuple[str, ...] | list[Any], *parts: object) -> Any:
    return options[int(_unit(*parts) * len(options))]


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status_code=status,
    )


def _instance(schema: dict[str, Any], key: str, path: str = "") -> Any:
    """A deterministic instance of the small JSON schemas the gateway sends."""
    kind = schema.get("type")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        return {name: _instance(sub, key, f"{path}.{name}") for name, sub in props.items()}
    if kind == "array":
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", low + 3))
        count = low + int(_unit(key, path, "n") * (high - low + 1))
        items = schema.get("items", {"type": "string"})
        if items.get("type") == "string":  # distinct strings: questions must not repeat
            start = int(_unit(key, path, "start") * len(_TOPICS) * len(_FRAMES))
            return [
                _question(start + i, items) for i in range(min(count, len(_TOPICS) * len(_FRAMES)))
            ]
        return [_instance(items, key, f"{path}[{i}]") for i in range(count)]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 9))
        return low + int(_unit(key, path) * (high - low + 1))
    if kind == "number":
        return round(_unit(key, path), 6)
    if kind == "boolean":
        return _unit(key, path) < 0.5
    return str(_pick(_TOPICS, key, path))


def _question(index: int, schema: dict[str, Any]) -> str:
    topic = _TOPICS[index % len(_TOPICS)]
    text = _FRAMES[(index // len(_TOPICS)) % len(_FRAMES)].format(t=topic)
    return text[: int(schema.get("maxLength", len(text)))]


@dataclass(frozen=True, slots=True)
class _Choice:
    text: str
    tokens: int
    logprobs: dict[str, Any] | None
    finish_reason: str


def _letter_choice(prompt: str, body: dict[str, Any]) -> _Choice:
    """One generated token with the requested ids' logprobs (raw, summing to < 1)."""
    ids = [int(i) for i in body.get("logprob_token_ids") or []]
    weights = [0.05 + _unit(prompt, "letter", i) for i in ids]
    total = sum(weights) / 0.9  # the letters hold 90% of the mass, like a confident model
    logprob = {i: math.log(w / total) for i, w in zip(ids, weights, strict=True)}
    best = max(ids, key=lambda i: logprob[i])
    as_ids = bool(body.get("return_tokens_as_token_ids"))

    def name(token_id: int) -> str:
        return f"token_id:{token_id}" if as_ids else _token_text(token_id)

    top = {name(best): logprob[best]} | {name(i): logprob[i] for i in ids}
    return _Choice(
        text=_token_text(best),
        tokens=1,
        logprobs={
            "text_offset": [0],
            "token_logprobs": [logprob[best]],
            "tokens": [name(best)],
            "top_logprobs": [top],
        },
        finish_reason="length",
    )


def _text_choice(prompt: str, body: dict[str, Any], index: int) -> _Choice:
    seed = body.get("seed")
    structured = body.get("structured_outputs") or {}
    if structured.get("json") is not None:
        text = json.dumps(_instance(structured["json"], f"{prompt}\x00{seed}\x00{index}"))
    elif structured.get("choice"):
        text = str(_pick(list(structured["choice"]), prompt, seed, index))
    else:
        text = str(_pick(_ANSWERS, prompt, seed, index))
    limit = int(body.get("max_tokens") or 16)
    finish = "stop"
    if len(text) > limit:
        text, finish = text[:limit], "length"
    return _Choice(text=text, tokens=max(1, len(text)), logprobs=None, finish_reason=finish)


class _Stub:
    def __init__(self, config: StubConfig) -> None:
        self.config = config
        self._gate = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        self.requests = 0

    async def _wait(self, decode_steps: int) -> None:
        delay = (self.config.latency_ms + self.config.per_token_ms * decode_steps) / 1000.0
        if delay <= 0:
            return
        if self._gate is None:
            await asyncio.sleep(delay)
            return
        async with self._gate:
            await asyncio.sleep(delay)

    def _model_error(self, body: dict[str, Any]) -> JSONResponse | None:
        if body.get("model") not in (None, self.config.model):
            return _error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.")
        return None

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def models(self, request: Request) -> Response:
        model = self.config.model
        card = {
            "id": model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": MAX_MODEL_LEN,
            "permission": [
                {
                    "id": "modelperm-stub",
                    "object": "model_permission",
                    "created": int(time.time()),
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def tokenize(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        if (bad := self._model_error(body)) is not None:
            return bad
        if "messages" in body:
            text = chatml(
                body["messages"],
                add_generation_prompt=bool(body.get("add_generation_prompt", True)),
                continue_final=bool(body.get("continue_final_message", False)),
            )
        else:
            text = str(body.get("prompt", ""))
        ids = encode(text)
        return JSONResponse(
            {"count": len(ids), "max_model_len": MAX_MODEL_LEN, "tokens": ids, "token_strs": None}
        )

    async def detokenize(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        if (bad := self._model_error(body)) is not None:
            return bad
        return JSONResponse({"prompt": decode([int(i) for i in body.get("tokens", [])])})

    async def completions(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        if (bad := self._model_error(body)) is not None:
            return bad
        raw = body.get("prompt")
        prompts = raw if isinstance(raw, list) else [raw]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return _error(400, "BadRequestError", "prompt must be a string or a list of strings")
        n = int(body.get("n") or 1)
        self.requests += 1
        choices: list[dict[str, Any]] = []
        steps = 0
        prompt_tokens = 0
        completion_tokens = 0
        for i, prompt in enumerate(prompts):
            prompt_tokens += len(encode(prompt))
            for j in range(n):
                made = (
                    _letter_choice(prompt, body)
                    if body.get("logprob_token_ids")
                    else _text_choice(prompt, body, j)
                )
                steps = max(steps, made.tokens)
                completion_tokens += made.tokens
                choices.append(
                    {
                        "index": i * n + j,
                        "text": made.text,
                        "logprobs": made.logprobs,
                        "finish_reason": made.finish_reason,
                        "stop_reason": None,
                        "token_ids": None,
                        "prompt_logprobs": None,
                        "prompt_token_ids": None,
                        "routed_experts": None,
                    }
                )
        await self._wait(steps)
        return JSONResponse(
            {
                "id": "cmpl-" + _digest(*prompts, body.get("seed")).hex()[:32],
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.config.model,
                "choices": choices,
                "service_tier": None,
                "system_fingerprint": FINGERPRINT,
                "usage": _usage(prompt_tokens, completion_tokens),
                "kv_transfer_params": None,
                "ec_transfer_params": None,
                "metrics": None,
            }
        )

    async def chat(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        if (bad := self._model_error(body)) is not None:
            return bad
        prompt = chatml(body.get("messages", []), add_generation_prompt=True, continue_final=False)
        n = int(body.get("n") or 1)
        self.requests += 1
        made = [_text_choice(prompt, body, j) for j in range(n)]
        await self._wait(max(c.tokens for c in made))
        return JSONResponse(
            {
                "id": "chatcmpl-" + _digest(prompt, body.get("seed")).hex()[:32],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.config.model,
                "choices": [
                    {
                        "index": j,
                        "message": {
                            "role": "assistant",
                            "content": c.text,
                            "refusal": None,
                            "annotations": None,
                            "audio": None,
                            "function_call": None,
                            "reasoning": None,
                        },
                        "logprobs": None,
                        "finish_reason": c.finish_reason,
                        "stop_reason": None,
                        "token_ids": None,
                        "routed_experts": None,
                    }
                    for j, c in enumerate(made)
                ],
                "service_tier": None,
                "system_fingerprint": FINGERPRINT,
                "usage": _usage(len(encode(prompt)), sum(c.tokens for c in made)),
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "prompt_text": None,
                "kv_transfer_params": None,
                "ec_transfer_params": None,
                "metrics": None,
            }
        )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


async def _json(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "BadRequestError", "the body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "BadRequestError", "the body is not a JSON object")
    return body


def create_stub_app(config: StubConfig) -> Starlette:
    """The stub as an ASGI app (tests mount it; ``serve`` runs it under uvicorn)."""
    stub = _Stub(config)
    app = Starlette(
        routes=[
            Route("/health", stub.health, methods=["GET"]),
            Route("/v1/models", stub.models, methods=["GET"]),
            Route("/tokenize", stub.tokenize, methods=["POST"]),
            Route("/detokenize", stub.detokenize, methods=["POST"]),
            Route("/v1/completions", stub.completions, methods=["POST"]),
            Route("/v1/chat/completions", stub.chat, methods=["POST"]),
        ]
    )
    app.state.stub = stub
    return app


def serve(config: StubConfig, *, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Run the stub until interrupted (``pursuit llm stub``)."""
    import uvicorn  # tooling only: imported where it is used

    uvicorn.run(
        create_stub_app(config), host=host, port=port, log_level="warning", access_log=False
    )
