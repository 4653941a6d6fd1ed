"""Prediction sets from thresholds, and randomised conformal p-values.

Convention: a label is in the set when its score is ``<=`` the threshold, with no
tolerance. The guarantee is about the scores as computed, so calibration and test scores
must come from the same function on the same dtype (float64 here); a tolerance would only
change which score function is being calibrated and add over-coverage. Ties are handled
exactly by the randomised p-values, not by fuzzy comparisons.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from app.conformal.rank import AlphaLike, exact_alpha

__all__ = [
    "RandomnessLike",
    "conformal_p_values",
    "lac_prediction_set",
    "p_value_counts",
    "p_value_prediction_set",
    "prediction_set",
    "prediction_set_from_p_values",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
RandomnessLike = np.random.Generator | npt.ArrayLike | None


def prediction_set(scores: npt.ArrayLike, threshold: float | npt.ArrayLike) -> BoolArray:
    """Boolean mask, shape of ``scores``: True where score <= threshold (inf -> every label).

    ``threshold`` is a scalar or broadcasts against ``scores`` (e.g. shape (m, 1) for one
    threshold per case, or (K,) for one per class in class-conditional calibration).
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(threshold, dtype=np.float64)
    if np.isnan(t).any():
        raise ValueError("threshold is NaN")
    # `<=` against +inf is True for every non-NaN score; NaN scores are refused so that an
    # infinite threshold always yields the full label set.
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return np.asarray(s <= t, dtype=np.bool_)


def lac_prediction_set(probs: npt.NDArray[Any], threshold: float) -> BoolArray:
    """Boolean mask, shape of ``probs`` (1-D one case, 2-D batch): True where 1 - p <= threshold."""
    p = np.asarray(probs, dtype=np.float64)
    # Same float64 expression as app.conformal.scores.lac_scores, so a calibration score and
    # a test score of the same probability are bitwise equal.
    return prediction_set(1.0 - p, threshold)


def _resolve_u(rng_or_u: RandomnessLike, shape: tuple[int, ...]) -> FloatArray:
    if rng_or_u is None:
        return np.ones(shape, dtype=np.float64)
    if isinstance(rng_or_u, np.random.Generator):
        return rng_or_u.random(shape)
    u = np.asarray(rng_or_u, dtype=np.float64)
    if ((u < 0) | (u > 1)).any() or np.isnan(u).any():
        raise ValueError("u must lie in [0, 1]")
    return np.broadcast_to(u, shape)


def p_value_counts(
    cal_scores: npt.ArrayLike, test_scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """Return (#cal > s, #cal == s, n) for every test score s, shape of ``test_scores``."""
    cal = np.sort(np.asarray(cal_scores, dtype=np.float64).ravel())
    if np.isnan(cal).any():
        raise ValueError("calibration scores contain NaN")
    test = np.asarray(test_scores, dtype=np.float64)
    if np.isnan(test).any():
        raise ValueError("test scores contain NaN")
    n = int(cal.size)
    flat = test.reshape(-1)
    left = np.searchsorted(cal, flat, side="left")
    # A second binary search only for the test scores that equal some calibration score
    # (few for continuous scores): halves the cost of the common case.
    tied = cal[np.minimum(left, n - 1)] == flat if n else np.zeros(flat.shape, dtype=np.bool_)
    right = left.copy()
    right[tied] = np.searchsorted(cal, flat[tied], side="right")
    greater = (n - right).astype(np.int64).reshape(test.shape)
    equal = (right - left).astype(np.int64).reshape(test.shape)
    return greater, equal, n


def conformal_p_values(
    cal_scores: npt.ArrayLike,
    test_scores: npt.ArrayLike,
    rng_or_u: RandomnessLike = None,
) -> FloatArray:
    """Randomised conformal p-values, shape of ``test_scores``.

    ``p(y) = (#{i: s_i > s_y} + u * (#{i: s_i == s_y} + 1)) / (n + 1)``. With u ~ U(0, 1)
    independent of the data, the p-value of the true label is exactly U(0, 1) for an
    exchangeable test case, ties included. ``rng_or_u``: a Generator draws one u per entry
    of ``test_scores``; an array (broadcast to the shape of ``test_scores``; e.g. shape
    (m, 1) shares one u across a case's labels, which keeps its set nested in score order);
    None uses u = 1, the conservative deterministic p-value.
    """
    greater, equal, n = p_value_counts(cal_scores, test_scores)
    u = _resolve_u(rng_or_u, greater.shape)
    return np.asarray((greater + u * (equal + 1)) / (n + 1), dtype=np.float64)


def prediction_set_from_p_values(p_values: npt.ArrayLike, alpha: float) -> BoolArray:
    """Boolean mask: True where p > alpha (float comparison; see p_value_prediction_set)."""
    a = float(exact_alpha(alpha))
    return np.asarray(np.asarray(p_values, dtype=np.float64) > a, dtype=np.bool_)


def p_value_prediction_set(
    cal_scores: npt.ArrayLike,
    test_scores: npt.ArrayLike,
    alpha: AlphaLike,
    rng_or_u: RandomnessLike = None,
) -> BoolArray:
    """Set {y : p(y) > alpha} decided without rounding at the boundary.

    ``p > alpha`` is ``num > A`` with ``num = G + u (E + 1)`` and ``A = alpha (n + 1)``
    exact. Where num is an integer (u = 1, or u = 0) this is ``num > floor(A)``, decided
    exactly, so with u = 1 the set equals the threshold set ``score <= r-th smallest`` for
    every (n, alpha). Other num are compared with float(A); they miss A's exact value only
    with probability ~1e-16 over u.
    """
    greater, equal, n = p_value_counts(cal_scores, test_scores)
    u = _resolve_u(rng_or_u, greater.shape)
    big_a: Fraction = exact_alpha(alpha) * (n + 1)
    num = greater + u * (equal + 1)
    integral = num == np.floor(num)
    out = np.where(integral, num > math.floor(big_a), num > float(big_a))
    return np.asarray(out, dtype=np.bool_)
