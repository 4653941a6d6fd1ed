"""Turn a stored calibration run into the thresholds the engine consumes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.calibrations.matching import specialty_key
from app.conformal.mondrian import MondrianCalibration
from app.engine.thresholds import FloatArray, StepwiseThresholds

__all__ = [
    "GROUP_FIELD",
    "GroupThresholds",
    "StepSource",
    "calibration_result",
    "thresholds_for_group",
    "thresholds_from_result",
]


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


GROUP_FIELD = "specialty"  # the only Mondrian grouping a run can have (RunSpec.group_by)


@dataclass(frozen=True, slots=True)
class StepSource:
    """Where the threshold a session uses at one step comes from."""

    n: int  # calibration cases behind the threshold
    group: str | None  # the group whose own threshold it is; None: the pooled one
    fallback: str | None  # why a declared group got the pooled threshold


@dataclass(frozen=True, slots=True)
class GroupThresholds:
    """A session's thresholds: the pooled ones, or its group's (Mondrian) where it has one."""

    thresholds: StepwiseThresholds
    steps: tuple[StepSource, ...]
    anytime: bool

    @property
    def max_step(self) -> int:
        """T, the last calibrated step."""
        return self.thresholds.max_step

    def source(self, step: int) -> StepSource | None:
        """Step ``step``'s source (None past the calibrated horizon)."""
        return self.steps[step] if step < len(self.steps) else None


def thresholds_for_group(
    result: dict[str, Any],
    *,
    group_by: str | None,
    group: str | None,
    group_keys: Sequence[str | None] | None = None,
) -> GroupThresholds:
    """Thresholds for a session that declares ``group`` (None: pooled, marginal coverage).

    For a grouped calibration (``group_by``) each step uses the group's stored Mondrian
    threshold exactly as the conformal core computed it: the group's own when it has enough
    cases for a finite one, else the pooled threshold with the reason (and, when the pooled
    one is infinite too, the full label set). ``group_keys`` (each stored case's group, in
    case-position order, as the scores are) gives the group's own scores for p-values;
    without them, or when they do not add up, p-values are left out rather than taken
    against the wrong scores.
    """
    pooled = thresholds_from_result(result)
    n_per_step: list[int] = list(result["n_per_step"])
    if group is None:
        return GroupThresholds(
            pooled, tuple(StepSource(n, None, None) for n in n_per_step), _anytime(result)
        )
    steps_json = (result.get("conformal") or {}).get("steps") or []
    if group_by is None or len(steps_json) != len(n_per_step) or steps_json[0]["groups"] is None:
        note = (
            f"the calibration has no per-{GROUP_FIELD} thresholds; its pooled threshold is used, "
            f"so coverage is marginal over all its calibration cases, not per {GROUP_FIELD}"
        )
        return GroupThresholds(
            pooled, tuple(StepSource(n, None, note) for n in n_per_step), _anytime(result)
        )
    taus: list[float] = []
    sources: list[StepSource] = []
    scores: list[FloatArray] | None = []
    for k, step_json in enumerate(steps_json):
        mondrian = MondrianCalibration.from_dict(step_json["groups"])
        key = _stored_key(mondrian, group)
        found = mondrian.lookup(key)
        pooled_scores = np.asarray(result["scores"][k], dtype=np.float64)
        if not found.fallback:
            taus.append(found.value)
            sources.append(StepSource(found.own.n, found.key, None))
            own = _group_scores(pooled_scores, group_keys, found.key)
            if own is None or own.size != found.own.n:
                scores = None
            elif scores is not None:
                scores.append(own)
            continue
        taus.append(pooled.thresholds[k])
        if key not in mondrian.groups:
            why = f"{group_by} {group!r} has no calibration cases"
        else:
            why = (
                f"{group_by} {found.key!r} has {found.own.n} calibration cases, too few for its "
                f"own threshold (a finite one needs at least {max(mondrian.min_n, 1)})"
            )
        note = (
            f"{why}; the pooled threshold of all {n_per_step[k]} calibration cases is used, "
            f"so coverage is marginal over them, not per {group_by}"
        )
        sources.append(StepSource(n_per_step[k], None, note))
        if scores is not None:
            scores.append(pooled_scores)
    thresholds = StepwiseThresholds(
        alpha=pooled.alpha,
        thresholds=tuple(taus),
        scores=tuple(scores) if scores is not None else None,
    )
    return GroupThresholds(thresholds, tuple(sources), _anytime(result))


def _anytime(result: dict[str, Any]) -> bool:
    return bool(result.get("anytime", False))


def _stored_key(mondrian: MondrianCalibration, group: str) -> str:
    """The calibration's spelling of ``group`` (exact, else ignoring case and spacing)."""
    if group in mondrian.groups:
        return group
    wanted = specialty_key(group)
    return next((k for k in mondrian.groups if specialty_key(k) == wanted), group)


def _group_scores(
    scores: FloatArray, group_keys: Sequence[str | None] | None, key: str
) -> FloatArray | None:
    """The scores of the cases in group ``key`` (None when the keys do not line up)."""
    if group_keys is None or len(group_keys) != scores.size:
        return None
    mask = np.array([(g or "unknown") == key for g in group_keys], dtype=bool)
    return np.asarray(scores[mask], dtype=np.float64)
