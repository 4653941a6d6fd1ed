"""What defines a calibration run: dataset, split, policy, and the interview settings.

``RunSpec`` is stored as ``Calibration.params`` (JSON) so that a worker, a resumed run and a
benchmark all rebuild exactly the same cases and the same question policy from it.

The interview configuration is built the way serving builds a session's
(``app.sessions.service._config_from``): a bank source scores a seeded random subset of
``n_questions`` unasked bank questions per turn (``max_candidates``), ``n_answers``
simulated answers per candidate. For calibration every early stop is off
(``stop_on_singleton``, ``stop_on_no_gain``, ``spread_epsilon``), so every case reaches step
T unless its candidates run out (``exhausted``; its last row is reused for later steps).

Selection thresholds: none. C-IP's objective uses the nominal set rule in calibration,
exactly as serving does when ``Calibration.result["selection"]`` is null (a pilot stage
producing calibrated selection thresholds is not implemented).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from app.datasets import (
    DEFAULT_FRACTIONS,
    MediQCase,
    MediQDataset,
    SplitFractions,
    Splits,
    filter_specialty,
    split_cases,
)
from app.engine import InterviewConfig, Policy, QuestionSource, load_query_bank
from app.errors import InvalidInputError

__all__ = ["CALIBRATION_POLICIES", "AnswerSource", "PatientKind", "RunSpec", "named_bank"]

# Policies a calibration can be run for (the bench's "all-facts" is no interview policy).
CALIBRATION_POLICIES = (Policy.CIP, Policy.IP, Policy.RANDOM, Policy.FIXED, Policy.NONE)

named_bank = functools.lru_cache(maxsize=8)(load_query_bank)


class AnswerSource(StrEnum):
    """Where candidate answers in the C-IP/IP objective come from."""

    LLM = "llm"  # the serving path: the LLM simulates answers (PosteriorProvider.simulate_answers)
    ESTIMATION = "estimation"  # the paper's MediQ setting: m estimation-split patients answer


class PatientKind(StrEnum):
    """Who answers the interview's questions from a case's facts in runs and benchmarks."""

    LLM = "llm"  # MediQ's fact-select patient: the LLM picks the facts (a generation)
    RETRIEVAL = "retrieval"  # the most similar fact by MiniLM embeddings (app.retrieval)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One calibration run's definition; JSON round trip via ``to_params``/``from_params``."""

    dataset: str
    dataset_hash: str
    policy: Policy
    alpha: float
    max_questions: int
    cases: int
    seed: int = 0
    group_by: Literal["specialty"] | None = None
    anytime: bool = False
    question_source: QuestionSource = QuestionSource.BANK
    bank: str | None = "internal_medicine"
    n_questions: int = 4
    n_answers: int = 2
    answer_source: AnswerSource = AnswerSource.LLM
    patient: PatientKind = PatientKind.LLM
    specialty: str | None = None
    stratify: Literal["specialty"] | None = "specialty"
    fractions: SplitFractions = field(default=DEFAULT_FRACTIONS)
    concurrency: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", Policy(self.policy))
        object.__setattr__(self, "question_source", QuestionSource(self.question_source))
        object.__setattr__(self, "answer_source", AnswerSource(self.answer_source))
        object.__setattr__(self, "patient", PatientKind(self.patient))
        if self.policy not in CALIBRATION_POLICIES:
            raise InvalidInputError(f"cannot calibrate policy {self.policy.value!r}")
        if self.cases < 1:
            raise InvalidInputError(f"cases must be >= 1, got {self.cases}")
        if self.group_by not in (None, "specialty"):
            raise InvalidInputError(f"group_by must be 'specialty' or none, got {self.group_by!r}")
        if self.concurrency < 1:
            raise InvalidInputError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.question_source is QuestionSource.BANK and not self.bank:
            raise InvalidInputError("question source 'bank' needs a bank name")
        self.interview_config()  # validates alpha, budget, n_questions, n_answers, bank

    def interview_config(self) -> InterviewConfig:
        """The policy as serving would run it, with every early stop off."""
        bank: tuple[str, ...] = ()
        if self.question_source is QuestionSource.BANK:
            assert self.bank is not None
            bank = named_bank(self.bank)
        return InterviewConfig(
            policy=self.policy,
            alpha=self.alpha,
            max_questions=self.max_questions,
            question_source=self.question_source,
            n_questions=self.n_questions,
            n_answers=self.n_answers,
            bank=bank,
            max_candidates=self.n_questions if bank else None,
            stop_on_singleton=False,
            stop_on_no_gain=False,
            spread_epsilon=None,
        )

    def splits(self, dataset: MediQDataset) -> Splits:
        """The seeded splits of the dataset (after the specialty filter)."""
        return split_cases(
            filter_specialty(dataset.cases, self.specialty),
            seed=self.seed,
            fractions=self.fractions,
            stratify=self.stratify,
        )

    def calibration_cases(self, dataset: MediQDataset) -> tuple[MediQCase, ...]:
        """The first ``cases`` cases of the calibration split; too few is an error."""
        pool = self.splits(dataset).calibration
        if len(pool) < self.cases:
            raise InvalidInputError(
                f"the calibration split has {len(pool)} cases, {self.cases} were asked for"
            )
        return pool[: self.cases]

    def group_of(self, case: MediQCase) -> str | None:
        """The Mondrian group of a case (None when not grouping)."""
        return case.specialty if self.group_by == "specialty" else None

    def to_params(self) -> dict[str, Any]:
        """JSON for ``Calibration.params``."""
        return {
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            "policy": self.policy.value,
            "alpha": self.alpha,
            "max_questions": self.max_questions,
            "cases": self.cases,
            "seed": self.seed,
            "group_by": self.group_by,
            "anytime": self.anytime,
            "question_source": self.question_source.value,
            "bank": self.bank,
            "n_questions": self.n_questions,
            "n_answers": self.n_answers,
            "answer_source": self.answer_source.value,
            "patient": self.patient.value,
            "specialty": self.specialty,
            "stratify": self.stratify,
            "fractions": self.fractions.as_dict(),
            "concurrency": self.concurrency,
            "selection": "nominal",
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunSpec:
        """Inverse of ``to_params`` (unknown keys ignored)."""
        fractions = params.get("fractions") or DEFAULT_FRACTIONS.as_dict()
        return cls(
            dataset=str(params["dataset"]),
            dataset_hash=str(params["dataset_hash"]),
            policy=Policy(params["policy"]),
            alpha=float(params["alpha"]),
            max_questions=int(params["max_questions"]),
            cases=int(params["cases"]),
            seed=int(params.get("seed", 0)),
            group_by=params.get("group_by"),
            anytime=bool(params.get("anytime", False)),
            question_source=QuestionSource(params.get("question_source", "bank")),
            bank=params.get("bank"),
            n_questions=int(params.get("n_questions", 4)),
            n_answers=int(params.get("n_answers", 2)),
            answer_source=AnswerSource(params.get("answer_source", "llm")),
            patient=PatientKind(params.get("patient", "llm")),
            specialty=params.get("specialty"),
            stratify=params.get("stratify", "specialty"),
            fractions=SplitFractions(**{k: float(v) for k, v in fractions.items()}),
            concurrency=int(params.get("concurrency", 4)),
        )
