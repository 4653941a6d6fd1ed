"""Plan one interview turn (service) or run a whole interview (calibration, benchmarks).

One turn at step k = len(history):
1. candidate questions: the bank's unasked questions or the provider's proposals, with
   anything already asked removed (whitespace/case-insensitive);
2. candidate answers: ``simulate_answers`` for each question that must be scored,
   concurrently; duplicate answer texts are merged by adding their weights;
3. ONE ``label_posteriors`` call for the bare history and every distinct
   ``history + (QA(q, a),)``;
4. the differential at step k from the bare history's row, with the *display* thresholds
   (tau_k, or the nominal set when uncalibrated);
5. the policy's choice, scored with the *selection* rule: LAC at ``selection_thresholds``
   tau_{k+1}, or the nominal set at ``config.alpha`` when ``selection_thresholds`` is None;
6. stop rules, first match wins: policy_none, singleton, budget, exhausted, no_gain, spread.

Display and selection thresholds are separate on purpose. The coverage guarantee needs the
serving histories to be distributed like the calibration histories, so the question policy
(including the sets inside its objective) must be the same in both. Calibration cannot use
thresholds it is computing, so by default both calibrate and serve with the nominal
selection rule; a deployment that wants calibrated sets inside the objective must fix a
``selection_thresholds`` (e.g. from an earlier calibration on a separate split) and pass
the same object to calibration and to serving.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Collection, Sequence

import numpy as np
import numpy.typing as npt

from app.engine.banks import dedupe_questions
from app.engine.config import InterviewConfig, Policy, QuestionSource, StopReason
from app.engine.outcomes import (
    AnswerOutcome,
    CandidateScore,
    QuestionRationale,
    Trajectory,
    TurnOutcome,
    make_differential,
)
from app.engine.scoring import entropy, improves, objective_set_size, score_candidates
from app.engine.thresholds import StepThresholds
from app.engine.types import QA, CaseContext, History, PosteriorProvider, WeightedAnswer
from app.errors import InvalidInputError, UpstreamBadOutputError

__all__ = ["AnswerFn", "plan_turn", "rank_candidates", "run_interview"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
AnswerFn = Callable[[str], Awaitable[str]]

# Expected set sizes are weighted sums of integers; two that agree to this many decimals
# are a tie (float summation order must not decide), broken by expected entropy.
_SIZE_DECIMALS = 9
_ENTROPY_DECIMALS = 12
# Objective improvements smaller than this are no gain.
_GAIN_TOL = 1e-9


async def plan_turn(
    *,
    provider: PosteriorProvider,
    case: CaseContext,
    history: History,
    inquiry: str,
    labels: Sequence[str],
    config: InterviewConfig,
    thresholds: StepThresholds | None,
    rng: np.random.Generator,
    asked: Collection[str] = (),
    selection_thresholds: StepThresholds | None = None,
) -> TurnOutcome:
    """Differential at step len(history), and the next question or why to stop.

    ``thresholds`` give the displayed set (None: nominal, uncalibrated; its alpha must equal
    ``config.alpha``). ``selection_thresholds`` give the sets inside the C-IP objective
    (None: nominal). ``asked`` lists questions to exclude besides those in ``history``.
    """
    label_tuple = _check_labels(labels)
    history = tuple(history)
    if thresholds is not None and not math.isclose(thresholds.alpha, config.alpha):
        raise InvalidInputError(
            f"thresholds were calibrated at alpha={thresholds.alpha}, config has {config.alpha}"
        )
    step = len(history)
    exclude = [qa.question for qa in history] + list(asked)

    pool: list[str] = []
    to_score: list[str] = []
    chosen: str | None = None
    budget_reached = step >= config.max_questions
    if config.policy is not Policy.NONE and not budget_reached:
        pool = await _candidate_pool(provider, case, history, inquiry, label_tuple, config, exclude)
        if pool:
            to_score, chosen = _pick_for_scoring(pool, config, rng)

    answer_sets = await asyncio.gather(
        *(
            provider.simulate_answers(case=case, history=history, question=q, m=config.n_answers)
            for q in to_score
        )
    )
    answers = [
        _check_answers(a, q, config.n_answers) for a, q in zip(answer_sets, to_score, strict=True)
    ]

    # One row per distinct history; row 0 is the bare history (the current posterior).
    rows: dict[History, int] = {history: 0}
    row_of: list[list[int]] = []
    for q, q_answers in zip(to_score, answers, strict=True):
        row_of.append([rows.setdefault((*history, QA(q, a.text)), len(rows)) for a in q_answers])
    posteriors = await provider.label_posteriors(
        case=case, histories=list(rows), inquiry=inquiry, labels=label_tuple
    )
    posteriors = _check_posteriors(posteriors, len(rows), len(label_tuple))

    display_tau = None if thresholds is None else thresholds.threshold_for_step(step)
    differential = make_differential(
        step=step,
        labels=label_tuple,
        posterior=posteriors[0],
        alpha=config.alpha,
        threshold=display_tau,
        calibration_scores=None if thresholds is None else thresholds.scores_for_step(step),
    )

    def outcome(
        reason: StopReason | None,
        question: str | None,
        candidates: tuple[CandidateScore, ...] = (),
        rationale: QuestionRationale | None = None,
    ) -> TurnOutcome:
        return TurnOutcome(
            step=step,
            differential=differential,
            next_question=question,
            rationale=rationale,
            should_stop=reason is not None,
            stop_reason=reason,
            candidates=candidates,
            candidates_considered=len(pool),
            posterior_evaluations=len(rows),
        )

    if config.policy is Policy.NONE:
        return outcome(StopReason.POLICY_NONE, None)
    if config.stop_on_singleton and differential.set_size == 1:
        return outcome(StopReason.SINGLETON, None)
    if budget_reached:
        return outcome(StopReason.BUDGET, None)
    if not pool:
        return outcome(StopReason.EXHAUSTED, None)

    next_tau = (
        None if selection_thresholds is None else selection_thresholds.threshold_for_step(step + 1)
    )
    scored = _score(to_score, answers, row_of, posteriors, label_tuple, next_tau, config.alpha)

    if config.policy in (Policy.CIP, Policy.IP):
        objective = np.array(
            [
                c.expected_set_size if config.policy is Policy.CIP else c.expected_entropy
                for c in scored
            ]
        )
        order = rank_candidates(
            config.policy,
            np.array([c.expected_set_size for c in scored]),
            np.array([c.expected_entropy for c in scored]),
        )
        ranked = tuple(scored[i] for i in order)
        if config.stop_on_no_gain and not _improves(
            config.policy,
            ranked[0],
            posteriors[0],
            differential.entropy,
            None if selection_thresholds is None else selection_thresholds.threshold_for_step(step),
            config.alpha,
        ):
            return outcome(StopReason.NO_GAIN, None, ranked)
        if (
            config.spread_epsilon is not None
            and objective.size >= 2
            and float(np.std(objective)) < config.spread_epsilon
        ):
            return outcome(StopReason.SPREAD, None, ranked)
        best = ranked[0]
        rationale = QuestionRationale(
            policy=config.policy,
            question=best.question,
            expected_set_size=best.expected_set_size,
            expected_entropy=best.expected_entropy,
            answers=best.answers,
            runner_ups=ranked[1:],
            objective_calibrated=next_tau is not None,
        )
        return outcome(None, best.question, ranked, rationale)

    assert chosen is not None  # random/fixed always choose from a non-empty pool
    explained = tuple(scored)
    why: QuestionRationale | None = None
    if explained:
        why = QuestionRationale(
            policy=config.policy,
            question=chosen,
            expected_set_size=explained[0].expected_set_size,
            expected_entropy=explained[0].expected_entropy,
            answers=explained[0].answers,
            runner_ups=(),
            objective_calibrated=next_tau is not None,
        )
    return outcome(None, chosen, explained, why)


async def run_interview(
    *,
    provider: PosteriorProvider,
    case: CaseContext,
    inquiry: str,
    labels: Sequence[str],
    config: InterviewConfig,
    thresholds: StepThresholds | None,
    answer_fn: AnswerFn,
    rng: np.random.Generator,
    selection_thresholds: StepThresholds | None = None,
    history: History = (),
) -> Trajectory:
    """Plan turns and ask ``answer_fn`` (the simulated patient) until a stop rule fires.

    For calibration pass ``thresholds=None`` (tau_k is what is being computed), the same
    ``selection_thresholds`` and policy settings as serving, and a config with
    ``stop_on_singleton=False, stop_on_no_gain=False, spread_epsilon=None`` so every case
    reaches step ``max_questions`` unless the candidates run out (``exhausted``); the
    calibrator then reads ``Trajectory.label_scores(true_label)`` for steps 0..T.
    """
    history = tuple(history)
    turns: list[TurnOutcome] = []
    while True:
        turn = await plan_turn(
            provider=provider,
            case=case,
            history=history,
            inquiry=inquiry,
            labels=labels,
            config=config,
            thresholds=thresholds,
            rng=rng,
            selection_thresholds=selection_thresholds,
        )
        turns.append(turn)
        if turn.next_question is None:
            return Trajectory(turns=tuple(turns), history=history)
        answer = await answer_fn(turn.next_question)
        history = (*history, QA(turn.next_question, answer))


def _improves(
    policy: Policy,
    best: CandidateScore,
    posterior: FloatArray,
    current_entropy: float,
    now_tau: float | None,
    alpha: float,
) -> bool:
    """Whether the best candidate is expected to beat the present state (see ``improves``)."""
    return bool(
        improves(
            by_set_size=policy is Policy.CIP,
            best_size=best.expected_set_size,
            best_entropy=best.expected_entropy,
            current_size=objective_set_size(posterior, now_tau, alpha),
            current_entropy=current_entropy,
            tol=_GAIN_TOL,
        )
    )


def rank_candidates(
    policy: Policy, expected_set_size: FloatArray, expected_entropy: FloatArray
) -> IntArray:
    """Candidate indices best first: cip by (set size, entropy), ip by (entropy, set size).

    Remaining ties keep candidate order. Values equal after rounding (9 decimals for sizes,
    12 for entropies) tie, so float summation order never decides.
    """
    size = np.round(np.asarray(expected_set_size, dtype=np.float64), _SIZE_DECIMALS)
    ent = np.round(np.asarray(expected_entropy, dtype=np.float64), _ENTROPY_DECIMALS)
    index = np.arange(size.size)
    # np.lexsort sorts by the last key first.
    if policy is Policy.IP:
        return np.lexsort((index, size, ent))
    return np.lexsort((index, ent, size))


async def _candidate_pool(
    provider: PosteriorProvider,
    case: CaseContext,
    history: History,
    inquiry: str,
    labels: tuple[str, ...],
    config: InterviewConfig,
    exclude: list[str],
) -> list[str]:
    if config.question_source is QuestionSource.BANK:
        return dedupe_questions(config.bank, exclude=exclude)
    proposed = await provider.propose_questions(
        case=case, history=history, inquiry=inquiry, labels=labels, n=config.n_questions
    )
    return dedupe_questions(proposed, exclude=exclude)[: config.n_questions]


def _pick_for_scoring(
    pool: list[str], config: InterviewConfig, rng: np.random.Generator
) -> tuple[list[str], str | None]:
    """The questions to simulate and score, and the baseline's choice (None for cip/ip)."""
    if config.policy in (Policy.CIP, Policy.IP):
        limit = config.max_candidates
        if (
            config.question_source is QuestionSource.BANK
            and limit is not None
            and len(pool) > limit
        ):
            picked = np.sort(rng.choice(len(pool), size=limit, replace=False))
            return [pool[int(i)] for i in picked], None
        return list(pool), None
    chosen = pool[int(rng.integers(len(pool)))] if config.policy is Policy.RANDOM else pool[0]
    return ([chosen] if config.explain_baselines else []), chosen


