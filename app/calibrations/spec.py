"""What defines a calibration run: dataset, split, policy, and the interview settings.

``RunSpec`` is stored as ``Calibration.params`` (JSON) so that a worker, a resumed run and a
benchmark all rebuild exactly the same cases and the same question policy from it.

The interview configuration is built the way a session's is (``QuestionPolicy.interview_config``,
via ``app.engine.settings.InterviewSettings``): a bank source scores a seeded random subset of
``n_questions`` unasked bank questions per turn (``max_candidates``), ``n_answers``
simulated answers per candidate. For calibration every early stop is off
(``stop_on_singleton``, ``stop_on_no_gain``, ``spread_epsilon``), so every case reaches step
T unless its candidates run out (``exhausted``; its last row is reused for later steps).

Selection thresholds: a C-IP policy naming a selection calibration
(``selection_calibration_id``) counts its objective's sets with that run's thresholds, in
calibration exactly as in serving; without one, both use the nominal set rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from app.datasets import (
    DEFAULT_FRACTIONS,
    MediQCase,
    MediQDataset,
    SplitFractions,
    Splits,
    filter_specialty,
    load_mediq,
    split_cases,
)
from app.engine import AnswerSource, InterviewConfig, Policy, QuestionSource
from app.engine.policy import (
    QuestionPolicy,
    named_bank,
    split_policy_fields,
)
from app.errors import InvalidInputError

__all__ = [
    "CALIBRATION_POLICIES",
    "AnswerSource",
    "PatientKind",
    "Purpose",
    "RunSpec",
    "named_bank",
    "serving_refusal",
]

# Policies a calibration can be run for (the bench's "all-facts" is no interview policy).
CALIBRATION_POLICIES = (Policy.CIP, Policy.IP, Policy.RANDOM, Policy.FIXED, Policy.NONE)


class PatientKind(StrEnum):
    """Who answers the interview's questions from a case's facts in runs and benchmarks."""

    LLM = "llm"  # MediQ's fact-select patient: the LLM picks the facts (a generation)
    RETRIEVAL = "retrieval"  # the most similar fact by MiniLM embeddings (app.patients)
    KB = "kb"  # a knowledge-base case's own answer lines (app.worlds.kb.cases; no model)


class Purpose(StrEnum):
    """What a calibration run's thresholds are for."""

    DISPLAY = "display"  # tau_k of the shown sets, for interviews asked by its policy
    SELECTION = "selection"  # tau_k inside C-IP's objective, from random-question histories


