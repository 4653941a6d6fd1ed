"""Statistical validity: binomial coverage, p-value uniformity, ties, anytime stopping.

Every simulation is seeded and runs in well under a second; each also checks that it
would notice the failure it guards against (the wrong rank, non-randomised p-values
under ties, per-step thresholds at a data-dependent stop).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from app.conformal import (
    PerStepCalibration,
    conformal_p_values,
    conformal_rank,
    evaluate_at_stop,
    lac_prediction_set,
    lac_threshold,
    p_value_prediction_set,
    singleton_stop_steps,
    true_label_scores,
)


def cp_interval(hits: int, trials: int) -> tuple[float, float]:
    ci = stats.binomtest(hits, trials).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


@pytest.mark.parametrize(
    ("n", "alpha", "trials", "check_power"),
    [(19, 0.1, 10_000, True), (39, 0.05, 6_000, True), (149, 0.18, 3_000, False)],
)
def test_binomial_validity_of_lac_threshold(
    n: int, alpha: float, trials: int, check_power: bool
) -> None:
    # Each trial: a fresh calibration set of n continuous scores and one test score, all
    # i.i.d. The test score is covered iff its rank among n + 1 is <= r, so the hit count is
    # exactly Binomial(trials, r / (n + 1)).
    rng = np.random.default_rng(1000 + n)
    data = rng.random((trials, n + 1))
    hits = sum(bool(data[i, n] <= lac_threshold(data[i, :n], alpha)) for i in range(trials))
    r = conformal_rank(n, alpha)
    low, high = cp_interval(hits, trials)
    assert low <= r / (n + 1) <= high
    assert Fraction(r, n + 1) >= 1 - Fraction(str(alpha))  # exact: 123/150 == 0.82
    if check_power:
        # The same data rules out an off-by-one rank in either direction.
        assert not low <= (r + 1) / (n + 1) <= high
        assert not low <= (r - 1) / (n + 1) <= high


def true_label_p_values(
    cal: npt.NDArray[np.float64], test: npt.NDArray[np.float64], randomised: bool, seed: int
) -> npt.NDArray[np.float64]:
    """One p-value per trial: fresh calibration row i, test score test[i]."""
    rng = np.random.default_rng(seed)
    return np.array(
        [
            float(conformal_p_values(cal[i], test[i : i + 1], rng if randomised else None)[0])
            for i in range(cal.shape[0])
        ]
    )


def test_randomised_p_values_are_uniform_continuous_scores() -> None:
    # True-label LAC scores of a simulated 5-class model: continuous, exchangeable rows.
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(5), size=(3_000, 30))
    labels = np.minimum((rng.random((3_000, 30))[..., None] > np.cumsum(probs, -1)).sum(-1), 4)
    data = 1.0 - np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    p = true_label_p_values(data[:, :29], data[:, 29], randomised=True, seed=8)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    # The same check rejects when calibration is not exchangeable with the test point
    # (calibration scores from a model that is more confident on its true labels).
    p_shift = true_label_p_values(data[:, :29] ** 1.5, data[:, 29], randomised=True, seed=8)
    assert stats.kstest(p_shift, "uniform").pvalue < 0.01


def test_randomised_p_values_are_uniform_under_ties() -> None:
    rng = np.random.default_rng(9)
    data = rng.integers(0, 11, size=(3_000, 30)) / 10  # scores on a 0.1 grid: many ties
    p = true_label_p_values(data[:, :29], data[:, 29], randomised=True, seed=10)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    # Without randomisation the p-values are discrete and the same test rejects.
    p_plain = true_label_p_values(data[:, :29], data[:, 29], randomised=False, seed=10)
    assert stats.kstest(p_plain, "uniform").pvalue < 0.01


def frequency_cases(
    rng: np.random.Generator, shape: tuple[int, ...], k: int = 4, draws: int = 10
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Probabilities that are frequencies (multiples of 1/draws) and true labels."""
    q = rng.dirichlet(np.full(k, 0.7), size=shape)
    labels = np.minimum((rng.random(shape)[..., None] > np.cumsum(q, axis=-1)).sum(-1), k - 1)
    probs = rng.multinomial(draws, q) / draws
    return probs, labels.astype(np.intp)


def test_ties_randomised_p_values_exact_lac_over_covers() -> None:
    # n = 19, alpha = 0.1: (n + 1)(1 - alpha) = 18 is an integer, so without ties LAC
    # would cover exactly 0.9. With frequency-valued probabilities LAC covers more, and the
    # randomised p-value set covers exactly 1 - alpha.
    n, alpha, trials = 19, 0.1, 5_000
    rng = np.random.default_rng(11)
    probs, labels = frequency_cases(rng, (trials, n + 1))
    rows = np.arange(n)
    lac_hits = 0
    pv_hits = 0
    for i in range(trials):
        cal = 1.0 - probs[i, rows, labels[i, :n]]
        tau = lac_threshold(cal, alpha)
        lac_hits += bool(lac_prediction_set(probs[i, n], tau)[labels[i, n]])
        in_set = p_value_prediction_set(cal, 1.0 - probs[i, n], alpha, rng)
        pv_hits += bool(in_set[labels[i, n]])
    low, high = cp_interval(pv_hits, trials)
    assert low <= 1 - alpha <= high
    lac_low, _ = cp_interval(lac_hits, trials)
    assert lac_low > 1 - alpha, "LAC should over-cover significantly under ties"


def interview_scores(
    rng: np.random.Generator, m: int, steps: int, k: int = 5, signal: float = 1.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """LAC scores (steps, m, k) of a noisy posterior redrawn at every step, and labels."""
    labels = rng.integers(0, k, size=m)
    logits = signal * np.eye(k)[labels][None] + rng.normal(size=(steps, m, k))
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    return 1.0 - p, labels


def coverage_at_singleton_stop(anytime: bool, seed: int) -> tuple[int, int, PerStepCalibration]:
    t_max, alpha, n_cal, m_test, reps = 9, 0.1, 1_000, 2_000, 6
    rng = np.random.default_rng(seed)
    hits = total = 0
    cal = None
    for _ in range(reps):
        scores, labels = interview_scores(rng, n_cal, t_max + 1)
        cal = PerStepCalibration.from_scores(
            [true_label_scores(s, labels) for s in scores], alpha, anytime=anytime
        )
        test_scores, test_labels = interview_scores(rng, m_test, t_max + 1)
        sets = cal.prediction_sets(test_scores)
        stop = singleton_stop_steps(sets)
        report = evaluate_at_stop(sets, test_labels, stop, alpha=alpha)
        hits += report.coverage.covered
        total += report.n
    assert cal is not None
    return hits, total, cal


def test_anytime_covers_at_data_dependent_stop() -> None:
    hits, total, cal = coverage_at_singleton_stop(anytime=True, seed=12)
    assert cal.step_alpha == Fraction(1, 100)  # 0.1 / (T + 1), T = 9
    assert all(s.threshold.rank == conformal_rank(1_000, Fraction(1, 100)) for s in cal.steps)
    _, high = cp_interval(hits, total)
    assert high >= 0.9


def test_per_step_thresholds_do_not_cover_at_data_dependent_stop() -> None:
    # The same simulation detects the failure that anytime mode prevents.
    hits, total, _ = coverage_at_singleton_stop(anytime=False, seed=12)
    _, high = cp_interval(hits, total)
    assert high < 0.9
