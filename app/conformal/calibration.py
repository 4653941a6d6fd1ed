"""Per-step calibration for interview steps 0..T ("length marginalisation").

One threshold per step k, each from the scores of the calibration cases that reached
step k (n may differ between steps when some cases stopped early). Per-step mode spends
alpha at every step: coverage holds at each fixed step, not at a data-dependent stop.
Anytime mode spends alpha / (T + 1) per step: by a union bound the true label is in every
set C_0..C_T at once with probability >= 1 - alpha, hence also in the set at any stopping
step, however it is chosen.

Steps beyond T use the last step's threshold (``threshold_for_step``): the interview
engine caps the budget at T, and a longer history is closer to step T than to anything
else calibrated. This is an extrapolation that carries no guarantee; callers that need one
must calibrate up to their budget.

JSON: ``to_dict`` gives strict JSON (no NaN/Infinity tokens); an infinite threshold is
encoded as the string ``"inf"`` and decoded back to ``math.inf``; ``null`` is also read as
``inf``. Alphas are stored exactly as rational strings (``"1/30"``) besides the float.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from app.conformal.mondrian import MondrianCalibration, mondrian_calibration
from app.conformal.rank import (
    AlphaLike,
    ThresholdResult,
    conformal_threshold,
    exact_alpha,
    per_step_alpha,
)

__all__ = [
    "SCHEMA",
    "CalibrationMetadata",
    "PerStepCalibration",
    "StepCalibration",
    "from_scores",
]

SCHEMA = "pursuit.conformal.per_step/1"
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CalibrationMetadata:
    """What the thresholds are valid for: serving must match all of it."""

    model: str = ""
    prompt_version: str = ""
    policy: str = ""
    dataset_hash: str = ""
    score: str = "lac"
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "model": self.model,
            "prompt_version": self.prompt_version,
            "policy": self.policy,
            "dataset_hash": self.dataset_hash,
            "score": self.score,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationMetadata:
        """Inverse of to_dict."""
        return cls(
            model=str(data.get("model", "")),
            prompt_version=str(data.get("prompt_version", "")),
            policy=str(data.get("policy", "")),
            dataset_hash=str(data.get("dataset_hash", "")),
            score=str(data.get("score", "lac")),
            extra={str(k): str(v) for k, v in dict(data.get("extra", {})).items()},
        )


@dataclass(frozen=True, slots=True)
class StepCalibration:
    """Calibration of one interview step: the pooled threshold and optional group ones."""

    step: int
    threshold: ThresholdResult
    groups: MondrianCalibration | None = None

    @property
    def value(self) -> float:
        """The pooled threshold value."""
        return self.threshold.value

    @property
    def n(self) -> int:
        """Calibration cases at this step."""
        return self.threshold.n

    def threshold_for(self, group: object | None = None) -> float:
        """Pooled threshold, or the group's one (with pooled fallback) when groups exist."""
        if group is None or self.groups is None:
            return self.threshold.value
        return self.groups.threshold_for(group)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "step": self.step,
            "threshold": self.threshold.to_dict(),
            "groups": None if self.groups is None else self.groups.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepCalibration:
        """Inverse of to_dict."""
        groups = data.get("groups")
        return cls(
            step=int(data["step"]),
            threshold=ThresholdResult.from_dict(data["threshold"]),
            groups=None if groups is None else MondrianCalibration.from_dict(groups),
        )


