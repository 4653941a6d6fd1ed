"""The LLM as the 20 Questions questioner's model (``pursuit bench20q --provider llm``).

Everything the questioner knows comes from the LLM, through the one gateway
(``app.llm.LLMGateway``); the game's data supply only the labels, the closed question bank
and the player's answers (``answers_yesno``), never a probability.

- **Label posterior** ``p(y | h)``: the gateway's ``label_posteriors`` with the animals as
  options (letters A..T for the 20 animals): one prompt per history and option order, the
  letters' next-token probabilities renormalised, ``permutations`` cyclic orders averaged.
  The letters stop at Z, so the 50-animal game is refused (``MAX_LABELS``).
- **Answer weights** ``P(a | h, q)`` for a candidate question q: the LLM's own prediction of
  the player's answer, read the same way, a two-option ``label_posteriors`` call with the
  candidate question as the inquiry and the options "Yes" / "No", averaged over both option
  orders by default (a one-letter position bias would otherwise tilt every weight the same
  way). The answers are returned as the player's own texts ("Yes." / "No."), so the
  posterior of ``h + (q, a)`` scored for the objective is the same prompt as the posterior at
  the next step, and the gateway's cache serves it. Not used: the posterior mixture over
  the data's yes/no table (that is the tabular model, not the LLM) and sampled free-text
  answers (to a yes/no question they can only be yes or no; scoring the two is exact and
  needs no generation).
- **Temperature** T applies to the label posterior only: ``p_T(y | h) ∝ p(y | h) ** (1 / T)``
  (a temperature on the LLM's letter distribution after the order average; T = 1 leaves it
  as the LLM gives it). On the tabular model this is exactly the bench's temperature; the
  answer weights stay as the LLM gives them.
- **Cost** per turn of C-IP or IP with ``K`` candidate questions (``--candidates``): ``K x 2``
  answer prompts and ``K x 2 x permutations`` label prompts (``h + (q, yes/no)``); the bare
  history's prompt is a cache hit from the turn before. ``random`` scores one prompt a turn.
  Identical prompts (every game's opening posterior, candidates that games share, the same
  history under another policy) are scored once per run: both gateways share one
  in-process cache, whose hits and stores ``LLMFactory.counts`` adds up.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
import numpy as np
import numpy.typing as npt

from app.engine.banks import dedupe_questions
from app.engine.scoring import PROB_FLOOR
from app.engine.types import CaseContext, History, PosteriorProvider, ProviderInfo, WeightedAnswer
from app.errors import NO_LLM_SERVER, InvalidInputError, UpstreamUnavailableError
from app.llm import LLMGateway, LRUPosteriorCache, PosteriorCache
from app.llm.cache import Probs
from app.llm.client import llm_http_client, llm_ready
from app.llm.prompts import MAX_LABELS
from app.research.twentyq.data import TwentyQuestions
from app.settings import Settings
from app.worlds.tabular import NO, YES
from app.worlds.tabular.model import tempered_softmax

__all__ = [
    "ANSWER_OPTIONS",
    "LLMFactory",
    "LLMTwentyQ",
    "LabelScorer",
    "PromptCounts",
    "check_llm_labels",
    "with_llm",
]

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")

# The options of the answer prompt, in the order of the player's answers (YES, NO).
ANSWER_OPTIONS = ("Yes", "No")
DEFAULT_ANSWER_PERMUTATIONS = 2
# What this module adds to the gateway's prompts; part of the reported prompt version.
_SCHEME = {
    "answers": "label_posteriors(inquiry=question, labels=ANSWER_OPTIONS)",
    "answer_options": list(ANSWER_OPTIONS),
    "answer_texts": [YES, NO],
    "temperature": "p ** (1 / T), labels only",
}
SCHEME_VERSION = hashlib.sha256(json.dumps(_SCHEME, sort_keys=True).encode()).hexdigest()[:8]


class LabelScorer(Protocol):
    """What the provider needs from the gateway: its identity and letter-scored posteriors."""

    @property
    def info(self) -> ProviderInfo: ...

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> FloatArray: ...


def check_llm_labels(n_labels: int) -> None:
    """Refuse games the LLM path cannot read: one option letter per label, A..Z."""
    if n_labels > MAX_LABELS:
        raise InvalidInputError(
            f"the LLM provider reads one option letter per animal (A..Z), so it handles at "
            f"most {MAX_LABELS} labels, not {n_labels}; the 50-animal game needs "
            "--provider tabular"
        )


class LLMTwentyQ:
    """``PosteriorProvider`` for 20 Questions: LLM posteriors and LLM-predicted yes/no answers."""

    def __init__(
        self,
        *,
        labels_model: LabelScorer,
        answers_model: LabelScorer,
        bank: Sequence[str],
        temperature: float = 1.0,
    ) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidInputError(f"temperature must be a finite number > 0, got {temperature!r}")
        self._labels = labels_model
        self._answers = answers_model
        self._bank = tuple(bank)
        self.temperature = float(temperature)

    @property
    def info(self) -> ProviderInfo:
        """``llm:<served model>:T=<t>``; the gateway's prompt version plus this scheme's."""
        labels, answers = self._labels.info, self._answers.info
        return ProviderInfo(
            model=f"llm:{labels.model}:T={self.temperature:g}",
            prompt_version=f"{labels.prompt_version}+20q.{SCHEME_VERSION}",
            extra={
                "temperature": f"{self.temperature!r}",
                "label_permutations": labels.extra.get("permutations", "?"),
                "answer_permutations": answers.extra.get("permutations", "?"),
            },
        )

    @property
    def bank(self) -> tuple[str, ...]:
        """The closed question bank."""
        return self._bank

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> FloatArray:
        """(H, len(labels)): the LLM's letter distribution, tempered by ``temperature``."""
        check_llm_labels(len(labels))
        probs = np.asarray(
            await self._labels.label_posteriors(
                case=case, histories=histories, inquiry=inquiry, labels=labels
            ),
            dtype=np.float64,
        )
        if self.temperature == 1.0 or probs.size == 0:
            return probs
        return tempered_softmax(np.log(np.maximum(probs, PROB_FLOOR)), self.temperature)

    async def propose_questions(
        self,
        *,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: Sequence[str],
        n: int,
    ) -> list[str]:
        """The first ``n`` unasked bank questions (the game's bank is closed)."""
        asked = [qa.question for qa in history]
        return dedupe_questions(self._bank, exclude=asked)[: max(n, 0)]

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        """``[("Yes.", P(yes | h, q)), ("No.", P(no | h, q))]`` as the LLM predicts them.

        With m = 1, the likelier answer with weight 1; m = 0, none.
        """
        if m <= 0:
            return []
        (row,) = await self._answers.label_posteriors(
            case=case, histories=[history], inquiry=question, labels=ANSWER_OPTIONS
        )
        answers = [WeightedAnswer(YES, float(row[0])), WeightedAnswer(NO, float(row[1]))]
        if m == 1:
            return [WeightedAnswer(max(answers, key=lambda a: a.weight).text, 1.0)]
        return answers


