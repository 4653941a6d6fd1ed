"""The pure scoring core against first-principles computations."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.conformal import lac_threshold
from app.engine.scoring import (
    conformal_p_values,
    entropy,
    lac_set_mask,
    nominal_set_mask,
    prediction_set_mask,
    score_candidates,
)


def shannon(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def nominal_size_exact(p: list[float], alpha: float) -> int:
    """Fewest top labels reaching mass 1 - alpha, in exact decimal arithmetic."""
    target = 1 - Fraction(repr(alpha))
    mass = Fraction(0)
    for size, x in enumerate(sorted(p, reverse=True), start=1):
        mass += Fraction(repr(x))
        if mass >= target:
            return size
    return len(p)


def test_entropy_in_nats_and_zero_probabilities_contribute_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = entropy(np.array([[0.25] * 4, [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))
    assert h == pytest.approx([math.log(4), 0.0, math.log(2)])


@pytest.mark.parametrize(
    ("probs", "alpha"),
    [
        ([0.5, 0.3, 0.15, 0.05], 0.1),
        ([0.6, 0.3, 0.1], 0.1),  # 0.6 + 0.3 is 0.8999999999999999 in floats
        ([0.7, 0.1, 0.1, 0.1], 0.3),
        ([0.25, 0.25, 0.25, 0.25], 0.5),
        ([0.96, 0.02, 0.01, 0.01], 0.05),
    ],
)
def test_nominal_set_is_the_smallest_top_prefix(probs: list[float], alpha: float) -> None:
    mask = nominal_set_mask(np.array(probs), alpha)
    size = nominal_size_exact(probs, alpha)
    assert int(mask.sum()) == size
    top = sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:size]
    assert set(np.flatnonzero(mask)) == set(top)


def test_nominal_ties_rank_by_label_index() -> None:
    assert nominal_set_mask(np.array([0.3, 0.4, 0.3]), 0.4).tolist() == [True, True, False]


@settings(max_examples=100, deadline=None)
@given(
    raw=arrays(np.float64, (5,), elements=st.floats(0.0, 1.0)),
    alpha=st.floats(0.01, 0.99),
)
def test_nominal_set_reaches_the_mass_and_is_minimal(raw: np.ndarray, alpha: float) -> None:
    if raw.sum() <= 0:
        raw = np.ones(5)
    p = raw / raw.sum()
    mask = nominal_set_mask(p, alpha)
    size = int(mask.sum())
    ranked = np.sort(p)[::-1]
    assert p[mask].sum() >= 1 - alpha - 1e-9
    assert ranked[: size - 1].sum() < 1 - alpha + 1e-9
    assert p[mask].min() >= p[~mask].max(initial=-1.0)


def test_lac_set_mask_follows_one_minus_p_le_threshold() -> None:
    p = np.array([0.5, 0.3, 0.15, 0.05])
    assert lac_set_mask(p, 0.7).tolist() == [1 - x <= 0.7 for x in p.tolist()]
    assert lac_set_mask(p, math.inf).all()
    assert not lac_set_mask(p, 0.4).any()  # LAC sets can be empty
    assert prediction_set_mask(p, None, 0.1).tolist() == nominal_set_mask(p, 0.1).tolist()


TABLE = [
    # question 0: two answers
    [[0.8, 0.1, 0.05, 0.05], [0.3, 0.3, 0.3, 0.1]],
    # question 1: one real answer, one padded slot
    [[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]],
]
WEIGHTS = [[0.25, 0.75], [1.0, 0.0]]


@pytest.mark.parametrize("threshold", [0.75, 0.5, None])
def test_score_candidates_matches_loops(threshold: float | None) -> None:
    alpha = 0.1
    scored = score_candidates(np.array(TABLE), np.array(WEIGHTS), threshold, alpha)
    size, ent = scored.expected_set_size, scored.expected_entropy
    for q in range(2):
        want_size = 0.0
        want_ent = 0.0
        for m in range(2):
            p = TABLE[q][m]
            if threshold is None:
                set_size = nominal_size_exact(p, alpha)
            else:
                # An empty LAC set counts as every label (a flat posterior narrows nothing).
                set_size = sum(1 for x in p if 1 - x <= threshold) or len(p)
            want_size += WEIGHTS[q][m] * set_size
            want_ent += WEIGHTS[q][m] * shannon(p)
        assert size[q] == pytest.approx(want_size)
        assert ent[q] == pytest.approx(want_ent)


def paper_bound(
    sets: list[set[int]], labels: list[int], alpha: float, alpha_n: float, k: int
) -> float:
    """The paper's bound by plain loops (natural logs): means over included / excluded."""
    inc = [math.log(len(c)) for c, y in zip(sets, labels, strict=True) if y in c]
    exc = [math.log(k - len(c)) for c, y in zip(sets, labels, strict=True) if y not in c]
    h_b = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    mean_inc = sum(inc) / len(inc) if inc else 0.0
    mean_exc = sum(exc) / len(exc) if exc else 0.0
    return h_b + (1 - alpha_n) * mean_inc + alpha * mean_exc