@dataclass(frozen=True, slots=True)
class PerStepCalibration:
    """Thresholds for steps 0..T at overall level alpha, per step or anytime."""

    alpha: float
    alpha_exact: Fraction
    anytime: bool
    steps: tuple[StepCalibration, ...]
    metadata: CalibrationMetadata = field(default_factory=CalibrationMetadata)

    @property
    def max_step(self) -> int:
        """T, the last calibrated step."""
        return len(self.steps) - 1

    @property
    def step_alpha(self) -> Fraction:
        """Alpha spent at each step: alpha / (T + 1) in anytime mode, else alpha."""
        return per_step_alpha(self.alpha_exact, steps=len(self.steps), anytime=self.anytime)

    @property
    def thresholds(self) -> FloatArray:
        """Pooled thresholds of steps 0..T, shape (T + 1,)."""
        return np.array([s.threshold.value for s in self.steps], dtype=np.float64)

    @property
    def insufficient_steps(self) -> tuple[int, ...]:
        """Steps whose threshold is infinite because n was too small."""
        return tuple(s.step for s in self.steps if s.threshold.insufficient)

    def step(self, k: int) -> StepCalibration:
        """Calibration of step k; steps beyond T use step T (see the module docstring)."""
        if k < 0:
            raise ValueError(f"step must be >= 0, got {k}")
        return self.steps[min(k, self.max_step)]

    def threshold_for_step(self, k: int, group: object | None = None) -> float:
        """Threshold for step k (beyond T: step T), optionally for a group."""
        return self.step(k).threshold_for(group)

    def prediction_sets(self, scores: npt.ArrayLike) -> BoolArray:
        """Sets for scores of shape (S, ..., K), leading axis = step 0..S-1: score <= tau_k."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim < 1:
            raise ValueError("scores need a leading step axis")
        if np.isnan(s).any():
            raise ValueError("scores contain NaN")
        taus = self.thresholds[np.minimum(np.arange(s.shape[0]), self.max_step)]
        return np.asarray(s <= taus.reshape((-1,) + (1,) * (s.ndim - 1)), dtype=np.bool_)

    @classmethod
    def from_scores(
        cls,
        scores_per_step: Sequence[npt.ArrayLike],
        alpha: AlphaLike,
        *,
        anytime: bool = False,
        metadata: CalibrationMetadata | None = None,
        groups_per_step: Sequence[npt.ArrayLike] | None = None,
        min_group_n: int | None = None,
    ) -> PerStepCalibration:
        """Calibrate steps 0..T from each step's true-label scores (lengths may differ).

        ``anytime=True`` spends alpha / (T + 1) per step (exact rational), T + 1 being
        ``len(scores_per_step)``. ``groups_per_step`` (same lengths as the scores) adds
        Mondrian thresholds per step with ``min_group_n`` as in ``mondrian_calibration``.
        """
        if len(scores_per_step) == 0:
            raise ValueError("need scores for at least step 0")
        if groups_per_step is not None and len(groups_per_step) != len(scores_per_step):
            raise ValueError("groups_per_step must have one entry per step")
        a = exact_alpha(alpha)
        step_alpha = per_step_alpha(a, steps=len(scores_per_step), anytime=anytime)
        steps = []
        for k, scores in enumerate(scores_per_step):
            groups = None
            if groups_per_step is not None:
                groups = mondrian_calibration(
                    scores, groups_per_step[k], step_alpha, min_n=min_group_n
                )
            steps.append(StepCalibration(k, conformal_threshold(scores, step_alpha), groups))
        return cls(float(a), a, anytime, tuple(steps), metadata or CalibrationMetadata())

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe dict; infinite thresholds are the string "inf"."""
        return {
            "schema": SCHEMA,
            "alpha": self.alpha,
            "alpha_exact": str(self.alpha_exact),
            "anytime": self.anytime,
            "step_alpha_exact": str(self.step_alpha),
            "metadata": self.metadata.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerStepCalibration:
        """Inverse of to_dict; checks the schema, step order and per-step alpha."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"unknown calibration schema {data.get('schema')!r}")
        steps = tuple(StepCalibration.from_dict(s) for s in data["steps"])
        if [s.step for s in steps] != list(range(len(steps))) or not steps:
            raise ValueError("steps must be 0..T in order")
        out = cls(
            alpha=float(data["alpha"]),
            alpha_exact=exact_alpha(str(data["alpha_exact"])),
            anytime=bool(data["anytime"]),
            steps=steps,
            metadata=CalibrationMetadata.from_dict(data.get("metadata", {})),
        )
        if any(s.threshold.alpha_exact != out.step_alpha for s in steps):
            raise ValueError("a step's alpha disagrees with alpha and the anytime flag")
        return out

    def to_json(self) -> str:
        """Strict JSON text (allow_nan=False)."""
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PerStepCalibration:
        """Inverse of to_json."""
        return cls.from_dict(json.loads(text))


def from_scores(
    scores_per_step: Sequence[npt.ArrayLike],
    alpha: AlphaLike,
    *,
    anytime: bool = False,
    metadata: CalibrationMetadata | None = None,
    groups_per_step: Sequence[npt.ArrayLike] | None = None,
    min_group_n: int | None = None,
) -> PerStepCalibration:
    """Module-level alias of PerStepCalibration.from_scores."""
    return PerStepCalibration.from_scores(
        scores_per_step,
        alpha,
        anytime=anytime,
        metadata=metadata,
        groups_per_step=groups_per_step,
        min_group_n=min_group_n,
    )
