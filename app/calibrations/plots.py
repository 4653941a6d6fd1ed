"""Per-step plots of a calibration run (PNG, matplotlib's Agg canvas, no pyplot state).

A run stores, per step k, the threshold tau_k, the number of calibration cases n_k and their
true-label scores s = 1 - p(true label | history). It stores no held-out coverage and no
per-case posteriors over every label, so the plots show what those numbers imply:

- coverage: the share of the step's calibration scores at or below tau_k (the in-sample
  coverage of the threshold), against the target 1 - alpha_k and the exact-conformal band
  [1 - alpha_k, 1 - alpha_k + 1/(n_k + 1)] that the marginal coverage of a new case lies in;
- set size: the largest set the threshold allows. A label is in the set when
  p >= 1 - tau_k, and probabilities sum to 1, so at most floor(1 / (1 - tau_k)) labels are,
  and never more than the K candidates of the interview (when the caller says K); an
  infinite threshold (too few cases), or a bound of K or more, means every candidate;
- the true-label probability of the calibration cases per step with the inclusion floor
  1 - tau_k, i.e. the data the threshold was read from.
"""

from __future__ import annotations

import asyncio
import io
import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.calibrations.repository import CalibrationRepository
from app.errors import ConflictError, NotFoundError

__all__ = ["StepSummary", "calibration_plot_png", "render_plot", "step_summaries"]


@dataclass(frozen=True)
class StepSummary:
    """What one step of a stored calibration says."""

    step: int
    n: int
    threshold: float | None  # None: +inf (too few cases: the set is every candidate)
    target: float  # 1 - alpha_k
    coverage: float | None  # share of the step's calibration scores <= threshold
    max_set_size: int | None  # None: every candidate
    true_label_probabilities: tuple[float, ...]

    @property
    def band_high(self) -> float:
        """Upper end of the exact conformal coverage band (ties aside)."""
        return min(1.0, self.target + 1 / (self.n + 1))


def _max_set_size(threshold: float | None, candidates: int | None) -> int | None:
    if threshold is None or threshold >= 1:
        return None
    # k labels each with p >= 1 - tau sum to at most 1; the epsilon absorbs float rounding.
    bound = max(1, math.floor(1 / (1 - threshold) + 1e-9))
    return None if candidates is not None and bound >= candidates else bound


def step_summaries(result: dict[str, Any], *, candidates: int | None = None) -> list[StepSummary]:
    """Per-step summaries of a stored ``Calibration.result`` (set sizes for ``candidates``
    labels when given)."""
    thresholds: list[float | None] = list(result["thresholds"])
    n_per_step: list[int] = list(result["n_per_step"])
    scores: list[list[float]] = list(result.get("scores") or [])
    target = 1 - float(result.get("step_alpha", result["alpha"]))
    out = []
    for k, tau in enumerate(thresholds):
        s = np.asarray(scores[k], dtype=np.float64) if k < len(scores) else np.empty(0)
        coverage = None
        if s.size:
            coverage = 1.0 if tau is None else float(np.mean(s <= tau))
        out.append(
            StepSummary(
                step=k,
                n=n_per_step[k] if k < len(n_per_step) else int(s.size),
                threshold=None if tau is None else float(tau),
                target=target,
                coverage=coverage,
                max_set_size=_max_set_size(tau, candidates),
                true_label_probabilities=tuple(float(x) for x in 1 - s),
            )
        )
    return out


def render_plot(result: dict[str, Any], *, title: str, candidates: int | None = None) -> bytes:
    """The three per-step panels as a PNG (set sizes for ``candidates`` labels when given)."""
    steps = step_summaries(result, candidates=candidates)
    ks = [s.step for s in steps]
    fig = Figure(figsize=(12, 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    cov_ax, size_ax, prob_ax = fig.subplots(1, 3)
    fig.suptitle(title, fontsize=10)
    ticks = [f"{s.step}\nn={s.n}" for s in steps]

    cov_ax.fill_between(
        ks,
        [s.target for s in steps],
        [s.band_high for s in steps],
        step="mid",
        alpha=0.2,
        color="tab:blue",
        label="exact band for a new case",
    )
    cov_ax.axhline(steps[0].target if steps else 0.9, ls="--", color="tab:blue", lw=1)
    covered = [(s.step, s.coverage) for s in steps if s.coverage is not None]
    if covered:
        cov_ax.plot(*zip(*covered, strict=True), "o-", color="black", label="calibration scores")
    cov_ax.set_ylim(max(0.0, min([0.5, *(c for _, c in covered)]) - 0.05), 1.02)
    cov_ax.set_title("Coverage at the threshold", fontsize=10)
    cov_ax.set_ylabel("share covered")
    cov_ax.legend(fontsize=7, loc="lower right")

    finite = [s.max_set_size for s in steps if s.max_set_size is not None]
    cap = max([*finite, 1]) + 1
    heights = [s.max_set_size if s.max_set_size is not None else cap for s in steps]
    colors = ["tab:gray" if s.max_set_size is None else "tab:orange" for s in steps]
    size_ax.bar(ks, heights, color=colors)
    for s, h in zip(steps, heights, strict=True):
        size_ax.text(
            s.step,
            h,
            "all" if s.max_set_size is None else str(h),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    size_ax.set_ylim(0, cap + 1)
    size_ax.set_title(
        "Largest set the threshold allows"
        + (f" ({candidates} candidates)" if candidates else " (bound)"),
        fontsize=10,
    )
    size_ax.set_ylabel("candidates")

    data = [list(s.true_label_probabilities) or [math.nan] for s in steps]
    prob_ax.boxplot(data, positions=ks, widths=0.5, showfliers=False)
    floors = [(s.step, 1 - s.threshold) for s in steps if s.threshold is not None]
    if floors:
        prob_ax.plot(
            *zip(*floors, strict=True),
            "_",
            ms=22,
            mew=2,
            color="tab:red",
            label="1 - tau (enters the set)",
        )
        prob_ax.legend(fontsize=7, loc="upper left")
    prob_ax.set_ylim(0, 1)
    prob_ax.set_title("True-label probability (calibration cases)", fontsize=10)

    for ax in (cov_ax, size_ax, prob_ax):
        ax.set_xticks(ks, ticks, fontsize=8)
        ax.set_xlabel("step (answers so far)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


async def calibration_plot_png(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    *,
    owner: str | None,
    candidates: int | None = None,
) -> bytes:
    """The plot of a run ``owner`` may read (its own or the platform's); rendering is CPU
    work, so it runs off the event loop."""
    async with sessionmaker() as db:
        row = await CalibrationRepository(db).get_visible(calibration_id, owner=owner)
        if row is None:
            raise NotFoundError(f"no calibration {calibration_id}")
        if row.result is None:
            raise ConflictError(f"calibration {calibration_id} is {row.status}; no result to plot")
        result = row.result
        title = (
            f"Calibration {row.name or calibration_id} - {row.model} / {row.prompt_version}, "
            f"policy {row.policy}, alpha {row.alpha:g}" + (" (anytime)" if row.anytime else "")
        )
    return await asyncio.to_thread(render_plot, result, title=title, candidates=candidates)
