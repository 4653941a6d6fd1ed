"""The interview engine: question selection by (conformal) information pursuit. Pure Python."""

from app.engine.banks import (
    DEFAULT_QUERY_BANKS_PATH,
    dedupe_questions,
    load_query_bank,
    load_query_banks,
    normalize_question,
)
from app.engine.config import (
    AnswerSource,
    InterviewConfig,
    Objective,
    Policy,
    QuestionSource,
    SelectionRule,
    StopReason,
)
from app.engine.interview import (
    AnswerFn,
    DrawFn,
    finite_sample_alpha,
    objective_name,
    plan_turn,
    rank_candidates,
    run_interview,
)
from app.engine.outcomes import (
    AnswerOutcome,
    CandidateScore,
    Differential,
    QuestionRationale,
    Trajectory,
    TurnOutcome,
    make_differential,
)
from app.engine.progress import ProgressFn, Stage, TurnProgress
from app.engine.scoring import (
    conformal_p_values,
    entropy,
    entropy_bound,
    improves,
    lac_set_mask,
    nominal_set_mask,
    objective_set_size,
    prediction_set_mask,
    score_candidates,
)
from app.engine.thresholds import StepThresholds, StepwiseThresholds
from app.engine.types import AnswerDraw

__all__ = [
    "DEFAULT_QUERY_BANKS_PATH",
    "AnswerDraw",
    "AnswerFn",
    "AnswerOutcome",
    "AnswerSource",
    "CandidateScore",
    "Differential",
    "DrawFn",
    "InterviewConfig",
    "Objective",
    "Policy",
    "ProgressFn",
    "QuestionRationale",
    "QuestionSource",
    "SelectionRule",
    "Stage",
    "StepThresholds",
    "StepwiseThresholds",
    "StopReason",
    "Trajectory",
    "TurnOutcome",
    "TurnProgress",
    "conformal_p_values",
    "dedupe_questions",
    "entropy",
    "entropy_bound",
    "finite_sample_alpha",
    "improves",
    "lac_set_mask",
    "load_query_bank",
    "load_query_banks",
    "make_differential",
    "nominal_set_mask",
    "normalize_question",
    "objective_name",
    "objective_set_size",
    "plan_turn",
    "prediction_set_mask",
    "rank_candidates",
    "run_interview",
    "score_candidates",
]
