"""Time conformal calibration, set construction and randomised p-values.

Size: 10,000 calibration and 10,000 test cases x 20 labels x 20 interview steps.
Run: ``.venv/bin/python benchmarks/conformal_bench.py [--repeats N]``; prints the median
wall time of N repeats per task.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from app.conformal import (
    PerStepCalibration,
    conformal_p_values,
    lac_scores,
    p_value_prediction_set,
    true_label_scores,
)

CASES, LABELS, STEPS, ALPHA = 10_000, 20, 20, 0.1


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_probs(rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Posteriors (steps, cases, labels) that sharpen with the step, and true labels."""
    labels = rng.integers(0, LABELS, size=CASES)
    signal = np.linspace(0.5, 4.0, STEPS)[:, None, None] * np.eye(LABELS)[labels][None]
    logits = signal + rng.normal(size=(STEPS, CASES, LABELS))
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cal_probs, cal_labels = make_probs(rng)
    test_probs, _ = make_probs(rng)
    cal_true = [true_label_scores(lac_scores(p), cal_labels) for p in cal_probs]

    def calibrate_and_build(anytime: bool) -> npt.NDArray[np.bool_]:
        cal = PerStepCalibration.from_scores(cal_true, ALPHA, anytime=anytime)
        return cal.prediction_sets(lac_scores(test_probs))

    def p_values() -> list[npt.NDArray[np.float64]]:
        test_scores = lac_scores(test_probs)
        return [conformal_p_values(cal_true[k], test_scores[k], rng) for k in range(STEPS)]

    def p_value_sets() -> list[npt.NDArray[np.bool_]]:
        test_scores = lac_scores(test_probs)
        return [
            p_value_prediction_set(cal_true[k], test_scores[k], ALPHA, rng) for k in range(STEPS)
        ]

    def calibrate_only() -> PerStepCalibration:
        return PerStepCalibration.from_scores(cal_true, ALPHA)

    size = f"{CASES:,} cases x {LABELS} labels x {STEPS} steps (calibration n={CASES:,}/step)"
    print(f"conformal benchmark: {size}, median of {args.repeats}")
    rows = [
        ("calibrate (thresholds only)", calibrate_only),
        ("calibrate + sets, per step", lambda: calibrate_and_build(False)),
        ("calibrate + sets, anytime", lambda: calibrate_and_build(True)),
        ("randomised p-values", p_values),
        ("randomised p-value sets", p_value_sets),
    ]
    for name, fn in rows:
        print(f"  {name:<30} {median_seconds(fn, args.repeats) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