def _score(
    questions: list[str],
    answers: list[list[WeightedAnswer]],
    row_of: list[list[int]],
    posteriors: FloatArray,
    labels: tuple[str, ...],
    threshold: float | None,
    alpha: float,
) -> list[CandidateScore]:
    """Vectorised scoring of all candidates: (Q, M, K) probabilities, ragged M padded."""
    if not questions:
        return []
    n_q, n_k = len(questions), len(labels)
    n_m = max(len(a) for a in answers)
    probs = np.full((n_q, n_m, n_k), 1.0 / n_k)
    weights = np.zeros((n_q, n_m))
    for qi, (q_answers, q_rows) in enumerate(zip(answers, row_of, strict=True)):
        probs[qi, : len(q_rows)] = posteriors[q_rows]
        weights[qi, : len(q_answers)] = [a.weight for a in q_answers]
    expected_size, expected_entropy = score_candidates(probs, weights, threshold, alpha)
    sizes = objective_set_size(probs, threshold, alpha)
    entropies = entropy(probs)
    tops = probs.argmax(axis=-1)
    return [
        CandidateScore(
            question=q,
            expected_set_size=float(expected_size[qi]),
            expected_entropy=float(expected_entropy[qi]),
            answers=tuple(
                AnswerOutcome(
                    text=a.text,
                    weight=a.weight,
                    set_size=int(sizes[qi, mi]),
                    entropy=float(entropies[qi, mi]),
                    top_label=labels[int(tops[qi, mi])],
                )
                for mi, a in enumerate(answers[qi])
            ),
        )
        for qi, q in enumerate(questions)
    ]


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    label_tuple = tuple(labels)
    if not label_tuple:
        raise InvalidInputError("at least one label is needed")
    if len(set(label_tuple)) != len(label_tuple):
        raise InvalidInputError("labels must be distinct")
    return label_tuple


