"""Evaluation of prediction sets: coverage with Clopper-Pearson intervals, set sizes.

Reports are frozen dataclasses with ``to_dict`` (strict-JSON safe). The theoretical band
for split conformal is ``[1 - alpha, 1 - alpha + 1/(n_cal + 1)]`` (upper end capped at
1; it assumes no ties) with the exact no-tie target ``r / (n_cal + 1)``; it is about the
average over calibration sets, so one calibration set's realised coverage may miss it by
about sqrt(alpha (1 - alpha) / n_cal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.conformal.calibration import PerStepCalibration
from app.conformal.rank import ThresholdResult

__all__ = [
    "CoverageStats",
    "PerStepReport",
    "SetReport",
    "clopper_pearson",
    "evaluate_at_stop",
    "evaluate_per_step",
    "evaluate_sets",
    "singleton_stop_steps",
]


def clopper_pearson(covered: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval for a binomial proportion covered / n."""
    if n < 1 or not 0 <= covered <= n:
        raise ValueError(f"need 0 <= covered <= n and n >= 1, got {covered}/{n}")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie in (0, 1)")
    # Imported here: scipy costs seconds to import and the serving path never needs it.
    from scipy.special import betaincinv

    tail = (1 - confidence) / 2
    # Beta quantiles: the lower end is Beta(k, n-k+1) at tail, the upper Beta(k+1, n-k).
    low = 0.0 if covered == 0 else float(betaincinv(covered, n - covered + 1, tail))
    high = 1.0 if covered == n else float(betaincinv(covered + 1, n - covered, 1 - tail))
    return low, high


@dataclass(frozen=True, slots=True)
class CoverageStats:
    """Empirical coverage covered / n with its Clopper-Pearson interval."""

    n: int
    covered: int
    coverage: float
    ci_low: float
    ci_high: float
    confidence: float

    @classmethod
    def from_counts(cls, covered: int, n: int, confidence: float = 0.95) -> CoverageStats:
        """Build from counts."""
        low, high = clopper_pearson(covered, n, confidence)
        return cls(n, covered, covered / n, low, high, confidence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "n": self.n,
            "covered": self.covered,
            "coverage": self.coverage,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
        }


