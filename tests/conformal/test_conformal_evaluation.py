"""Evaluation report: Clopper-Pearson intervals and rates on hand-made examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from app.conformal import (
    clopper_pearson,
    conformal_threshold,
    evaluate_at_stop,
    evaluate_per_step,
    evaluate_sets,
    from_scores,
    singleton_stop_steps,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (897, 1000), (1, 1), (49, 50)])
def test_clopper_pearson_matches_scipy(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = clopper_pearson(k, n)
    assert low == pytest.approx(ci.low, abs=1e-12)
    assert high == pytest.approx(ci.high, abs=1e-12)
    ci90 = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
    assert clopper_pearson(k, n, 0.9) == pytest.approx((ci90.low, ci90.high), abs=1e-12)


# Five cases, four labels. Row i is case i's set; LABELS[i] its true label.
SETS = [
    [1, 1, 0, 0],  # size 2, label 0 in -> covered
    [0, 1, 0, 0],  # size 1, label 0 out -> not covered
    [0, 0, 0, 0],  # size 0 -> not covered
    [1, 1, 1, 1],  # size 4 -> covered
    [0, 0, 1, 0],  # size 1, label 2 in -> covered
]
LABELS = [0, 0, 1, 3, 2]


def test_rates_on_a_hand_made_example() -> None:
    report = evaluate_sets(np.array(SETS, dtype=bool), np.array(LABELS))
    sizes = [sum(row) for row in SETS]  # 2, 1, 0, 4, 1
    hits = [row[y] == 1 for row, y in zip(SETS, LABELS, strict=True)]
    assert report.n == 5
    assert report.coverage.covered == sum(hits) == 3
    assert report.coverage.coverage == 3 / 5
    assert report.mean_size == sum(sizes) / 5 == 8 / 5
    assert report.median_size == sorted(sizes)[2] == 1
    assert report.singleton_rate == sizes.count(1) / 5 == 2 / 5
    assert report.empty_rate == sizes.count(0) / 5 == 1 / 5
    # Stratified by size: size 1 holds cases 1 (miss) and 4 (hit).
    by_size = {k: (v.covered, v.n) for k, v in report.coverage_by_size.items()}
    assert by_size == {0: (0, 1), 1: (1, 2), 2: (1, 1), 4: (1, 1)}
    assert (report.coverage.ci_low, report.coverage.ci_high) == clopper_pearson(3, 5)
    assert report.band is None and report.band_consistent is None


def test_per_group_report() -> None:
    groups = np.array(["x", "y", "x", "y", "x"])
    report = evaluate_sets(np.array(SETS, dtype=bool), np.array(LABELS), groups=groups)
    x, y = report.per_group["x"], report.per_group["y"]
    # x = cases 0, 2, 4: hits 1, 0, 1; sizes 2, 0, 1.  y = cases 1, 3: hits 0, 1; sizes 1, 4.
    assert (x.coverage.covered, x.n, x.mean_size, x.empty_rate) == (2, 3, 1.0, 1 / 3)
    assert (y.coverage.covered, y.n, y.median_size, y.singleton_rate) == (1, 2, 2.5, 0.5)


def test_band_and_target_from_the_threshold() -> None:
    threshold = conformal_threshold(np.arange(19.0), 0.1)  # n = 19, r = 18
    report = evaluate_sets(np.array(SETS, dtype=bool), np.array(LABELS), threshold=threshold)
    assert report.band == pytest.approx((0.9, 0.9 + 1 / 20))
    assert report.target_coverage == 18 / 20
    assert report.alpha == 0.1 and report.n_cal == 19
    # Observed 3/5 has a CP interval (0.147, 0.947) that meets the band.
    assert report.band_consistent
    json.dumps(report.to_dict(), allow_nan=False)


def test_per_step_report_skips_empty_steps_and_uses_step_alpha() -> None:
    rng = np.random.default_rng(0)
    cal = from_scores([rng.random(99), rng.random(99), rng.random(99)], 0.1, anytime=True)
    sets = [np.array(SETS, dtype=bool), np.zeros((0, 4), dtype=bool), np.array(SETS, dtype=bool)]
    labels = [np.array(LABELS), np.array([], dtype=int), np.array(LABELS)]
    report = evaluate_per_step(sets, labels, cal)
    assert [s.step for s in report.steps] == [0, 2]
    # Anytime: each step is calibrated at 0.1 / 3, n = 99.
    assert report.steps[0].band == pytest.approx((1 - 0.1 / 3, 1 - 0.1 / 3 + 1 / 100))
    json.dumps(report.to_dict(), allow_nan=False)


def test_stop_steps_and_coverage_at_stop() -> None:
    # Two steps, three cases, two labels.
    sets = np.array(
        [
            [[1, 1], [1, 0], [1, 1]],  # step 0: sizes 2, 1, 2
            [[0, 1], [1, 1], [1, 1]],  # step 1: sizes 1, 2, 2
        ],
        dtype=bool,
    )
    stop = singleton_stop_steps(sets)
    # Case 0 first singleton at step 1, case 1 at step 0, case 2 never -> last step (1).
    np.testing.assert_array_equal(stop, [1, 0, 1])
    report = evaluate_at_stop(sets, np.array([0, 0, 1]), stop, alpha=0.1)
    # Case 0: set {1} at step 1, label 0 -> miss; case 1: {0} -> hit; case 2: {0, 1} -> hit.
    assert report.coverage.covered == 2 and report.band == (0.9, 1.0)
    assert report.singleton_rate == 2 / 3


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        evaluate_sets(np.zeros((0, 3), dtype=bool), np.array([], dtype=int))
    with pytest.raises(ValueError):
        evaluate_sets(np.zeros((2, 3), dtype=bool), np.array([0, 3]))
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