def _check_answers(
    answers: Sequence[WeightedAnswer], question: str, m: int
) -> list[WeightedAnswer]:
    """At most m answers, identical texts merged (weights added), weights renormalised."""
    merged: dict[str, float] = {}
    for a in list(answers)[:m]:
        if not (math.isfinite(a.weight) and a.weight >= 0):
            raise UpstreamBadOutputError(f"answer weight {a.weight!r} is not a finite number >= 0")
        merged[a.text] = merged.get(a.text, 0.0) + a.weight
    total = sum(merged.values())
    if not merged or total <= 0:
        raise UpstreamBadOutputError(f"no weighted answers for candidate question {question!r}")
    return [WeightedAnswer(text, w / total) for text, w in merged.items()]


def _check_posteriors(raw: npt.ArrayLike, n_rows: int, n_labels: int) -> FloatArray:
    """Shape (n_rows, n_labels), finite, >= 0, rows renormalised to sum to 1."""
    probs = np.asarray(raw, dtype=np.float64)
    if probs.shape != (n_rows, n_labels):
        raise UpstreamBadOutputError(
            f"label_posteriors returned shape {probs.shape}, expected {(n_rows, n_labels)}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise UpstreamBadOutputError("label_posteriors returned non-finite or negative values")
    totals = probs.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise UpstreamBadOutputError("label_posteriors returned a row with no probability mass")
    return np.asarray(probs / totals, dtype=np.float64)
