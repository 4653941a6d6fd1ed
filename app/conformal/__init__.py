"""Conformal prediction core: exact split-conformal thresholds and prediction sets.

Guarantee (split conformal, per step): for a new case exchangeable with the calibration
cases of step k, ``P(Y in C_k) >= 1 - alpha`` (and ``<= 1 - alpha + 1/(n + 1)`` without
ties; randomised p-value sets give exactly ``1 - alpha`` even with ties). It is marginal:
an average over cases drawn like the calibration cases, at a fixed step k.

It does not cover: one given patient (it is not conditional on the history), a subgroup
(unless calibrated per group with Mondrian calibration), a data-dependent stopping step
such as "stop when the set has one label" (unless ``anytime=True``, which spends
``alpha / (T + 1)`` per step and holds at any stopping step by a union bound), or a change
of model, prompts, question policy or patient population since calibration.

Conventions: the rank is ``r = ceil((n + 1)(1 - alpha))`` in exact rational arithmetic
(alpha read from its decimal repr); ``r > n`` gives an infinite threshold (the full label
set) flagged ``insufficient``, never an exception. A label is in the set when its score is
``<=`` the threshold, with no tolerance (scores must be computed the same way, in float64,
at calibration and serving). Steps beyond T use step T's threshold. In JSON an infinite
threshold is the string ``"inf"``.

Pure numpy (scipy only for Clopper-Pearson, imported lazily): no web, DB or LLM imports.
"""

from app.conformal.calibration import (
    CalibrationMetadata,
    PerStepCalibration,
    StepCalibration,
    from_scores,
)
from app.conformal.evaluation import (
    CoverageStats,
    PerStepReport,
    SetReport,
    clopper_pearson,
    evaluate_at_stop,
    evaluate_per_step,
    evaluate_sets,
    singleton_stop_steps,
)
from app.conformal.mondrian import GroupThreshold, MondrianCalibration, mondrian_calibration
from app.conformal.rank import (
    ThresholdResult,
    conformal_rank,
    conformal_threshold,
    exact_alpha,
    lac_threshold,
    min_calibration_size,
)
from app.conformal.scores import (
    ScoreFunction,
    aps_scores,
    calibration_scores,
    lac_scores,
    raps_scores,
    true_label_scores,
)
from app.conformal.sets import (
    conformal_p_values,
    lac_prediction_set,
    p_value_prediction_set,
    prediction_set,
    prediction_set_from_p_values,
)

__all__ = [
    "CalibrationMetadata",
    "CoverageStats",
    "GroupThreshold",
    "MondrianCalibration",
    "PerStepCalibration",
    "PerStepReport",
    "ScoreFunction",
    "SetReport",
    "StepCalibration",
    "ThresholdResult",
    "aps_scores",
    "calibration_scores",
    "clopper_pearson",
    "conformal_p_values",
    "conformal_rank",
    "conformal_threshold",
    "evaluate_at_stop",
    "evaluate_per_step",
    "evaluate_sets",
    "exact_alpha",
    "from_scores",
    "lac_prediction_set",
    "lac_scores",
    "lac_threshold",
    "min_calibration_size",
    "mondrian_calibration",
    "p_value_prediction_set",
    "prediction_set",
    "prediction_set_from_p_values",
    "raps_scores",
    "singleton_stop_steps",
    "true_label_scores",
]
