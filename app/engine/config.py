"""Interview configuration: which policy, where candidate questions come from, when to stop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from app.errors import InvalidInputError

__all__ = [
    "AnswerSource",
    "InterviewConfig",
    "Objective",
    "Policy",
    "QuestionSource",
    "SelectionRule",
    "StopReason",
]


class Policy(StrEnum):
    """How the next question is chosen."""

    CIP = "cip"  # min expected conformal set size at step k+1, ties by expected entropy
    IP = "ip"  # min expected posterior entropy
    RANDOM = "random"  # uniform over eligible candidates, seeded rng
    FIXED = "fixed"  # first unasked question of the bank, in bank order
    NONE = "none"  # ask nothing: direct prediction from the initial information


class Objective(StrEnum):
    """What C-IP minimises over a candidate's simulated answers (IP always uses entropy)."""

    SET_SIZE = "set_size"  # expected |C_{k+1}| (empty counted as K), ties by expected entropy
    ENTROPY_BOUND = "entropy_bound"  # the paper's entropy upper bound from sets, label-aware


class AnswerSource(StrEnum):
    """Where the answers that score a candidate question come from."""

    LLM = "llm"  # provider.simulate_answers per candidate (the serving path)
    ESTIMATION = "estimation"  # a provider wrapper lets estimation cases answer (per question)
    SAMPLED = "sampled"  # per step, m draws (label or case) shared by every candidate


class SelectionRule(StrEnum):
    """Which sets the C-IP objective counts."""

    CALIBRATED = "calibrated"  # LAC at a selection calibration's tau_{k+1}
    NOMINAL = "nominal"  # the model's own top labels holding 1 - alpha (no guarantee)


class QuestionSource(StrEnum):
    """Where candidate questions come from."""

    GENERATED = "generated"  # provider.propose_questions every turn
    BANK = "bank"  # InterviewConfig.bank (a caller-supplied list or a named bank)


class StopReason(StrEnum):
    """Why an interview stops; checked in this order of precedence."""

    POLICY_NONE = "policy_none"  # policy "none": never asks
    SINGLETON = "singleton"  # the displayed set has exactly one label
    BUDGET = "budget"  # max_questions answered
    EXHAUSTED = "exhausted"  # no eligible candidate question left
    # No candidate beats asking nothing, both scored by the same rule at step k+1 (cip/ip).
    NO_GAIN = "no_gain"
    SPREAD = "spread"  # std of the candidates' objective < spread_epsilon (cip/ip only)


@dataclass(frozen=True, slots=True)
class InterviewConfig:
    """Everything that defines the questioning policy; record it with every calibration.

    ``n_answers`` is the number of answers that score a candidate: simulated answers per
    question (``llm``, ``estimation``) or draws per step (``sampled``).
    ``max_candidates`` (bank source, cip/ip only) scores a seeded random subset of that many
    unasked bank questions per turn instead of the whole bank (a 2,000-question bank costs
    2,000 x ``n_answers`` posterior evaluations a turn). ``explain_baselines`` also simulates
    and scores the question that ``random``/``fixed`` picked, so its rationale carries the
    same numbers as C-IP's (cost: ``n_answers`` extra evaluations a turn).
    """

    policy: Policy = Policy.CIP
    alpha: float = 0.1
    max_questions: int = 10
    question_source: QuestionSource = QuestionSource.GENERATED
    n_questions: int = 8
    n_answers: int = 4
    objective: Objective = Objective.SET_SIZE
    answer_source: AnswerSource = AnswerSource.LLM
    bank: tuple[str, ...] = ()
    max_candidates: int | None = None
    stop_on_singleton: bool = True
    stop_on_no_gain: bool = True
    spread_epsilon: float | None = None
    explain_baselines: bool = True

    def __post_init__(self) -> None:
        # Coerce plain strings ("cip") so callers reading settings need no enum import.
        object.__setattr__(self, "policy", Policy(self.policy))
        object.__setattr__(self, "question_source", QuestionSource(self.question_source))
        object.__setattr__(self, "objective", Objective(self.objective))
        object.__setattr__(self, "answer_source", AnswerSource(self.answer_source))
        object.__setattr__(self, "bank", tuple(self.bank))
        if not (isinstance(self.alpha, float | int) and 0 < self.alpha < 1):
            raise InvalidInputError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if self.max_questions < 0:
            raise InvalidInputError(f"max_questions must be >= 0, got {self.max_questions}")
        if self.n_questions < 1:
            raise InvalidInputError(f"n_questions must be >= 1, got {self.n_questions}")
        if self.n_answers < 1:
            raise InvalidInputError(f"n_answers must be >= 1, got {self.n_answers}")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise InvalidInputError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if self.spread_epsilon is not None and not (
            math.isfinite(self.spread_epsilon) and self.spread_epsilon > 0
        ):
            raise InvalidInputError(f"spread_epsilon must be > 0, got {self.spread_epsilon!r}")
        if self.question_source is QuestionSource.BANK and not self.bank:
            raise InvalidInputError("question_source 'bank' needs a non-empty bank")
        if self.policy is Policy.FIXED and self.question_source is not QuestionSource.BANK:
            raise InvalidInputError("policy 'fixed' needs question_source 'bank'")
