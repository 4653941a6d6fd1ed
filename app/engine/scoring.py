"""Pure, vectorised scoring: prediction sets, entropies, expected set size, p-values.

Arrays are ``(..., K)`` over labels. Entropy is in nats, with probabilities clipped at
``PROB_FLOOR`` inside the log only (a zero probability contributes exactly 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.conformal import conformal_p_values as _p_values
from app.conformal import lac_prediction_set

__all__ = [
    "NOMINAL_MASS_TOL",
    "PROB_FLOOR",
    "CandidateObjectives",
    "binary_entropy",
    "conformal_p_values",
    "entropy",
    "entropy_bound",
    "lac_set_mask",
    "nominal_set_mask",
    "prediction_set_mask",
    "score_candidates",
    "set_mass",
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


def binary_entropy(alpha: float) -> float:
    """h_b(alpha) in nats."""
    return float(-alpha * np.log(alpha) - (1.0 - alpha) * np.log1p(-alpha))


def entropy_bound(
    sizes: npt.ArrayLike,
    included: npt.ArrayLike,
    weights: npt.ArrayLike,
    *,
    n_labels: int,
    alpha: float,
    alpha_n: float,
) -> FloatArray:
    """The C-IP paper's entropy upper bound of each candidate, from its sets (nats).

    ``sizes`` (..., M) are the sets' raw sizes (an empty set is 0), ``included`` (..., M) the
    probability that the answer's label is in its set: 1 or 0 for a draw that carries its
    label, the posterior mass inside the set for an answer that carries none. With the M
    answers weighted by ``weights`` and K = ``n_labels``::

        B = h_b(alpha) + (1 - alpha_N) * E[log |C| | included]
                       + alpha * E[log (K - |C|) | excluded]

    An empty set is excluded and costs alpha log K; a wrong singleton alpha log(K - 1); a
    right one 0. A conditional mean over zero weight counts 0, as in the paper's code.
    """
    n = np.asarray(sizes, dtype=np.float64)
    pi = np.clip(np.asarray(included, dtype=np.float64), 0.0, 1.0)
    w = np.asarray(weights, dtype=np.float64)
    if n.shape != pi.shape or n.shape != w.shape:
        raise ValueError(f"sizes, included and weights differ in shape: {n.shape}")
    w_in, w_out = w * pi, w * (1.0 - pi)
    # An included answer has |C| >= 1, an excluded one |C| <= K - 1 (floors are for w = 0).
    log_in = np.log(np.maximum(n, 1.0))
    log_out = np.log(np.maximum(n_labels - n, 1.0))
    mass_in, mass_out = w_in.sum(axis=-1), w_out.sum(axis=-1)
    mean_in = np.divide(
        (w_in * log_in).sum(axis=-1), mass_in, out=np.zeros_like(mass_in), where=mass_in > 0
    )
    mean_out = np.divide(
        (w_out * log_out).sum(axis=-1), mass_out, out=np.zeros_like(mass_out), where=mass_out > 0
    )
    bound = binary_entropy(alpha) + (1.0 - alpha_n) * mean_in + alpha * mean_out
    return np.asarray(bound, dtype=np.float64)


def set_mass(probs: npt.ArrayLike, mask: npt.ArrayLike) -> FloatArray:
    """Posterior mass inside each set: sum of p(y) over y in the set, along the last axis."""
    p = np.asarray(probs, dtype=np.float64)
    return np.asarray(np.sum(np.where(np.asarray(mask), p, 0.0), axis=-1), dtype=np.float64)


def improves(
    *,
    best: npt.ArrayLike,
    best_entropy: npt.ArrayLike,
    current: npt.ArrayLike,
    current_entropy: npt.ArrayLike,
    entropy_only: bool,
    tol: float = 1e-9,
) -> BoolArray:
    """Whether the best candidate beats asking nothing, in the policy's order.

    ``best``/``current`` are the objective (expected set size or entropy bound) of the best
    candidate and of the present history, *both scored by the same rule* (the thresholds of
    step k+1): a candidate whose answers left the posterior as it is would tie. C-IP orders
    lexicographically by (objective, expected entropy): a question that cannot shrink the
    set but is expected to sharpen the posterior still counts as a gain (with a weak model
    every set is full, and an objective-only rule would never ask). IP (``entropy_only``)
    orders by entropy alone.
    """
    obj, ent = np.asarray(best), np.asarray(best_entropy)
    now_obj, now_ent = np.asarray(current), np.asarray(current_entropy)
    sharper = ent < now_ent - tol
    if entropy_only:
        return np.asarray(sharper, dtype=np.bool_)
    return np.asarray((obj < now_obj - tol) | ((obj <= now_obj + tol) & sharper), np.bool_)


class CandidateObjectives(NamedTuple):
    """Per candidate (Q,): the expected set size, expected entropy and entropy bound; and
    per answer (Q, M) what they are built from: the set size as the objective counts it
    (``objective_set_size``) and the posterior's entropy."""

    expected_set_size: FloatArray
    expected_entropy: FloatArray
    entropy_bound: FloatArray
    set_sizes: npt.NDArray[np.intp]
    entropies: FloatArray


