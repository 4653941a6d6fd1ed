"""Hypothesis properties of thresholds, sets, p-values and Mondrian calibration."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.conformal import (
    conformal_p_values,
    conformal_rank,
    conformal_threshold,
    lac_prediction_set,
    lac_threshold,
    min_calibration_size,
    mondrian_calibration,
    p_value_prediction_set,
    prediction_set,
)

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)

# Scores either continuous or on a coarse grid (many ties).
continuous = st.floats(0.0, 1.0, allow_nan=False, width=64)
gridded = st.integers(0, 10).map(lambda i: i / 10)
score_lists = st.one_of(
    st.lists(continuous, min_size=0, max_size=60), st.lists(gridded, min_size=0, max_size=60)
)
alphas = st.one_of(
    st.sampled_from([0.01, 0.05, 0.1, 0.18, 0.2, 0.25, 0.41, 0.5]),
    st.integers(1, 999).map(lambda k: k / 1000),
)


def as_array(xs: list[float]) -> npt.NDArray[np.float64]:
    return np.asarray(xs, dtype=np.float64)


@FAST
@given(score_lists, alphas)
def test_threshold_is_a_score_or_inf_and_the_rth_order_statistic(
    xs: list[float], alpha: float
) -> None:
    s = as_array(xs)
    res = conformal_threshold(s, alpha)
    assert res.rank == conformal_rank(len(xs), alpha)
    if res.insufficient:
        assert res.value == math.inf and res.rank > len(xs)
        return
    assert res.value in xs
    # r-th smallest: at least r scores are <= it and fewer than r are < it.
    assert int((s <= res.value).sum()) >= res.rank > int((s < res.value).sum())


@FAST
@given(score_lists, alphas)
def test_calibration_points_cover_at_least_r_over_n(xs: list[float], alpha: float) -> None:
    s = as_array(xs)
    res = conformal_threshold(s, alpha)
    if res.insufficient:
        assert (s <= res.value).all()
        return
    assert Fraction(int((s <= res.value).sum()), len(xs)) >= Fraction(res.rank, len(xs))


@FAST
@given(
    score_lists,
    st.lists(continuous, min_size=1, max_size=8),
    alphas,
    alphas,
)
def test_sets_are_nested_as_alpha_shrinks(
    cal: list[float], probs: list[float], a1: float, a2: float
) -> None:
    small, large = sorted((a1, a2))
    s = as_array(cal)
    p = as_array(probs)
    big_set = lac_prediction_set(p, lac_threshold(s, small))
    small_set = lac_prediction_set(p, lac_threshold(s, large))
    assert not (small_set & ~big_set).any()


@FAST
@given(st.lists(continuous, min_size=1, max_size=12), st.sampled_from([0.01, 0.05, 0.1, 0.3]))
def test_infinite_threshold_gives_the_full_set(probs: list[float], alpha: float) -> None:
    n = min_calibration_size(alpha) - 1  # one case too few
    tau = lac_threshold(np.linspace(0.0, 1.0, n), alpha)
    assert tau == math.inf
    assert lac_prediction_set(as_array(probs), tau).all()


@FAST
@given(
    st.integers(1, 30),
    st.integers(1, 6),
    score_lists.filter(lambda xs: len(xs) > 0),
    alphas,
    st.integers(0, 2**32 - 1),
)
def test_batch_equals_one_at_a_time(
    m: int, k: int, cal: list[float], alpha: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=m)
    tau = lac_threshold(as_array(cal), alpha)
    batch = lac_prediction_set(probs, tau)
    assert batch.shape == probs.shape
    for i in range(m):
        np.testing.assert_array_equal(batch[i], lac_prediction_set(probs[i], tau))
    scores = 1.0 - probs
    u = rng.random((m, 1))
    pv = conformal_p_values(as_array(cal), scores, u)
    assert pv.shape == scores.shape
    for i in range(m):
        np.testing.assert_array_equal(pv[i], conformal_p_values(as_array(cal), scores[i], u[i]))


@FAST
@given(score_lists, st.lists(st.one_of(continuous, gridded), min_size=1, max_size=10), alphas)
# Boundaries where alpha (n + 1) is an integer and a test score sits between two
# calibration scores: the p-value equals alpha exactly, so the label must be out.
@example(cal=[i / 19 for i in range(19)], test=[17.5 / 19, 17 / 19, 18 / 19], alpha=0.1)
@example(cal=[i / 149 for i in range(149)], test=[122.5 / 149, 122 / 149], alpha=0.18)
def test_non_randomised_p_value_set_equals_threshold_set(
    cal: list[float], test: list[float], alpha: float
) -> None:
    # With u = 1 the p-value set {p > alpha} is exactly {s <= r-th smallest}, ties and
    # float-trap alphas included.
    s = as_array(cal)
    t = as_array(test)
    expected = prediction_set(t, lac_threshold(s, alpha))
    np.testing.assert_array_equal(p_value_prediction_set(s, t, alpha, None), expected)


@FAST
@given(score_lists, st.lists(continuous, min_size=1, max_size=10), alphas, st.integers(0, 99))
def test_randomised_p_value_set_contains_no_more_than_non_randomised(
    cal: list[float], test: list[float], alpha: float, seed: int
) -> None:
    s, t = as_array(cal), as_array(test)
    plain = p_value_prediction_set(s, t, alpha, None)
    rand = p_value_prediction_set(s, t, alpha, np.random.default_rng(seed))
    assert not (rand & ~plain).any()
    p = conformal_p_values(s, t, np.random.default_rng(seed))
    assert ((p > 0) & (p <= 1)).all()


@FAST
@given(
    st.lists(st.tuples(st.sampled_from("abcde"), continuous), min_size=0, max_size=80),
    st.sampled_from([0.05, 0.1, 0.2, 0.3]),
    st.one_of(st.none(), st.integers(0, 40)),
)
def test_mondrian_fallback_rules(
    rows: list[tuple[str, float]], alpha: float, min_n: int | None
) -> None:
    groups = np.array([g for g, _ in rows], dtype=str)
    s = as_array([x for _, x in rows])
    cal = mondrian_calibration(s, groups, alpha, min_n=min_n)
    pooled = conformal_threshold(s, alpha)
    assert cal.pooled == pooled
    need = min_calibration_size(alpha) if min_n is None else min_n
    assert set(cal.groups) == set(groups.tolist())
    for key, entry in cal.groups.items():
        own = conformal_threshold(s[groups == key], alpha)
        assert entry.own == own
        if own.n < need or own.insufficient:
            assert entry.fallback and entry.reason is not None
            assert entry.value == pooled.value
        else:
            assert not entry.fallback and entry.reason is None
            assert entry.value == own.value
    unseen = cal.lookup("zzz")
    assert unseen.fallback and unseen.value == pooled.value
    np.testing.assert_array_equal(
        cal.thresholds_for(groups), [cal.groups[g].value for g in groups.tolist()]
    )


def test_mondrian_min_n_boundary() -> None:
    # Group "a" has exactly min_n cases (own threshold), "b" one fewer (pooled fallback).
    rng = np.random.default_rng(6)
    s = rng.random(39)
    groups = np.array(["a"] * 20 + ["b"] * 19)
    cal = mondrian_calibration(s, groups, 0.1, min_n=20)
    assert not cal.groups["a"].fallback
    assert cal.groups["a"].value == lac_threshold(s[:20], 0.1)
    assert cal.groups["b"].fallback
    assert cal.groups["b"].value == lac_threshold(s, 0.1)
    assert cal.groups["b"].own.value == lac_threshold(s[20:], 0.1)  # finite, yet not used
