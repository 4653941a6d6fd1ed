"""Candidate answers from an estimation split: the C-IP paper's MediQ setting.

For a candidate question, ``m`` cases are drawn from a held-apart estimation split (seeded
by the question, so every interview sees the same draw for the same question) and the
simulated patient answers the question from each drawn case's facts; the answers get
equal weight, identical texts merged (weights added). Replies are cached per (estimation
case, question) for the life of the wrapper: share one wrapper across the policies of a
run. Everything else is delegated to the wrapped provider, so posteriors and proposals are
exactly the serving ones.

``draws(case_id, step, m)`` serves the ``sampled`` answer source instead: m estimation
cases drawn once per (interview, step), shared by every candidate of the step, each
answering any question from its own facts (``app.engine.AnswerDraw``; no label, since an
estimation case's options are not the interviewed case's).

Serving simulates answers with the LLM instead, so a calibration made with estimation
answers describes a different question policy and must not serve sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.calibrations.interviews import patient_answer
from app.datasets import MediQCase
from app.engine import normalize_question
from app.engine.types import (
    AnswerDraw,
    CaseContext,
    History,
    PosteriorProvider,
    ProviderInfo,
    WeightedAnswer,
)
from app.errors import InvalidInputError
from app.patients.protocol import SimulatedPatient

__all__ = ["EstimationAnswers"]


class EstimationAnswers:
    """A ``PosteriorProvider`` whose ``simulate_answers`` asks estimation-split patients."""

    def __init__(
        self,
        inner: PosteriorProvider,
        *,
        patient: SimulatedPatient,
        pool: Sequence[MediQCase],
        seed: int,
    ) -> None:
        if not pool:
            raise InvalidInputError("answer source 'estimation' needs a non-empty estimation split")
        self._inner = inner
        self._patient = patient
        self._pool = tuple(pool)
        self._seed = seed
        # (case id, normalised question) -> reply; the fact-select patient is greedy.
        self._replies: dict[tuple[str, str], asyncio.Future[str]] = {}
        self.patient_calls = 0
        self.fallbacks = 0

    @property
    def info(self) -> ProviderInfo:
        base = self._inner.info
        return ProviderInfo(
            model=base.model,
            prompt_version=base.prompt_version,
            extra={**base.extra, "answers": "estimation"},
        )

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        return await self._inner.label_posteriors(
            case=case, histories=histories, inquiry=inquiry, labels=labels
        )

    async def propose_questions(
        self,
        *,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: Sequence[str],
        n: int,
    ) -> list[str]:
        return await self._inner.propose_questions(
            case=case, history=history, inquiry=inquiry, labels=labels, n=n
        )

    def draws(self, case_id: str, step: int, m: int) -> list[AnswerDraw]:
        """The step's m estimation cases (seeded by interview and step), as answerers."""

        def answerer(case: MediQCase) -> AnswerDraw:
            async def answer(question: str) -> str:
                return await self._reply(case, question)

            return AnswerDraw(None, answer)

        return [answerer(c) for c in self._pick(m, case_id, step)]

    def draw(self, question: str, m: int) -> list[MediQCase]:
        """The m estimation cases that answer ``question`` (seeded by the question)."""
        return self._pick(m, normalize_question(question))

    def _pick(self, m: int, key: str, *more: int) -> list[MediQCase]:
        """m distinct pool cases, seeded by the run's seed, ``key`` and ``more``."""
        salt = int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)
        rng = np.random.default_rng([self._seed, salt, *more])
        picked = rng.choice(len(self._pool), size=min(m, len(self._pool)), replace=False)
        return [self._pool[int(i)] for i in picked]

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        drawn = self.draw(question, m)
        replies = await asyncio.gather(*(self._reply(c, question) for c in drawn))
        counts: dict[str, int] = {}
        for reply in replies:
            counts[reply] = counts.get(reply, 0) + 1
        total = sum(counts.values())
        return [WeightedAnswer(text, n / total) for text, n in counts.items()]

    def _fell_back(self) -> None:
        self.fallbacks += 1

    async def _reply(self, case: MediQCase, question: str) -> str:
        key = (case.case_id, normalize_question(question))
        future = self._replies.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._replies[key] = future
            self.patient_calls += 1
            try:
                future.set_result(
                    await patient_answer(
                        self._patient,
                        facts=case.facts,
                        question=question,
                        on_fallback=self._fell_back,
                    )
                )
            except asyncio.CancelledError:
                del self._replies[key]
                future.cancel()
                raise
            except Exception as exc:
                del self._replies[key]
                future.set_exception(exc)
                # Mark retrieved: concurrent waiters re-raise it, no "never retrieved" noise.
                future.exception()
                raise
        return await future
