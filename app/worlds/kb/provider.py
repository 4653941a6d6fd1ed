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

Candidate answers (``simulate_answers``, which the engine calls without the candidates):
the same naive Bayes over every disease of the knowledge base, so a question's "yes"
weight is its predictive probability under the history for a patient with any annotated
disease. It needs no per-session state; the displayed posterior is over the session's
candidates only.

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
from app.worlds.tabular import ANSWER_NO, ANSWER_YES, NO, YES, TabularModel, parse_answer
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
        # Inverted index, built once: term -> the diseases whose propagated annotations hold it.
        holders: dict[int, list[int]] = {}
        for i, disease in enumerate(kb.diseases):
            for term in kb.propagated(disease):
                holders.setdefault(term, []).append(i)
        self._holders = {t: np.asarray(ix, dtype=np.intp) for t, ix in holders.items()}
        self._model = lru_cache(maxsize=256)(self._build_model)

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
        return self._model(tuple(labels))

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> FloatArray:
        """(H, len(labels)): the candidates' naive-Bayes posteriors."""
        provider = TabularProvider(self.model(labels))
        return await provider.label_posteriors(
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

    def _annotated(self, term: int) -> npt.NDArray[np.bool_]:
        out = np.zeros(len(self.kb.diseases), dtype=np.bool_)
        out[self._holders.get(term, np.zeros(0, dtype=np.intp))] = True
        return out

    def _term(self, question: str) -> int:
        term = self._term_of.get(normalize_question(question))
        if term is None:
            raise InvalidInputError("questions must ask about an HPO term")
        return term

    async def simulate_answers(
        self, *, case: CaseContext, history: History, question: str, m: int
    ) -> list[WeightedAnswer]:
        """``[("Yes.", w), ("No.", 1 - w)]``, w the predictive "yes" over every KB disease."""
        s, b = self.sensitivity, self.background
        log_post = np.zeros(len(self.kb.diseases))
        for qa in history:
            parsed = parse_answer(qa.answer)
            if parsed not in (ANSWER_YES, ANSWER_NO):
                continue
            p = np.where(self._annotated(self._term(qa.question)), s, b)
            log_post += np.log(p if parsed == ANSWER_YES else 1.0 - p)
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        w_yes = float(post @ np.where(self._annotated(self._term(question)), s, b))
        answers = [WeightedAnswer(YES, w_yes), WeightedAnswer(NO, 1.0 - w_yes)]
        if m >= 2:
            return answers
        if m == 1:
            return [WeightedAnswer(max(answers, key=lambda x: x.weight).text, 1.0)]
        return []
