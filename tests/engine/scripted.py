"""A scripted PosteriorProvider: hand-built probability tables, every call recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from app.engine.types import CaseContext, History, ProviderInfo, WeightedAnswer

Key = tuple[tuple[str, str], ...]
LABELS = ("A", "B", "C", "D")
CASE = CaseContext(summary="45-year-old with fatigue")
INQUIRY = "What is the most likely diagnosis?"


def key(history: History) -> Key:
    return tuple((qa.question, qa.answer) for qa in history)


class ScriptedProvider:
    """Posterior of a history: its exact key in ``table``, else that of its last (q, a) alone,
    else the prior (key ``()``). Answers: ``answers[question]``, else ``default_answers``."""

    def __init__(
        self,
        *,
        table: Mapping[Key, Sequence[float]],
        answers: Mapping[str, Sequence[WeightedAnswer]] | None = None,
        default_answers: Sequence[WeightedAnswer] = (WeightedAnswer("unsure", 1.0),),
        proposals: Sequence[str] | Callable[[History], Sequence[str]] = (),
    ) -> None:
        self.table = {k: np.asarray(v, dtype=np.float64) for k, v in table.items()}
        self.answers = dict(answers or {})
        self.default_answers = list(default_answers)
        self.proposals = proposals
        self.posterior_calls: list[list[History]] = []
        self.propose_calls: list[History] = []
        self.simulate_calls: list[str] = []

    @property
    def info(self) -> ProviderInfo:
        return ProviderInfo(model="scripted", prompt_version="test")

    def posterior(self, history: History) -> npt.NDArray[np.float64]:
        k = key(history)
        if k in self.table:
            return self.table[k]
        if k and k[-1:] in self.table:
            return self.table[k[-1:]]
        return self.table[()]

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        self.posterior_calls.append(list(histories))
        return np.array([self.posterior(h) for h in histories], dtype=np.float64)

    async def propose_questions(
        self,
        *,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: Sequence[str],
        n: int,
    ) -> list[str]:
        self.propose_calls.append(history)
        proposals = self.proposals(history) if callable(self.proposals) else self.proposals
        return list(proposals)[:n]

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        self.simulate_calls.append(question)
        return list(self.answers.get(question, self.default_answers))[:m]
