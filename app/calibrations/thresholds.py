"""Turn a stored calibration run into the thresholds the engine consumes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.engine.thresholds import StepwiseThresholds


def calibration_result(
    *,
    thresholds: list[float],
    scores: list[list[float]],
    alpha: float,
    step_alpha: float,
    n_per_step: list[int],
) -> dict[str, Any]:
    """The JSON stored in ``Calibration.result`` (+inf thresholds stored as null)."""
    return {
        "alpha": alpha,
        "step_alpha": step_alpha,
        "thresholds": [None if math.isinf(t) else t for t in thresholds],
        "n_per_step": n_per_step,
        "scores": scores,
    }


def thresholds_from_result(result: dict[str, Any]) -> StepwiseThresholds:
    """Engine thresholds (with scores, for p-values) from a stored calibration result."""
    taus = tuple(math.inf if t is None else float(t) for t in result["thresholds"])
    scores = tuple(np.asarray(s, dtype=np.float64) for s in result["scores"])
    return StepwiseThresholds(alpha=float(result["alpha"]), thresholds=taus, scores=scores)


def n_for_step(result: dict[str, Any], step: int) -> int | None:
    """Calibration cases behind step ``step``'s threshold (None past the horizon)."""
    n_per_step: list[int] = result["n_per_step"]
    return n_per_step[step] if step < len(n_per_step) else None