@dataclass(slots=True)
class PromptCounts:
    """Prompts the run's gateways scored on the server, and those the cache answered."""

    scored: int = 0
    cached: int = 0


class _CountingCache:
    """The in-process posterior cache, counting hits and what is stored (= scored)."""

    def __init__(self, inner: PosteriorCache, counts: PromptCounts) -> None:
        self._inner = inner
        self._counts = counts

    async def get_many(self, keys: Sequence[str]) -> list[Probs | None]:
        found = await self._inner.get_many(keys)
        self._counts.cached += sum(hit is not None for hit in found)
        return found

    async def set_many(self, items: Mapping[str, Probs]) -> None:
        self._counts.scored += len(items)
        await self._inner.set_many(items)


class LLMFactory:
    """``(game, temperature) -> LLMTwentyQ`` over one vLLM server and one cache.

    ``permutations`` (default: the settings') orders for the label posterior,
    ``answer_permutations`` (1 or 2) for the yes/no prediction. ``counts`` adds up the
    prompts scored and served from the cache by every provider it made.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        settings: Settings,
        model: str,
        permutations: int | None = None,
        answer_permutations: int = DEFAULT_ANSWER_PERMUTATIONS,
    ) -> None:
        if answer_permutations not in (1, 2):
            raise InvalidInputError(
                f"answer permutations must be 1 or 2, got {answer_permutations}"
            )
        self.counts = PromptCounts()
        cache = _CountingCache(LRUPosteriorCache(settings.llm_cache_size), self.counts)
        self._labels = LLMGateway(
            http=http, model=model, settings=settings, cache=cache, permutations=permutations
        )
        self._answers = LLMGateway(
            http=http,
            model=model,
            settings=settings,
            cache=cache,
            permutations=answer_permutations,
        )

    def __call__(self, game: TwentyQuestions, temperature: float) -> PosteriorProvider:
        check_llm_labels(len(game.labels))
        return LLMTwentyQ(
            labels_model=self._labels,
            answers_model=self._answers,
            bank=game.questions,
            temperature=temperature,
        )


async def with_llm(
    settings: Settings,
    run: Callable[[LLMFactory], Awaitable[T]],
    *,
    permutations: int | None = None,
    answer_permutations: int = DEFAULT_ANSWER_PERMUTATIONS,
) -> T:
    """Open the configured LLM server, check it answers, and ``run`` with an LLM factory."""
    base_url, model = settings.llm_base_url, settings.llm_model
    if not base_url or not model:
        raise UpstreamUnavailableError(NO_LLM_SERVER)
    async with llm_http_client(settings, base_url) as http:
        if (reason := await llm_ready(http)) is not None:
            raise UpstreamUnavailableError(f"the LLM server at {base_url} is not ready ({reason})")
        factory = LLMFactory(
            http=http,
            settings=settings,
            model=model,
            permutations=permutations,
            answer_permutations=answer_permutations,
        )
        return await run(factory)
