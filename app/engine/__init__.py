"""The interview engine: question selection by (conformal) information pursuit. Pure Python."""

from app.engine.banks import (
    DEFAULT_QUERY_BANKS_PATH,
    dedupe_questions,
    load_query_bank,
    load_query_banks,
    normalize_question,
)
from app.engine.config import InterviewConfig, Policy, QuestionSource, StopReason
from app.engine.interview import AnswerFn, plan_turn, rank_candidates, run_interview
from app.engine.outcomes import (
    AnswerOutcome,
    CandidateScore,
    Differential,
    QuestionRationale,
    Trajectory,
    TurnOutcome,
    make_differential,
)
from app.engine.scoring import (
    conformal_p_values,
    entropy,
    improves,
    lac_set_mask,
    nominal_set_mask,
    objective_set_size,
    prediction_set_mask,
    score_candidates,
)
from app.engine.thresholds import StepThresholds, StepwiseThresholds

__all__ = [
    "DEFAULT_QUERY_BANKS_PATH",
    "AnswerFn",
    "AnswerOutcome",
    "CandidateScore",
    "Differential",
    "InterviewConfig",
    "Policy",
    "QuestionRationale",
    "QuestionSource",
    "StepThresholds",
    "StepwiseThresholds",
    "StopReason",
    "Trajectory",
    "TurnOutcome",
    "conformal_p_values",
    "dedupe_questions",
    "entropy",
    "improves",
    "lac_set_mask",
    "load_query_bank",
    "load_query_banks",
    "make_differential",
    "nominal_set_mask",
    "normalize_question",
    "objective_set_size",
    "plan_turn",
    "prediction_set_mask",
    "rank_candidates",
    "run_interview",
    "score_candidates",
]
