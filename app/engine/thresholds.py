"""Per-step conformal thresholds as the engine consumes them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.conformal.rank import lac_threshold
from app.errors import InvalidInputError

__all__ = ["FloatArray", "StepThresholds", "StepwiseThresholds"]

FloatArray = npt.NDArray[np.float64]


class StepThresholds(Protocol):
    """LAC thresholds ``tau_k`` for interview step k (k = number of answered questions).

    ``scores_for_step`` returns the step's calibration scores ``s_i = 1 - p(y_i | h_{i,k})``
    (any order) so the engine can attach a conformal p-value to every label, or None when
    the implementation keeps only the thresholds (p-values are then reported as None).
    """

    @property
    def alpha(self) -> float: ...

    def threshold_for_step(self, k: int) -> float: ...

    def scores_for_step(self, k: int) -> FloatArray | None: ...


@dataclass(frozen=True, eq=False, slots=True)
class StepwiseThresholds:
    """Thresholds for steps 0..T; a step beyond T gets +inf (the full label set).

    +inf is the only honest value past the calibrated horizon: it covers trivially and
    claims nothing. Keep ``max_questions <= T`` so it never shows up in serving.
    """

    alpha: float
    thresholds: tuple[float, ...]
    scores: tuple[FloatArray, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InvalidInputError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if any(math.isnan(t) for t in self.thresholds):
            raise InvalidInputError("thresholds contain NaN")
        if self.scores is not None:
            if len(self.scores) != len(self.thresholds):
                raise InvalidInputError("need one score array per step")
            sorted_scores = tuple(np.sort(np.asarray(s, dtype=np.float64)) for s in self.scores)
            object.__setattr__(self, "scores", sorted_scores)

    @classmethod
    def from_scores(
        cls, scores_by_step: Sequence[npt.ArrayLike], alpha: float
    ) -> StepwiseThresholds:
        """Calibrate tau_k = lac_threshold(scores_k, alpha) for each step and keep the scores."""
        arrays = tuple(np.asarray(s, dtype=np.float64) for s in scores_by_step)
        taus = tuple(float(lac_threshold(a, alpha)) for a in arrays)
        return cls(alpha=float(alpha), thresholds=taus, scores=arrays)

    @property
    def max_step(self) -> int:
        """The last calibrated step T."""
        return len(self.thresholds) - 1

    def threshold_for_step(self, k: int) -> float:
        """tau_k, or +inf past the calibrated horizon."""
        if k < 0:
            raise ValueError(f"step must be >= 0, got {k}")
        return self.thresholds[k] if k < len(self.thresholds) else math.inf

    def scores_for_step(self, k: int) -> FloatArray | None:
        """Sorted calibration scores of step k, or None (no scores kept, or past the horizon)."""
        if self.scores is None or k >= len(self.scores):
            return None
        return self.scores[k]
