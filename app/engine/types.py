"""Value types shared by the engine and whatever supplies its probabilities (LLM or table)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class CaseContext:
    """What the clinician knows before the interview starts."""

    summary: str
    age: int | None = None
    sex: str | None = None


@dataclass(frozen=True, slots=True)
class QA:
    """One asked question and the patient's answer."""

    question: str
    answer: str


History = tuple[QA, ...]


@dataclass(frozen=True, slots=True)
class WeightedAnswer:
    """A plausible answer to a candidate question and its weight (weights of a set sum to 1)."""

    text: str
    weight: float


@dataclass(frozen=True, slots=True)
class AnswerDraw:
    """One draw of the ``sampled`` answer source, shared by every candidate of a step.

    ``label`` is the label the draw was made for (20 Questions: the animal; None when the
    draw's label is not one of the session's, e.g. another case's options), ``answer``
    answers any candidate question as that draw would (the game's real answer mechanism).
    """

    label: str | None
    answer: Callable[[str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """Identifies a posterior source so calibrations can be matched to serving."""

    model: str
    prompt_version: str
    extra: dict[str, str] = field(default_factory=dict)


class PosteriorProvider(Protocol):
    """Where the engine gets label probabilities, candidate questions and candidate answers.

    Implemented by the vLLM gateway (``app.llm``) and by scripted/tabular models in tests.
    """

    @property
    def info(self) -> ProviderInfo: ...

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        """Probabilities over ``labels`` for each history: shape (len(histories), len(labels))."""
        ...

    async def propose_questions(
        self,
        *,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: Sequence[str],
        n: int,
    ) -> list[str]:
        """Up to ``n`` distinct new questions, none already in ``history``."""
        ...

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        """Up to ``m`` distinct plausible answers whose weights sum to 1.

        ``labels`` are the interview's candidates: a provider whose own model of the answers
        depends on them (the knowledge base's naive Bayes) weighs answers with the same model
        as its posteriors over them; an LLM patient's answers do not read them.
        """
        ...
