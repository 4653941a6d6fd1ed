"""LAC, APS (plain and randomised) and RAPS scores, worked by hand."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from scipy import stats

from app.conformal import (
    ScoreFunction,
    aps_scores,
    calibration_scores,
    conformal_rank,
    conformal_threshold,
    lac_scores,
    prediction_set,
    raps_scores,
    true_label_scores,
)

P = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])


def test_lac_is_one_minus_p() -> None:
    np.testing.assert_array_equal(lac_scores(P), 1.0 - P)


def test_aps_plain_by_hand() -> None:
    # Row 0 sorted: label 1 (0.5), label 2 (0.3), label 0 (0.2); cumulative 0.5, 0.8, 1.0.
    # Row 1: the tie 0.4/0.4 is broken by label index: label 0 first.
    expected = np.array([[0.5 + 0.3 + 0.2, 0.5, 0.5 + 0.3], [0.4, 0.4 + 0.4, 0.4 + 0.4 + 0.2]])
    np.testing.assert_allclose(aps_scores(P), expected)


def test_aps_randomised_by_hand() -> None:
    u = np.array([0.25, 0.5])
    # Mass strictly above the label plus u * p(label).
    expected = np.array(
        [
            [0.5 + 0.3 + 0.25 * 0.2, 0.25 * 0.5, 0.5 + 0.25 * 0.3],
            [0.5 * 0.4, 0.4 + 0.5 * 0.4, 0.8 + 0.5 * 0.2],
        ]
    )
    np.testing.assert_allclose(aps_scores(P, u), expected)
    with pytest.raises(ValueError):
        aps_scores(P, np.array([0.1, 0.2, 0.3]))


def test_raps_adds_rank_penalty() -> None:
    lam, k_reg = 0.1, 1
    # Ranks row 0: label 1 -> 1, label 2 -> 2, label 0 -> 3; penalty lam * max(0, rank - 1).
    np.testing.assert_allclose(
        raps_scores(P, lam=lam, k_reg=k_reg)[0], [1.0 + 2 * lam, 0.5, 0.8 + lam]
    )
    np.testing.assert_allclose(raps_scores(P, lam=0.0, k_reg=0), aps_scores(P))
    with pytest.raises(ValueError):
        raps_scores(P, lam=-1.0)


def test_aps_sets_are_top_k_prefixes() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(6), size=200)
    u = rng.random(200)
    sets = prediction_set(aps_scores(probs, u), 0.7)
    order = np.argsort(-probs, axis=1, kind="stable")
    in_order = np.take_along_axis(sets, order, axis=1)
    # Once a label is out, every less probable label is out too.
    assert not (in_order[:, 1:] & ~in_order[:, :-1]).any()


def test_true_label_scores_and_pluggable_score_function() -> None:
    labels = np.array([2, 0])
    np.testing.assert_array_equal(true_label_scores(lac_scores(P), labels), [0.7, 0.6])
    score_fn: ScoreFunction = partial(raps_scores, lam=0.1, k_reg=1)
    np.testing.assert_allclose(calibration_scores(score_fn, P, labels), [0.9, 0.4])
    with pytest.raises(ValueError):
        true_label_scores(lac_scores(P), np.array([3, 0]))


def test_randomised_aps_coverage_is_binomial_r_over_n_plus_1() -> None:
    # Randomised APS scores are continuous, so coverage is exactly r / (n + 1).
    n, alpha, trials, k = 19, 0.1, 3_000, 4
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(k), size=(trials, n + 1))
    labels = np.minimum(
        (rng.random((trials, n + 1))[..., None] > np.cumsum(probs, axis=-1)).sum(-1), k - 1
    )
    scores = aps_scores(probs, rng.random((trials, n + 1)))
    true = np.take_along_axis(scores, labels[..., None], axis=-1)[..., 0]
    hits = sum(
        bool(true[i, n] <= conformal_threshold(true[i, :n], alpha).value) for i in range(trials)
    )
    ci = stats.binomtest(hits, trials).proportion_ci(method="exact")
    assert ci.low <= conformal_rank(n, alpha) / (n + 1) <= ci.high
