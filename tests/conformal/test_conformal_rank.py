"""Exact finite-sample rank and threshold: boundaries, float traps, insufficiency."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from app.conformal import (
    ThresholdResult,
    conformal_rank,
    conformal_threshold,
    exact_alpha,
    lac_threshold,
    min_calibration_size,
)
from app.conformal.rank import per_step_alpha


def integer_rank(n: int, num: int, den: int) -> int:
    """ceil((n + 1)(1 - num/den)) in pure integer arithmetic, independent of Fraction."""
    return -(-(n + 1) * (den - num) // den)


def float_rank(n: int, alpha: float) -> int:
    """The naive float formula that published code uses."""
    return math.ceil((n + 1) * (1 - alpha))


# alpha given as (num, den) so the expected rank never touches floats.
ALPHAS = [(1, 10), (1, 20), (1, 100), (1, 5), (1, 4), (1, 50)]


@pytest.mark.parametrize(("num", "den"), ALPHAS)
def test_rank_around_one_over_alpha(num: int, den: int) -> None:
    inv = den // num  # 1/alpha, an integer for these alphas
    alpha = num / den
    # n = 1/alpha - 2: r = 1/alpha - 1 > n, so the threshold must be infinite.
    n = inv - 2
    assert conformal_rank(n, alpha) == integer_rank(n, num, den) == inv - 1
    res = conformal_threshold(np.linspace(0, 1, n), alpha)
    assert res.insufficient and res.value == math.inf and res.rank == n + 1
    # n = 1/alpha - 1: the smallest finite case, r = n (the largest score).
    n = inv - 1
    assert conformal_rank(n, alpha) == integer_rank(n, num, den) == n
    scores = np.random.default_rng(n).permutation(np.arange(n, dtype=float))
    assert lac_threshold(scores, alpha) == n - 1
    # n = 1/alpha: still r = n.
    n = inv
    assert conformal_rank(n, alpha) == integer_rank(n, num, den) == n
    assert min_calibration_size(alpha) == inv - 1


def test_min_calibration_sizes_from_the_method_doc() -> None:
    assert [min_calibration_size(a) for a in (0.1, 0.05, 0.01)] == [9, 19, 99]


def test_float_trap_n149_alpha018() -> None:
    # (149 + 1)(1 - 0.18) = 123 exactly, but in floats 1 - 0.18 = 0.8200000000000001.
    assert float_rank(149, 0.18) == 124, "the naive float ceil should be off by one here"
    assert integer_rank(149, 18, 100) == 123
    assert conformal_rank(149, 0.18) == 123
    scores = np.random.default_rng(0).permutation(149).astype(float)  # i-th smallest is i - 1
    assert lac_threshold(scores, 0.18) == 122.0


def find_float_traps(max_n: int) -> list[tuple[int, int]]:
    """All (n, k) with n <= max_n, alpha = k/100 where the float ceil disagrees."""
    return [
        (n, k)
        for k in range(1, 100)
        for n in range(1, max_n + 1)
        if float_rank(n, k / 100) != integer_rank(n, k, 100)
    ]


def test_trap_search_and_exact_rank_everywhere() -> None:
    traps = find_float_traps(400)
    # The search must find the documented trap and more of them.
    assert (149, 18) in traps
    assert {(249, 18), (299, 19), (99, 41), (49, 42)} <= set(traps)
    for n, k in traps:
        assert conformal_rank(n, k / 100) == integer_rank(n, k, 100)
    # And no disagreement anywhere on the grid, trap or not.
    for k in range(1, 100, 7):
        for n in range(0, 400, 3):
            assert conformal_rank(n, k / 100) == integer_rank(n, k, 100)


def test_np_quantile_higher_pitfall_is_avoided() -> None:
    # np.quantile(s, r/n, "higher") returns the (r+1)-th smallest for n=100, alpha=0.1.
    n, alpha = 100, 0.1
    scores = np.arange(n, dtype=float)
    r = conformal_rank(n, alpha)
    assert r == 91
    assert float(np.quantile(scores, r / n, method="higher")) == r  # value r = rank r + 1
    assert lac_threshold(scores, alpha) == r - 1  # value r - 1 = rank r


def test_exact_alpha_reads_the_decimal_repr() -> None:
    assert exact_alpha(0.18) == Fraction(18, 100)
    assert exact_alpha(0.1) != Fraction(0.1)  # not the binary double
    assert exact_alpha("1/30") == Fraction(1, 30)
    assert exact_alpha(Fraction(1, 30)) == Fraction(1, 30)
    for bad in (0.0, 1.0, -0.1, math.nan, math.inf, 1.5):
        with pytest.raises(ValueError):
            exact_alpha(bad)


def test_rank_refuses_bad_n() -> None:
    with pytest.raises(ValueError):
        conformal_rank(-1, 0.1)
    with pytest.raises(TypeError):
        conformal_rank(2.0, 0.1)  # type: ignore[arg-type]


def test_threshold_result_fields_and_reason() -> None:
    res = conformal_threshold(np.arange(5.0), 0.1)
    assert res == ThresholdResult(math.inf, 6, 5, 0.1, True, Fraction(1, 10))
    assert res.reason is not None and "need n >= 9" in res.reason
    assert res.target_coverage == 1.0
    ok = conformal_threshold(np.arange(19.0)[::-1], 0.1)
    assert (ok.value, ok.rank, ok.insufficient, ok.reason) == (17.0, 18, False, None)
    assert ok.target_coverage == 18 / 20


def test_empty_calibration_is_insufficient_not_an_error() -> None:
    res = conformal_threshold(np.empty(0), 0.1)
    assert res.insufficient and res.n == 0 and res.value == math.inf


def test_threshold_refuses_nan_and_2d() -> None:
    with pytest.raises(ValueError):
        lac_threshold(np.array([0.1, math.nan]), 0.1)
    with pytest.raises(ValueError):
        lac_threshold(np.zeros((2, 2)), 0.1)


def test_threshold_with_ties_is_the_rth_order_statistic() -> None:
    scores = np.array([0.3, 0.1, 0.3, 0.3, 0.2, 0.9, 0.1, 0.3, 0.5, 0.3])
    # n = 10, alpha = 0.2: r = ceil(11 * 0.8) = ceil(8.8) = 9 -> sorted[8]
    assert lac_threshold(scores, 0.2) == sorted(scores.tolist())[8] == 0.5


def test_per_step_alpha_is_alpha_or_its_union_bound_share() -> None:
    assert per_step_alpha(0.1, steps=3, anytime=False) == Fraction(1, 10)
    assert per_step_alpha(0.1, steps=3, anytime=True) == Fraction(1, 30)
    assert per_step_alpha("0.05", steps=1, anytime=True) == Fraction(1, 20)
    # The smallest calibration that gives a finite threshold grows with the share.
    assert min_calibration_size(per_step_alpha(0.1, steps=2, anytime=True)) == 19
    with pytest.raises(ValueError, match="steps"):
        per_step_alpha(0.1, steps=0, anytime=True)
