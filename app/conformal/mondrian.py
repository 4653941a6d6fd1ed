"""Group-conditional (Mondrian) calibration: one threshold per group, pooled fallback.

Within a group with its own threshold, coverage holds conditionally on the group (for
cases exchangeable with that group's calibration cases). A group with fewer than
``min_n`` calibration cases, or whose own threshold would be infinite, falls back to the
pooled threshold; the fallback is flagged with a reason because the pooled threshold only
gives marginal, not group-conditional, coverage. Groups never seen in calibration get the
pooled threshold with the same flag.

Group keys may be any values numpy can sort (specialty names, class indices); they are
stored as ``str(key)`` so that a calibration survives a JSON round trip, and looked up
the same way.

Two uses: group by a property of the case (one threshold per case, ``thresholds_for`` on
the cases' keys), or by class (label-conditional: ``thresholds_for(range(K))`` gives one
threshold per label, which broadcasts over the label axis of the scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from app.conformal.rank import (
    AlphaLike,
    ThresholdResult,
    conformal_rank,
    conformal_threshold,
    decode_float,
    encode_float,
    exact_alpha,
    min_calibration_size,
)

__all__ = ["GroupThreshold", "MondrianCalibration", "mondrian_calibration"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GroupThreshold:
    """The threshold used for one group, the group's own result, and why it fell back."""

    key: str
    value: float
    own: ThresholdResult
    fallback: bool
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (inf as "inf")."""
        return {
            "key": self.key,
            "value": encode_float(self.value),
            "own": self.own.to_dict(),
            "fallback": self.fallback,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupThreshold:
        """Inverse of to_dict."""
        return cls(
            key=str(data["key"]),
            value=decode_float(data["value"]),
            own=ThresholdResult.from_dict(data["own"]),
            fallback=bool(data["fallback"]),
            reason=None if data["reason"] is None else str(data["reason"]),
        )


@dataclass(frozen=True, slots=True)
class MondrianCalibration:
    """Per-group thresholds at one alpha, with the pooled threshold as fallback."""

    alpha: float
    alpha_exact: Fraction
    min_n: int
    pooled: ThresholdResult
    groups: dict[str, GroupThreshold]

    def lookup(self, key: object) -> GroupThreshold:
        """The group's entry; an unseen group gets the pooled threshold, flagged."""
        k = str(key)
        found = self.groups.get(k)
        if found is not None:
            return found
        own = conformal_threshold(np.empty(0), self.alpha_exact)
        reason = "group not seen in calibration: pooled threshold used"
        if self.pooled.insufficient:
            reason += "; pooled calibration also insufficient: full label set"
        return GroupThreshold(k, self.pooled.value, own, True, reason)

    def threshold_for(self, key: object) -> float:
        """Threshold for one group key."""
        return self.lookup(key).value

    def thresholds_for(self, keys: npt.ArrayLike) -> FloatArray:
        """Thresholds for an array of keys, same shape (vectorised over cases)."""
        arr = np.asarray(keys)
        uniq, inv = np.unique(arr.ravel(), return_inverse=True)
        values = np.array([self.threshold_for(k) for k in uniq.tolist()], dtype=np.float64)
        return np.asarray(values[inv].reshape(arr.shape), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (inf as "inf")."""
        return {
            "alpha": self.alpha,
            "alpha_exact": str(self.alpha_exact),
            "min_n": self.min_n,
            "pooled": self.pooled.to_dict(),
            "groups": [g.to_dict() for g in self.groups.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MondrianCalibration:
        """Inverse of to_dict."""
        groups = [GroupThreshold.from_dict(g) for g in data["groups"]]
        return cls(
            alpha=float(data["alpha"]),
            alpha_exact=exact_alpha(str(data["alpha_exact"])),
            min_n=int(data["min_n"]),
            pooled=ThresholdResult.from_dict(data["pooled"]),
            groups={g.key: g for g in groups},
        )


def mondrian_calibration(
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    alpha: AlphaLike,
    *,
    min_n: int | None = None,
) -> MondrianCalibration:
    """Per-group conformal thresholds; groups with n < min_n fall back to the pooled one.

    ``min_n`` defaults to the smallest n with a finite threshold (9 at alpha 0.1, 19 at
    0.05): every group that can have its own valid threshold gets it. Such small groups
    give valid but very variable coverage (SD ~ sqrt(alpha(1-alpha)/n)); pass a larger
    ``min_n`` (e.g. 100) to prefer the pooled threshold for them.
    """
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(groups)
    if s.ndim != 1 or g.shape != s.shape:
        raise ValueError(f"need 1-D scores and groups of one shape, got {s.shape}, {g.shape}")
    a = exact_alpha(alpha)
    floor_n = min_calibration_size(a)
    use_min_n = floor_n if min_n is None else int(min_n)
    if use_min_n < 0:
        raise ValueError("min_n must be >= 0")
    pooled = conformal_threshold(s, a)

    uniq, inv = np.unique(g, return_inverse=True)
    counts = np.bincount(inv, minlength=uniq.size)
    # Sort by (group, score): each group's scores are then a sorted contiguous block, so
    # every group's r-th smallest is one gather, with no loop over cases.
    order = np.lexsort((s, inv))
    sorted_scores = s[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # One exact rational rank per group (a loop over groups, not cases).
    ranks = np.array([conformal_rank(int(c), a) for c in counts], dtype=np.int64)
    finite = ranks <= counts
    idx = np.where(finite, starts + ranks - 1, 0)
    own_values = np.where(finite, sorted_scores[idx] if s.size else 0.0, math.inf)

    out: dict[str, GroupThreshold] = {}
    for key, n_g, r_g, v_g in zip(
        uniq.tolist(), counts.tolist(), ranks.tolist(), own_values.tolist(), strict=True
    ):
        own = ThresholdResult(float(v_g), int(r_g), int(n_g), float(a), r_g > n_g, a)
        reason: str | None = None
        if n_g < use_min_n:
            reason = f"group n={n_g} < min_n={use_min_n}: pooled threshold used"
        elif own.insufficient:
            reason = f"group {own.reason}: pooled threshold used"
        if reason is not None and pooled.insufficient:
            reason += "; pooled calibration also insufficient: full label set"
        fallback = reason is not None
        value = pooled.value if fallback else own.value
        out[str(key)] = GroupThreshold(str(key), value, own, fallback, reason)
    if len(out) != uniq.size:
        raise ValueError("distinct group keys collide when converted to str")
    return MondrianCalibration(float(a), a, use_min_n, pooled, out)