def score_candidates(
    probs: npt.ArrayLike,
    weights: npt.ArrayLike,
    threshold: float | None,
    alpha: float,
    *,
    answer_labels: npt.ArrayLike | None = None,
    alpha_n: float | None = None,
) -> CandidateObjectives:
    """Every objective of each candidate question.

    ``probs`` is (Q, M, K): the posterior after candidate answer m to question q;
    ``weights`` is (Q, M), each row summing to 1 (pad ragged M with weight 0 and any
    finite probabilities). ``answer_labels`` (Q, M) gives the label index an answer was
    drawn for, -1 for none (default: none); ``alpha_n`` the bound's finite-sample alpha
    (default ``alpha``). Returns ``sum_m w_qm |C(h + (q, a_m))|`` (empty sets counted as K,
    see ``objective_set_size``), ``sum_m w_qm H(Y | h + (q, a_m))`` and ``entropy_bound``
    with inclusion by the drawn label where there is one, else by posterior mass.
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
    y = np.full(w.shape, -1) if answer_labels is None else np.asarray(answer_labels, np.intp)
    if y.shape != w.shape or (y >= p.shape[2]).any():
        raise ValueError(f"answer_labels must be {w.shape} indices below {p.shape[2]} or -1")
    mask = prediction_set_mask(p, threshold, alpha)
    raw = mask.sum(axis=-1)
    sizes = np.where(raw == 0, p.shape[2], raw)
    labelled = np.take_along_axis(mask, np.maximum(y, 0)[..., None], axis=-1)[..., 0]
    included = np.where(y >= 0, labelled, set_mass(p, mask))
    bound = entropy_bound(
        raw,
        included,
        w,
        n_labels=p.shape[2],
        alpha=alpha,
        alpha_n=alpha if alpha_n is None else alpha_n,
    )
    entropies = entropy(p)
    return CandidateObjectives(
        np.sum(w * sizes, axis=1),
        np.sum(w * entropies, axis=1),
        bound,
        np.asarray(sizes, dtype=np.intp),
        entropies,
    )


def conformal_p_values(probs: npt.ArrayLike, calibration_scores: npt.ArrayLike) -> FloatArray:
    """p(y) = (1 + #{i : s_i >= s(y)}) / (n + 1) with s(y) = 1 - p(y), for every label.

    This is ``app.conformal.conformal_p_values`` with u = 1 (deterministic, conservative).
    With the rank-r LAC threshold from the same scores, ``p(y) > alpha`` iff y is in the set.
    """
    p = np.asarray(probs, dtype=np.float64)
    return _p_values(calibration_scores, 1.0 - p, None)
