"""A ``PosteriorProvider`` on the HPO for the service: rare-disease interviews with no LLM.

A session's candidates are OMIM or Orphanet diseases, given by id ("OMIM:154700",
"ORPHA:558"), by name ("Marfan syndrome") or as ``"<id> <name>"`` (case-insensitive); each
resolves to one disease of the hpo3 wheel, anything else is an ``InvalidInputError``. For
a set of candidates the provider builds (and keeps, LRU) the naive-Bayes model of
``app.worlds.kb.world.naive_bayes`` over the terms that discriminate them
(``discriminating_terms``), and the posteriors are that model's (``TabularProvider``).

Questions are "Does the patient have <term name>?" over those terms (``propose_questions``,
the most even split first); answers are read by their first word (yes / no / anything
else: no information), so every question offers the options yes / no / unsure
(``answer_options``), whose display texts read that way. A question outside the candidates' terms is an ``InvalidInputError``.

Candidate answers (``simulate_answers``): the same candidates' naive Bayes, so a question's
"yes" weight is its predictive probability under the posterior the session shows
(``sum_d p(d | h) P(yes | d, q)``). (Until 2026-12-07 the weights came from naive Bayes over
every disease of the knowledge base, because the engine did not pass the candidates: most
terms then looked like background findings, "no" got most of the weight (0.925 where the
candidates' model says 0.7), and IP and C-IP sessions stopped for "no gain" far too early;
docs/results-kb.md has the figures.)

The case text and the inquiry are not read. ``info.model`` is ``hpo:<release>:...`` with
the model's two numbers, so calibrations made with this provider record it as their model.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from app.engine.banks import dedupe_questions, normalize_question
from app.engine.options import YES_NO_UNSURE, AnswerOptions
from app.engine.types import CaseContext, History, ProviderInfo, WeightedAnswer
from app.errors import InvalidInputError
from app.worlds.kb.hpo import Disease, HpoKb
from app.worlds.kb.world import discriminating_terms, naive_bayes, question_for
from app.worlds.tabular import TabularModel
from app.worlds.tabular.provider import TabularProvider

__all__ = ["HpoProvider"]

FloatArray = npt.NDArray[np.float64]


class HpoProvider:
    """Naive-Bayes posteriors over a session's OMIM/Orphanet candidates, questions on terms."""

    def __init__(
        self,
        kb: HpoKb,
        *,
        sensitivity: float = 0.8,
        background: float = 0.05,
        max_terms: int = 300,
    ) -> None:
        if not 0 < background < sensitivity < 1:
            raise InvalidInputError("need 0 < background < sensitivity < 1")
        self.kb = kb
        self.sensitivity = float(sensitivity)
        self.background = float(background)
        self.max_terms = int(max_terms)
        self._by_key: dict[str, Disease] = {}
        for disease in kb.diseases:
            for key in (disease.id, disease.label):
                self._by_key.setdefault(key.casefold(), disease)
        for disease in kb.diseases:  # names last: an id never loses to a name
            self._by_key.setdefault(disease.name.casefold(), disease)
        self._term_of = {normalize_question(question_for(n)): t for t, n in kb.names.items()}
        # One tabular provider per candidate tuple, kept: every method asks the same model.
        self._tabular = lru_cache(maxsize=256)(
            lambda labels: TabularProvider(self._build_model(labels))
        )

    @property
    def info(self) -> ProviderInfo:
        """``hpo:<release>:sens=..:bg=..:terms=..``; the prompt version names the wheel."""
        model = (
            f"hpo:{self.kb.version}:sens={self.sensitivity:g}:bg={self.background:g}"
            f":terms={self.max_terms}"
        )
        return ProviderInfo(
            model=model,
            prompt_version=f"hpo3-{self.kb.package_version}",
            extra={"attribution": self.kb.attribution},
        )

    def resolve(self, label: str) -> Disease:
        """The disease a candidate names; unknown ones are an InvalidInputError."""
        disease = self._by_key.get(" ".join(label.split()).casefold())
        if disease is None:
            raise InvalidInputError(
                "candidates must be OMIM or Orphanet diseases of the HPO annotations "
                "(an id such as OMIM:154700, or an exact name)"
            )
        return disease

    def _build_model(self, labels: tuple[str, ...]) -> TabularModel:
        diseases = [self.resolve(label) for label in labels]
        if len({d.id for d in diseases}) != len(diseases):
            raise InvalidInputError("two candidates name the same disease")
        terms = discriminating_terms(self.kb, diseases, self.max_terms)
        if not terms:
            raise InvalidInputError("no HPO term tells these candidates apart")
        model = naive_bayes(
            self.kb,
            diseases,
            terms,
            name=f"hpo:{len(diseases)}",
            sensitivity=self.sensitivity,
            background=self.background,
        )
        # The session's own spelling of each candidate is the label the engine asks for.
        return TabularModel(
            name=model.name,
            labels=labels,
            questions=model.questions,
            p_yes=model.p_yes,
            prior=model.prior,
        )

    def model(self, labels: Sequence[str]) -> TabularModel:
        """The naive-Bayes model of these candidates (cached per candidate tuple)."""
        return self._tabular_for(labels).model

    def _tabular_for(self, labels: Sequence[str]) -> TabularProvider:
        provider: TabularProvider = self._tabular(tuple(labels))
        return provider

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> FloatArray:
        """(H, len(labels)): the candidates' naive-Bayes posteriors."""
        return await self._tabular_for(labels).label_posteriors(
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
        """The first ``n`` unasked questions on the candidates' discriminating terms."""
        questions = self.model(labels).questions
        return dedupe_questions(questions, exclude=[qa.question for qa in history])[: max(n, 0)]

    def answer_options(self, question: str) -> AnswerOptions | None:
        """Yes / no / unsure for a question on an HPO term ("Unsure" carries no information)."""
        return YES_NO_UNSURE if normalize_question(question) in self._term_of else None

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        """``[("Yes.", w), ("No.", 1 - w)]``, w the candidates' predictive "yes" (m = 1: the
        likelier answer, weight 1)."""
        if normalize_question(question) not in self._term_of:
            raise InvalidInputError("questions must ask about an HPO term")
        return await self._tabular_for(labels).simulate_answers(
            case=case, history=history, question=question, labels=labels, m=m
        )