@pytest.mark.parametrize("threshold", [0.75, 0.5, 0.35])
def test_entropy_bound_with_drawn_labels_matches_the_papers_formula(threshold: float) -> None:
    # Four draws (equal weights) of one question: labels 0, 1, 2, 0.
    probs = [
        [0.8, 0.1, 0.05, 0.05],
        [0.3, 0.3, 0.3, 0.1],
        [0.5, 0.5, 0.0, 0.0],
        [0.4, 0.3, 0.2, 0.1],
    ]
    labels = [0, 1, 2, 0]
    alpha, alpha_n = 0.1, 0.1 - 1 / 101
    bound = score_candidates(
        np.array([probs]),
        np.full((1, 4), 0.25),
        threshold,
        alpha,
        answer_labels=np.array([labels]),
        alpha_n=alpha_n,
    ).entropy_bound
    sets = [{y for y, x in enumerate(p) if 1 - x <= threshold} for p in probs]
    assert bound[0] == pytest.approx(paper_bound(sets, labels, alpha, alpha_n, 4), abs=1e-12)


def test_entropy_bound_prices_empty_wrong_and_right_sets() -> None:
    alpha = 0.1
    h_b = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    flat, sure_a = [0.25] * 4, [0.97, 0.01, 0.01, 0.01]

    def bound(p: list[float], y: int) -> float:
        b = score_candidates(
            np.array([[p]]), np.ones((1, 1)), 0.5, alpha, answer_labels=np.array([[y]])
        ).entropy_bound
        return float(b[0])

    assert bound(flat, 0) == pytest.approx(h_b + alpha * math.log(4))  # empty: excluded
    assert bound(sure_a, 1) == pytest.approx(h_b + alpha * math.log(3))  # wrong singleton
    assert bound(sure_a, 0) == pytest.approx(h_b)  # right singleton


def test_unlabelled_answers_are_included_by_posterior_mass() -> None:
    alpha = 0.1
    p = [0.6, 0.3, 0.05, 0.05]  # tau 0.5: the set is {0}, mass 0.6 inside
    bound = score_candidates(np.array([[p]]), np.ones((1, 1)), 0.5, alpha).entropy_bound
    h_b = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    # included mean log|C| = log 1 = 0 whatever its weight; excluded: log(4 - 1) at weight 0.4
    assert bound[0] == pytest.approx(h_b + alpha * math.log(3))


def test_score_candidates_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        score_candidates(np.array(TABLE), np.array([[0.5, 0.4], [1.0, 0.0]]), None, 0.1)
    with pytest.raises(ValueError, match="Q, M, K"):
        score_candidates(np.array(TABLE[0]), np.array(WEIGHTS[0]), None, 0.1)


def test_p_values_match_a_first_principles_count() -> None:
    scores = [0.1, 0.4, 0.4, 0.7, 0.2, 0.9, 0.55]
    probs = [0.6, 0.3, 0.45, 0.0]  # 1 - 0.6 = 0.4 ties two calibration scores
    got = conformal_p_values(np.array(probs), np.array(scores))
    n = len(scores)
    for p, g in zip(probs, got.tolist(), strict=True):
        s = 1 - p
        assert g == pytest.approx((1 + sum(1 for x in scores if x >= s)) / (n + 1))


@settings(max_examples=100, deadline=None)
@given(
    scores=arrays(
        np.float64, st.integers(1, 40), elements=st.sampled_from([i / 20 for i in range(21)])
    ),
    probs=arrays(np.float64, (4,), elements=st.sampled_from([i / 20 for i in range(21)])),
    alpha=st.sampled_from([0.05, 0.1, 0.2, 0.3]),
)
def test_p_value_above_alpha_iff_in_lac_set(
    scores: np.ndarray, probs: np.ndarray, alpha: float
) -> None:
    # Scores as the engine computes them (1 - p), so calibration and test agree bitwise.
    cal = 1.0 - scores
    tau = lac_threshold(cal, alpha)
    in_set = lac_set_mask(probs, tau)
    assert ((conformal_p_values(probs, cal) > alpha) == in_set).all()
