"""Pure, vectorised scoring: prediction sets, entropies, expected set size, p-values.

Arrays are ``(..., K)`` over labels. Entropy is in nats, with probabilities clipped at
``PROB_FLOOR`` inside the log only (a zero probability contributes exactly 0).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.conformal import conformal_p_values as _p_values
from app.conformal import lac_prediction_set

__all__ = [
    "NOMINAL_MASS_TOL",
    "PROB_FLOOR",
    "conformal_p_values",
    "entropy",
    "lac_set_mask",
    "nominal_set_mask",
    "prediction_set_mask",
    "score_candidates",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

PROB_FLOOR = 1e-12
# Cumulative mass within this of 1 - alpha counts as reaching it, so float drift in a
# softmax (0.3 + 0.6 = 0.8999999999999999) cannot add a label to the nominal set.
NOMINAL_MASS_TOL = 1e-12
_WEIGHT_SUM_TOL = 1e-6


def entropy(probs: npt.ArrayLike) -> FloatArray:
    """Shannon entropy in nats along the last axis."""
    p = np.asarray(probs, dtype=np.float64)
    return np.asarray(-np.sum(p * np.log(np.clip(p, PROB_FLOOR, 1.0)), axis=-1), dtype=np.float64)


def lac_set_mask(probs: npt.ArrayLike, threshold: float) -> BoolArray:
    """LAC set: True where the score 1 - p(y) <= threshold (may be empty; inf gives all)."""
    return lac_prediction_set(np.asarray(probs, dtype=np.float64), threshold)


def nominal_set_mask(probs: npt.ArrayLike, alpha: float) -> BoolArray:
    """Uncalibrated set: the fewest top labels whose posterior mass reaches 1 - alpha.

    Equal probabilities are ranked by label index (stable sort), so the set is
    deterministic. It reflects only the model's own probabilities: never a guarantee.
    """
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-p, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=-1)
    cumulative = np.cumsum(sorted_p, axis=-1)
    mass_before = np.concatenate([np.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], -1)
    # Position j is needed iff the labels ranked above it still fall short of 1 - alpha;
    # the top label (mass before it 0 < 1 - alpha) is always included.
    take_sorted = mass_before < (1.0 - alpha) - NOMINAL_MASS_TOL
    mask = np.empty_like(take_sorted)
    np.put_along_axis(mask, order, take_sorted, axis=-1)
    return mask


def prediction_set_mask(probs: npt.ArrayLike, threshold: float | None, alpha: float) -> BoolArray:
    """LAC set at ``threshold``, or the nominal set at ``alpha`` when threshold is None."""
    if threshold is None:
        return nominal_set_mask(probs, alpha)
    return lac_set_mask(probs, threshold)


def objective_set_size(
    probs: npt.ArrayLike, threshold: float | None, alpha: float
) -> npt.NDArray[np.intp]:
    """Set sizes as the C-IP objective counts them: an empty set counts as all K labels.

    A LAC set is empty when no label is probable enough, i.e. the posterior is flat. Counted
    as 0, a flat posterior would look like the best possible outcome and C-IP would prefer
    the least informative question; counted as K it is what it is, no narrowing at all.
    """
    mask = prediction_set_mask(probs, threshold, alpha)
    sizes = mask.sum(axis=-1)
    return np.asarray(np.where(sizes == 0, mask.shape[-1], sizes), dtype=np.intp)


def improves(
    *,
    by_set_size: bool,
    best_size: npt.ArrayLike,
    best_entropy: npt.ArrayLike,
    current_size: npt.ArrayLike,
    current_entropy: npt.ArrayLike,
    tol: float = 1e-9,
) -> BoolArray:
    """Whether the best candidate beats the present state in the policy's order.

    C-IP (``by_set_size``) orders lexicographically by (expected set size, expected
    entropy): a question that cannot shrink the set but is expected to sharpen the posterior
    still counts as a gain (with a weak model every set is full, and a size-only rule would
    never ask). IP orders by entropy alone.
    """
    size, ent = np.asarray(best_size), np.asarray(best_entropy)
    now_size, now_ent = np.asarray(current_size), np.asarray(current_entropy)
    sharper = ent < now_ent - tol
    if not by_set_size:
        return np.asarray(sharper, dtype=np.bool_)
    return np.asarray((size < now_size - tol) | ((size <= now_size + tol) & sharper), np.bool_)


def score_candidates(
    probs: npt.ArrayLike,
    weights: npt.ArrayLike,
    threshold: float | None,
    alpha: float,
) -> tuple[FloatArray, FloatArray]:
    """Expected set size and expected entropy (nats) of each candidate question.

    ``probs`` is (Q, M, K): the posterior after candidate answer m to question q;
    ``weights`` is (Q, M), each row summing to 1 (pad ragged M with weight 0 and any
    finite probabilities). Returns two (Q,) arrays:
    ``sum_m w_qm |C(h + (q, a_m))|`` (empty sets counted as K, see ``objective_set_size``)
    and ``sum_m w_qm H(Y | h + (q, a_m))``.
    """
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"probs must be (Q, M, K), got shape {p.shape}")
    if w.shape != p.shape[:2]:
        raise ValueError(f"weights must be {p.shape[:2]}, got {w.shape}")
    if not np.isfinite(p).all() or not np.isfinite(w).all():
        raise ValueError("probs and weights must be finite")
    if (w < 0).any() or not np.allclose(w.sum(axis=1), 1.0, rtol=0.0, atol=_WEIGHT_SUM_TOL):
        raise ValueError("weights must be >= 0 and each row must sum to 1")
    sizes = objective_set_size(p, threshold, alpha)
    expected_size = np.sum(w * sizes, axis=1)
    expected_entropy = np.sum(w * entropy(p), axis=1)
    return expected_size, expected_entropy


def conformal_p_values(probs: npt.ArrayLike, calibration_scores: npt.ArrayLike) -> FloatArray:
    """p(y) = (1 + #{i : s_i >= s(y)}) / (n + 1) with s(y) = 1 - p(y), for every label.

    This is ``app.conformal.conformal_p_values`` with u = 1 (deterministic, conservative).
    With the rank-r LAC threshold from the same scores, ``p(y) > alpha`` iff y is in the set.
    """
    p = np.asarray(probs, dtype=np.float64)
    return _p_values(calibration_scores, 1.0 - p, None)
