"""The paired GET benchmark's arithmetic: alternating phase order, and an interval that covers."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from benchmarks.load.get_bench import _rounds, ratio_summary


def test_rounds_alternate_which_side_goes_first() -> None:
    orders = [order for _, order in _rounds(["service", "bare"], 4)]
    assert orders == [["service", "bare"], ["bare", "service"]] * 2


def test_the_interval_of_paired_ratios_covers_the_true_ratio_95_percent_of_the_time() -> None:
    # Six rounds of log-normal noise around a true ratio of 1.2: the 95% interval must cover
    # 1.2 in 95% of seeded repetitions (a normal-quantile interval, too narrow at six
    # rounds, covers about 90% and fails this band).
    rng = np.random.default_rng(20261207)
    true, trials, hits = 1.2, 2000, 0
    for _ in range(trials):
        ratios = np.exp(rng.normal(math.log(true), 0.15, size=6)).tolist()
        low, high = ratio_summary(ratios)["ci95"]
        hits += low <= true <= high
    assert stats.binomtest(hits, trials, 0.95).pvalue > 0.001, hits


def test_the_summary_is_read_on_the_log_scale() -> None:
    summary = ratio_summary([1.0, 1.21, 1.1])
    assert summary["rounds"] == 3
    assert summary["median"] == 1.1
    assert math.isclose(summary["geometric_mean"], 1.1, abs_tol=1e-3)
    assert ratio_summary([1.3])["ci95"] is None
