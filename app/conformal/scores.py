"""Nonconformity scores: LAC, APS (randomised or not) and RAPS, as pluggable functions.

A score function maps probabilities of shape (..., K) (and optional uniforms u of shape
(...,), one per case) to scores of every label, shape (..., K); lower means more
conforming. Calibration uses the score of the true label (``true_label_scores``); the
prediction set is every label whose score is ``<=`` the threshold. Any deterministic
function of (history, label, u) keeps the conformal guarantee, provided calibration and
serving use the same function.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "ScoreFunction",
    "aps_scores",
    "calibration_scores",
    "lac_scores",
    "raps_scores",
    "true_label_scores",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


class ScoreFunction(Protocol):
    """Scores of every label: (probs (..., K), u (...,) or None) -> (..., K)."""

    def __call__(self, probs: npt.ArrayLike, u: npt.ArrayLike | None = None) -> FloatArray: ...


def _probs(probs: npt.ArrayLike) -> FloatArray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 1:
        raise ValueError("probs must have a label axis (last axis)")
    if np.isnan(p).any():
        raise ValueError("probs contain NaN")
    return p


def lac_scores(probs: npt.ArrayLike, u: npt.ArrayLike | None = None) -> FloatArray:
    """LAC score 1 - p(y) for every label (u is ignored: LAC is not randomised)."""
    del u
    return np.asarray(1.0 - _probs(probs), dtype=np.float64)


def _sorted_cumulative(p: FloatArray, u: npt.ArrayLike | None) -> tuple[FloatArray, IntArray]:
    """Return (APS score per label, 1-based rank per label) with ties broken by label index."""
    # Stable sort on -p: descending probability, equal probabilities in label order, so the
    # score is a deterministic function of (probs, label).
    order = np.argsort(-p, axis=-1, kind="stable")
    p_sorted = np.take_along_axis(p, order, axis=-1)
    cum = np.cumsum(p_sorted, axis=-1)
    if u is None:
        sorted_scores = cum
    else:
        uu = np.asarray(u, dtype=np.float64)
        if uu.shape != p.shape[:-1] and uu.shape != ():
            raise ValueError(f"u must have shape {p.shape[:-1]} (one per case), got {uu.shape}")
        # Mass strictly above y plus u * p(y) (Romano et al. 2020; Angelopoulos et al. 2021).
        sorted_scores = cum - p_sorted + uu[..., None] * p_sorted
    ranks_sorted = np.broadcast_to(np.arange(1, p.shape[-1] + 1, dtype=np.intp), p.shape)
    scores = np.empty_like(sorted_scores)
    ranks = np.empty(p.shape, dtype=np.intp)
    np.put_along_axis(scores, order, sorted_scores, axis=-1)
    np.put_along_axis(ranks, order, ranks_sorted, axis=-1)
    return scores, ranks


def aps_scores(probs: npt.ArrayLike, u: npt.ArrayLike | None = None) -> FloatArray:
    """APS score: probability mass of labels ranked at or above y; randomised when u is given.

    Non-randomised: sum of the sorted probabilities up to and including y. Randomised:
    mass strictly above y plus ``u * p(y)``, with one u ~ U(0, 1) per case.
    """
    scores, _ = _sorted_cumulative(_probs(probs), u)
    return scores


def raps_scores(
    probs: npt.ArrayLike,
    u: npt.ArrayLike | None = None,
    *,
    lam: float = 0.01,
    k_reg: int = 1,
) -> FloatArray:
    """RAPS score: APS plus ``lam * max(0, rank(y) - k_reg)`` (rank 1 = most probable).

    Use ``functools.partial(raps_scores, lam=..., k_reg=...)`` as a ScoreFunction.
    """
    if lam < 0 or k_reg < 0:
        raise ValueError("lam and k_reg must be >= 0")
    scores, ranks = _sorted_cumulative(_probs(probs), u)
    penalty = lam * np.maximum(ranks - k_reg, 0)
    return np.asarray(scores + penalty, dtype=np.float64)


def true_label_scores(all_scores: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """Pick the score of each case's true label: (m, K) and (m,) -> (m,)."""
    s = np.asarray(all_scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.intp)
    if s.ndim != 2 or y.shape != s.shape[:1]:
        raise ValueError(f"need scores (m, K) and labels (m,), got {s.shape} and {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= s.shape[1]):
        raise ValueError("label index out of range")
    return np.asarray(np.take_along_axis(s, y[:, None], axis=1)[:, 0], dtype=np.float64)


def calibration_scores(
    score_fn: ScoreFunction,
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    u: npt.ArrayLike | None = None,
) -> FloatArray:
    """Scores of the true labels of calibration cases under ``score_fn``: shape (m,)."""
    return true_label_scores(score_fn(probs, u), labels)