@dataclass(frozen=True, slots=True)
class SetReport:
    """Coverage and set-size summary of one batch of prediction sets."""

    n: int
    coverage: CoverageStats
    mean_size: float
    median_size: float
    singleton_rate: float
    empty_rate: float
    coverage_by_size: dict[int, CoverageStats]
    alpha: float | None = None
    n_cal: int | None = None
    band: tuple[float, float] | None = None
    target_coverage: float | None = None
    step: int | None = None
    per_group: dict[str, SetReport] = field(default_factory=dict)

    @property
    def band_consistent(self) -> bool | None:
        """Whether the coverage interval meets the theoretical band (None without a band)."""
        if self.band is None:
            return None
        return self.coverage.ci_high >= self.band[0] and self.coverage.ci_low <= self.band[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; set sizes become string keys."""
        return {
            "step": self.step,
            "n": self.n,
            "alpha": self.alpha,
            "n_cal": self.n_cal,
            "coverage": self.coverage.to_dict(),
            "band": None if self.band is None else list(self.band),
            "target_coverage": self.target_coverage,
            "band_consistent": self.band_consistent,
            "mean_size": self.mean_size,
            "median_size": self.median_size,
            "singleton_rate": self.singleton_rate,
            "empty_rate": self.empty_rate,
            "coverage_by_size": {str(k): v.to_dict() for k, v in self.coverage_by_size.items()},
            "per_group": {k: v.to_dict() for k, v in self.per_group.items()},
        }


@dataclass(frozen=True, slots=True)
class PerStepReport:
    """One SetReport per evaluated step, plus an optional report at the stopping step."""

    steps: tuple[SetReport, ...]
    at_stop: SetReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "steps": [s.to_dict() for s in self.steps],
            "at_stop": None if self.at_stop is None else self.at_stop.to_dict(),
        }


def _band(threshold: ThresholdResult) -> tuple[tuple[float, float], float]:
    lower = 1.0 - float(threshold.alpha_exact)
    upper = min(1.0, float(1 - threshold.alpha_exact + 1 / (threshold.n + 1)))
    return (lower, upper), threshold.target_coverage


def evaluate_sets(
    sets: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    threshold: ThresholdResult | None = None,
    alpha: float | None = None,
    groups: npt.ArrayLike | None = None,
    group_thresholds: Mapping[str, ThresholdResult] | None = None,
    confidence: float = 0.95,
    step: int | None = None,
) -> SetReport:
    """Summarise boolean sets (m, K) against true labels (m,).

    ``threshold`` (the calibration result the sets came from) adds alpha, n_cal, the
    theoretical band and the no-tie target r / (n_cal + 1); ``alpha`` alone adds only the
    nominal level. ``groups`` (m,) adds a report per group (keys as ``str``), with bands
    from ``group_thresholds`` where given.
    """
    s = np.asarray(sets, dtype=np.bool_)
    y = np.asarray(labels, dtype=np.intp)
    if s.ndim != 2 or y.shape != s.shape[:1]:
        raise ValueError(f"need sets (m, K) and labels (m,), got {s.shape} and {y.shape}")
    m = int(s.shape[0])
    if m == 0:
        raise ValueError("no cases to evaluate")
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError("label index out of range")
    hit = s[np.arange(m), y]
    sizes = s.sum(axis=1)
    covered = int(hit.sum())
    size_counts = np.bincount(sizes, minlength=s.shape[1] + 1)
    size_hits = np.bincount(sizes, weights=hit, minlength=s.shape[1] + 1)
    by_size = {
        int(k): CoverageStats.from_counts(int(size_hits[k]), int(size_counts[k]), confidence)
        for k in np.flatnonzero(size_counts)
    }
    band: tuple[float, float] | None = None
    target: float | None = None
    n_cal: int | None = None
    if threshold is not None:
        band, target = _band(threshold)
        alpha = threshold.alpha
        n_cal = threshold.n

    per_group: dict[str, SetReport] = {}
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (m,):
            raise ValueError(f"groups must have shape ({m},), got {g.shape}")
        uniq, inv = np.unique(g, return_inverse=True)
        for j, key in enumerate(uniq.tolist()):
            mask = inv == j
            gt = None if group_thresholds is None else group_thresholds.get(str(key))
            per_group[str(key)] = evaluate_sets(
                s[mask],
                y[mask],
                threshold=gt,
                alpha=alpha if gt is None else None,
                confidence=confidence,
                step=step,
            )
    return SetReport(
        n=m,
        coverage=CoverageStats.from_counts(covered, m, confidence),
        mean_size=float(sizes.mean()),
        median_size=float(np.median(sizes)),
        singleton_rate=float(np.mean(sizes == 1)),
        empty_rate=float(np.mean(sizes == 0)),
        coverage_by_size=by_size,
        alpha=alpha,
        n_cal=n_cal,
        band=band,
        target_coverage=target,
        step=step,
        per_group=per_group,
    )


def _group_thresholds(calibration: PerStepCalibration, k: int) -> dict[str, ThresholdResult] | None:
    groups = calibration.step(k).groups
    if groups is None:
        return None
    # Only groups with their own threshold have a group-conditional band.
    return {key: g.own for key, g in groups.groups.items() if not g.fallback}


def evaluate_per_step(
    sets_per_step: Sequence[npt.ArrayLike],
    labels_per_step: Sequence[npt.ArrayLike],
    calibration: PerStepCalibration | None = None,
    *,
    groups_per_step: Sequence[npt.ArrayLike] | None = None,
    confidence: float = 0.95,
) -> PerStepReport:
    """One report per step (cases may differ between steps); steps with no case are skipped."""
    if len(sets_per_step) != len(labels_per_step):
        raise ValueError("sets_per_step and labels_per_step differ in length")
    reports = []
    for k, (sets, labels) in enumerate(zip(sets_per_step, labels_per_step, strict=True)):
        if np.asarray(labels).size == 0:
            continue
        reports.append(
            evaluate_sets(
                sets,
                labels,
                threshold=None if calibration is None else calibration.step(k).threshold,
                groups=None if groups_per_step is None else groups_per_step[k],
                group_thresholds=None if calibration is None else _group_thresholds(calibration, k),
                confidence=confidence,
                step=k,
            )
        )
    return PerStepReport(tuple(reports))


def evaluate_at_stop(
    sets_per_step: npt.ArrayLike,
    labels: npt.ArrayLike,
    stop_steps: npt.ArrayLike,
    *,
    alpha: float | None = None,
    confidence: float = 0.95,
) -> SetReport:
    """Coverage of the set at each case's stopping step: sets (S, m, K), stop (m,).

    The band is ``[1 - alpha, 1]``: only anytime calibration guarantees the lower end.
    """
    s = np.asarray(sets_per_step, dtype=np.bool_)
    stop = np.asarray(stop_steps, dtype=np.intp)
    if s.ndim != 3 or stop.shape != (s.shape[1],):
        raise ValueError(f"need sets (S, m, K) and stop (m,), got {s.shape}, {stop.shape}")
    if stop.size and (stop.min() < 0 or stop.max() >= s.shape[0]):
        raise ValueError("stop step out of range")
    chosen = s[stop, np.arange(s.shape[1])]
    report = evaluate_sets(chosen, labels, alpha=alpha, confidence=confidence)
    if alpha is None:
        return report
    return SetReport(
        n=report.n,
        coverage=report.coverage,
        mean_size=report.mean_size,
        median_size=report.median_size,
        singleton_rate=report.singleton_rate,
        empty_rate=report.empty_rate,
        coverage_by_size=report.coverage_by_size,
        alpha=alpha,
        band=(1.0 - alpha, 1.0),
    )


def singleton_stop_steps(sets_per_step: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """First step whose set has exactly one label, else the last step: (S, m, K) -> (m,)."""
    s = np.asarray(sets_per_step, dtype=np.bool_)
    if s.ndim != 3:
        raise ValueError(f"need sets (S, m, K), got {s.shape}")
    single = s.sum(axis=2) == 1
    first = np.argmax(single, axis=0)
    return np.asarray(np.where(single.any(axis=0), first, s.shape[0] - 1), dtype=np.intp)