def serving_refusal(params: Mapping[str, Any]) -> str | None:
    """Why a run with these ``Calibration.params`` may not serve sessions (None: it may).

    Serving simulates answers with the LLM and shows display sets.
    """
    source = params.get("answer_source", AnswerSource.LLM.value)
    if source != AnswerSource.LLM.value:
        return (
            f"a calibration with answer source {source!r} cannot serve sessions (serving "
            "simulates answers with the LLM)"
        )
    if params.get("purpose", Purpose.DISPLAY.value) != Purpose.DISPLAY.value:
        return (
            "a selection calibration is not served on its own: name it in a C-IP display "
            "calibration (selection_calibration_id / --selection-calibration)"
        )
    return None


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One calibration run's definition; JSON round trip via ``to_params``/``from_params``.

    ``question`` is the question policy (``app.engine.policy``); the rest says which cases
    and how. A ``selection`` run ignores the policy's choice rule: its histories are
    ``max_questions + 1`` bank questions asked in a seeded random order (policy ``random``
    over the whole bank), so its thresholds cover steps 0..T+1 and depend on no policy.
    Its cases come from the *end* of the calibration split, a display run's from the
    front; a display run naming a selection run checks by fingerprint that none overlap.
    """

    dataset: str
    dataset_hash: str
    question: QuestionPolicy
    max_questions: int
    cases: int
    purpose: Purpose = Purpose.DISPLAY
    seed: int = 0
    group_by: Literal["specialty"] | None = None
    anytime: bool = False
    patient: PatientKind = PatientKind.LLM
    specialty: str | None = None
    stratify: Literal["specialty"] | None = "specialty"
    fractions: SplitFractions = field(default=DEFAULT_FRACTIONS)
    concurrency: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "purpose", Purpose(self.purpose))
        object.__setattr__(self, "patient", PatientKind(self.patient))
        if self.policy not in CALIBRATION_POLICIES:
            raise InvalidInputError(f"cannot calibrate policy {self.policy.value!r}")
        if self.question.question_bank is not None:
            raise InvalidInputError("a calibration run takes a named bank, not a list")
        if self.cases < 1:
            raise InvalidInputError(f"cases must be >= 1, got {self.cases}")
        if self.max_questions < 0:
            raise InvalidInputError(f"max_questions must be >= 0, got {self.max_questions}")
        if self.group_by not in (None, "specialty"):
            raise InvalidInputError(f"group_by must be 'specialty' or none, got {self.group_by!r}")
        if self.concurrency < 1:
            raise InvalidInputError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.purpose is Purpose.SELECTION:
            if self.question.question_source is not QuestionSource.BANK:
                raise InvalidInputError("a selection calibration draws its questions from a bank")
            if self.group_by or self.anytime:
                raise InvalidInputError("a selection calibration takes no --group-by/--anytime")

    @classmethod
    def create(cls, **fields: Any) -> RunSpec:
        """From flat fields (the API body, CLI options, stored params): the policy's own
        fields (the defaults where missing) and the run's."""
        policy, run = split_policy_fields(fields)
        if run.get("purpose") == Purpose.SELECTION:  # a StrEnum equals its value
            policy = {**policy, "policy": Policy.RANDOM.value}
        question = QuestionPolicy.build(**policy)
        return cls(question=question, **run)

    @property
    def policy(self) -> Policy:
        return self.question.policy

    @property
    def alpha(self) -> float:
        return self.question.alpha

    def interview_config(self) -> InterviewConfig:
        """The policy as serving would run it, with every early stop off.

        A selection run asks T + 1 questions in a seeded random order over the whole bank.
        """
        if self.purpose is Purpose.SELECTION:
            return InterviewConfig(
                policy=Policy.RANDOM,
                alpha=self.alpha,
                max_questions=self.max_questions + 1,
                question_source=QuestionSource.BANK,
                bank=self.question.bank_questions(),
                stop_on_singleton=False,
                stop_on_no_gain=False,
                explain_baselines=False,
            )
        return self.question.interview_config(
            max_questions=self.max_questions,
            stop_on_singleton=False,
            stop_on_no_gain=False,
            spread_epsilon=None,
        )

    @property
    def calibrated_steps(self) -> int:
        """The last calibrated step: T, or T + 1 for a selection run."""
        return self.max_questions + (1 if self.purpose is Purpose.SELECTION else 0)

    def load_dataset(self) -> MediQDataset:
        """The run's dataset file, checked against the hash recorded at creation (blocking
        file I/O: call it off the event loop)."""
        if not Path(self.dataset).is_file():
            raise InvalidInputError(f"dataset file {self.dataset} is gone")
        dataset = load_mediq(self.dataset, strict=False)
        if dataset.sha256 != self.dataset_hash:
            raise InvalidInputError(
                f"dataset {self.dataset} changed since the run was created "
                f"(sha256 {dataset.sha256[:12]}, recorded {self.dataset_hash[:12]})"
            )
        return dataset

    def splits(self, dataset: MediQDataset) -> Splits:
        """The seeded splits of the dataset (after the specialty filter)."""
        return split_cases(
            filter_specialty(dataset.cases, self.specialty),
            seed=self.seed,
            fractions=self.fractions,
            stratify=self.stratify,
        )

    def calibration_cases(self, dataset: MediQDataset) -> tuple[MediQCase, ...]:
        """Display: the first ``cases`` of the calibration split; selection: the last
        ``cases``, in reverse key order. Too few is an error."""
        pool = self.splits(dataset).calibration
        if len(pool) < self.cases:
            raise InvalidInputError(
                f"the calibration split has {len(pool)} cases, {self.cases} were asked for"
            )
        if self.purpose is Purpose.SELECTION:
            return self.selection_cases(dataset, self.cases)
        return pool[: self.cases]

    def selection_cases(self, dataset: MediQDataset, n: int) -> tuple[MediQCase, ...]:
        """The last ``n`` cases of the calibration split, in reverse key order: where
        selection thresholds are calibrated (display runs take the split's front)."""
        return tuple(reversed(self.splits(dataset).calibration))[:n]

    def group_of(self, case: MediQCase) -> str | None:
        """The Mondrian group of a case (None when not grouping)."""
        return case.specialty if self.group_by == "specialty" else None

    def to_params(self) -> dict[str, Any]:
        """JSON for ``Calibration.params``: the policy's fields and the run's."""
        return {
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            **self.question.to_json(),
            "purpose": self.purpose.value,
            "max_questions": self.max_questions,
            "cases": self.cases,
            "seed": self.seed,
            "group_by": self.group_by,
            "anytime": self.anytime,
            "patient": self.patient.value,
            "specialty": self.specialty,
            "stratify": self.stratify,
            "fractions": self.fractions.as_dict(),
            "concurrency": self.concurrency,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunSpec:
        """Inverse of ``to_params`` (unknown keys ignored; older spellings read)."""
        policy, rest = split_policy_fields(params)
        run = {k: v for k, v in rest.items() if k in cls.__dataclass_fields__ and k != "question"}
        fields = {**policy, **run}
        fractions = fields.pop("fractions", None) or DEFAULT_FRACTIONS.as_dict()
        fields.setdefault("stratify", "specialty")
        return cls.create(
            **fields, fractions=SplitFractions(**{k: float(v) for k, v in fractions.items()})
        )
