"""Exact finite-sample conformal rank and split-conformal thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "AlphaLike",
    "ThresholdResult",
    "conformal_rank",
    "conformal_threshold",
    "decode_float",
    "encode_float",
    "exact_alpha",
    "lac_threshold",
    "min_calibration_size",
]

FloatArray = npt.NDArray[np.float64]
AlphaLike = float | Fraction | Decimal | str


def exact_alpha(alpha: AlphaLike) -> Fraction:
    """Return alpha as the exact rational it was written as (0.18 -> 9/50).

    A float is read through its shortest round-trip decimal repr (``repr(0.18) == "0.18"``),
    which is the number the caller typed; ``Fraction(0.18)`` would be the binary double
    0.179999999999999993338661852249060757458209991455078125 and
    ``limit_denominator`` would pick a denominator-dependent neighbour. Any float the
    caller can write has a unique shortest repr, so this mapping is exact and stable.
    """
    if isinstance(alpha, Fraction):
        frac = alpha
    elif isinstance(alpha, bool):
        raise TypeError("alpha must be a number, not bool")
    elif isinstance(alpha, float | int | np.floating | np.integer):
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {alpha!r}")
        frac = Fraction(repr(float(alpha)))
    else:
        frac = Fraction(alpha)
    if not 0 < frac < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return frac


def conformal_rank(n: int, alpha: AlphaLike) -> int:
    """Return r = ceil((n + 1)(1 - alpha)) computed in exact rational arithmetic."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return math.ceil((int(n) + 1) * (1 - exact_alpha(alpha)))


def per_step_alpha(alpha: AlphaLike, *, steps: int, anytime: bool) -> Fraction:
    """The alpha each of ``steps`` calibrated steps (0..T: T + 1 of them) is held to, exactly:
    ``alpha`` itself, or ``alpha / steps`` in anytime mode (a union bound over the steps)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    a = exact_alpha(alpha)
    return a / steps if anytime else a


def min_calibration_size(alpha: AlphaLike) -> int:
    """Return the smallest n whose conformal rank is <= n (a finite threshold)."""
    # r <= n  <=>  (n + 1)(1 - a) <= n  <=>  n >= (1 - a) / a
    a = exact_alpha(alpha)
    return math.ceil((1 - a) / a)


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """A split-conformal threshold: the rank-th smallest of n scores, or inf when rank > n.

    ``alpha`` is the float for display; ``alpha_exact`` is the rational the rank was
    computed from (they differ for e.g. the anytime alpha 1/30, which has no exact float).
    """

    value: float
    rank: int
    n: int
    alpha: float
    insufficient: bool
    alpha_exact: Fraction

    @property
    def reason(self) -> str | None:
        """Why the threshold is infinite, or None when it is finite."""
        if not self.insufficient:
            return None
        need = min_calibration_size(self.alpha_exact)
        return f"insufficient calibration: rank {self.rank} > n={self.n}; need n >= {need}"

    @property
    def target_coverage(self) -> float:
        """Exact coverage without ties, r / (n + 1) (1.0 when the threshold is infinite)."""
        return 1.0 if self.insufficient else self.rank / (self.n + 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; an infinite value is encoded as the string "inf"."""
        return {
            "value": encode_float(self.value),
            "rank": self.rank,
            "n": self.n,
            "alpha": self.alpha,
            "alpha_exact": str(self.alpha_exact),
            "insufficient": self.insufficient,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdResult:
        """Inverse of to_dict; refuses a record whose rank, flag and value disagree."""
        alpha_exact = exact_alpha(str(data["alpha_exact"]))
        out = cls(
            value=decode_float(data["value"]),
            rank=int(data["rank"]),
            n=int(data["n"]),
            alpha=float(data["alpha"]),
            insufficient=bool(data["insufficient"]),
            alpha_exact=alpha_exact,
        )
        if out.rank != conformal_rank(out.n, alpha_exact):
            raise ValueError(f"stored rank {out.rank} != conformal rank for n={out.n}")
        if out.insufficient != (out.rank > out.n) or out.insufficient != math.isinf(out.value):
            raise ValueError("stored insufficient flag disagrees with rank/value")
        return out


def encode_float(x: float) -> float | str:
    """Encode a float for strict JSON: +inf -> "inf" (JSON has no infinity); NaN refused."""
    if math.isnan(x):
        raise ValueError("NaN threshold cannot be encoded")
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def decode_float(x: float | int | str | None) -> float:
    """Inverse of encode_float; also accepts JSON null as +inf."""
    if x is None or x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    if isinstance(x, str):
        raise ValueError(f"unexpected encoded float {x!r}")
    return float(x)


def _as_scores(scores: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"calibration scores must be 1-D, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("calibration scores contain NaN")
    return arr


def conformal_threshold(scores: npt.ArrayLike, alpha: AlphaLike) -> ThresholdResult:
    """Return the r-th smallest calibration score (r = conformal_rank), or inf if r > n."""
    arr = _as_scores(scores)
    n = int(arr.size)
    r = conformal_rank(n, alpha)
    a = exact_alpha(alpha)
    if r > n:
        return ThresholdResult(math.inf, r, n, float(a), True, a)
    # r >= 1 always (alpha < 1); np.partition puts the (r-1)-th order statistic in place.
    value = float(np.partition(arr, r - 1)[r - 1])
    return ThresholdResult(value, r, n, float(a), False, a)


def lac_threshold(scores: npt.NDArray[Any], alpha: float) -> float:
    """Return the r-th smallest calibration score (scores = 1 - p(true label)); inf if r > n."""
    return conformal_threshold(scores, alpha).value
