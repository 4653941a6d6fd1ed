"""What one interview turn produces: the differential, the chosen question and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.engine.config import Policy, SelectionRule, StopReason
from app.engine.scoring import conformal_p_values, entropy, prediction_set_mask
from app.engine.types import History

__all__ = [
    "AnswerOutcome",
    "CandidateScore",
    "Differential",
    "QuestionRationale",
    "Trajectory",
    "TurnOutcome",
    "make_differential",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Differential:
    """The posterior over labels at step k and the prediction set shown for it.

    ``calibrated`` is True when the set is the LAC set at the calibrated ``threshold``
    tau_k (marginal coverage >= 1 - alpha); False when it is the nominal set (fewest top
    labels with posterior mass >= 1 - alpha), the model's own and never a guarantee, and
    ``threshold`` is then None. ``p_values`` are conformal p-values
    ``(1 + #{i: s_i >= 1 - p(y)}) / (n + 1)`` against the step's calibration scores, or
    None when no scores are available (uncalibrated, or thresholds kept without scores).
    ``members`` lists the set's labels by decreasing posterior (it may be empty for LAC).
    """

    step: int
    labels: tuple[str, ...]
    posterior: tuple[float, ...]
    in_set: tuple[bool, ...]
    members: tuple[str, ...]
    p_values: tuple[float, ...] | None
    top_label: str
    entropy: float
    alpha: float
    threshold: float | None
    calibrated: bool

    @property
    def set_size(self) -> int:
        """Number of labels in the prediction set."""
        return len(self.members)


def make_differential(
    *,
    step: int,
    labels: Sequence[str],
    posterior: npt.ArrayLike,
    alpha: float,
    threshold: float | None,
    calibration_scores: npt.ArrayLike | None,
) -> Differential:
    """Build the differential from a (K,) posterior; threshold None means the nominal set."""
    p = np.asarray(posterior, dtype=np.float64)
    mask = prediction_set_mask(p, threshold, alpha)
    order = np.argsort(-p, kind="stable")
    p_values: tuple[float, ...] | None = None
    if threshold is not None and calibration_scores is not None:
        p_values = tuple(float(v) for v in conformal_p_values(p, calibration_scores))
    return Differential(
        step=step,
        labels=tuple(labels),
        posterior=tuple(float(v) for v in p),
        in_set=tuple(bool(v) for v in mask),
        members=tuple(labels[i] for i in order if mask[i]),
        p_values=p_values,
        top_label=labels[int(order[0])],
        entropy=float(entropy(p)),
        alpha=float(alpha),
        threshold=None if threshold is None else float(threshold),
        calibrated=threshold is not None,
    )


@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    """One simulated answer to a candidate question and where it would leave the posterior."""

    text: str
    weight: float
    set_size: int
    entropy: float
    top_label: str
    label: str | None = None  # the label of the draw that gave this answer (sampled source)


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """A candidate question's objectives at step k+1: expected set size, expected entropy
    (nats) and the paper's entropy bound (nats; see ``app.engine.scoring.entropy_bound``)."""

    question: str
    expected_set_size: float
    expected_entropy: float
    entropy_bound: float
    answers: tuple[AnswerOutcome, ...]


@dataclass(frozen=True, slots=True)
class QuestionRationale:
    """Why this question: its scores and the other candidates', best first by the policy."""

    policy: Policy
    question: str
    expected_set_size: float
    expected_entropy: float
    answers: tuple[AnswerOutcome, ...]
    runner_ups: tuple[CandidateScore, ...]
    entropy_bound: float
    # Which sets the scores count: "calibrated" (a selection calibration's tau_{k+1}) or
    # "nominal" (the model's own top labels holding 1 - alpha).
    selection_rule: SelectionRule
    # What the policy minimised: "set_size", "entropy_bound" (cip), "expected_entropy"
    # (ip); None for random/fixed, whose scores only explain the pick.
    objective: str | None
    # Candidates whose objective equals the chosen one's (ties broken by expected entropy).
    tied: int = 0
    # What decided among them: "expected_entropy" / "expected_set_size" (the second key),
    # "candidate_order" (tied on both), None (no tie).
    tie_break: str | None = None
    # How many candidates were scored this turn (the chosen one included).
    candidates_scored: int = 0


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """Result of planning one turn at step k = len(history).

    Exactly one of ``next_question`` and ``stop_reason`` is set. ``candidates`` holds the
    scored candidates best first by the policy's order (cip/ip: all scored; random/fixed:
    only the chosen one, and only with ``explain_baselines``; with ``max_candidates`` a
    sample). ``candidates_considered`` counts the eligible (unasked) candidate questions of
    the turn; ``posterior_evaluations`` the distinct histories sent to the provider this turn
    (including the bare history).
    """

    step: int
    differential: Differential
    next_question: str | None
    rationale: QuestionRationale | None
    should_stop: bool
    stop_reason: StopReason | None
    candidates: tuple[CandidateScore, ...]
    candidates_considered: int
    posterior_evaluations: int
    # cip/ip with candidates scored: whether the best beats asking nothing (both scored at
    # step k+1's thresholds); None otherwise. Recorded whether or not the rule stops.
    gain: bool | None = None

    def __post_init__(self) -> None:
        if self.should_stop != (self.stop_reason is not None) or self.should_stop != (
            self.next_question is None
        ):
            raise ValueError("a turn either asks next_question or stops with a stop_reason")


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A whole interview: one turn per step 0..T, the last one stopping."""

    turns: tuple[TurnOutcome, ...]
    history: History

    @property
    def stop_reason(self) -> StopReason:
        """Why the interview ended."""
        reason = self.turns[-1].stop_reason
        assert reason is not None  # guaranteed by run_interview
        return reason

    @property
    def posteriors(self) -> FloatArray:
        """(T + 1, K): the posterior at each step 0..T."""
        return np.array([t.differential.posterior for t in self.turns], dtype=np.float64)

    def label_scores(self, label: str) -> FloatArray:
        """(T + 1,): the LAC score 1 - p(label | h_k) at each step, for calibration."""
        labels = self.turns[0].differential.labels
        return 1.0 - self.posteriors[:, labels.index(label)]

    @property
    def final(self) -> Differential:
        """The differential the interview ended with."""
        return self.turns[-1].differential
