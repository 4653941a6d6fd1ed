"""Plan one interview turn (service) or run a whole interview (calibration, benchmarks).

One turn at step k = len(history):
1. candidate questions: the bank's unasked questions or the provider's proposals, with
   anything already asked removed (whitespace/case-insensitive);
2. candidate answers, by ``config.answer_source``: ``simulate_answers`` for each question
   that must be scored, concurrently, duplicate texts merged by adding their weights
   (``llm``, ``estimation``); or the step's ``draws``, each answering every candidate,
   equal weights, each answer keeping its draw's label (``sampled``);
3. ONE ``label_posteriors`` call for the bare history and every distinct
   ``history + (QA(q, a),)``;
4. the differential at step k from the bare history's row, with the *display* thresholds
   (tau_k, or the nominal set when uncalibrated);
5. the policy's choice, scored with the *selection* rule: LAC at ``selection_thresholds``
   tau_{k+1}, or the nominal set at ``config.alpha`` when ``selection_thresholds`` is None;
   C-IP minimises ``config.objective`` (expected set size or the paper's entropy bound),
   ties by expected entropy; IP minimises expected entropy;
6. stop rules, first match wins: policy_none, singleton, budget, exhausted, no_gain, spread.
   ``no_gain`` scores "ask nothing" (the present posterior, once per answer) by the same
   rule and thresholds as the candidates, so both sides of the comparison are alike.

Display and selection thresholds are separate on purpose. The coverage guarantee needs the
serving histories to be distributed like the calibration histories, so the question policy
(including the sets inside its objective) must be the same in both. Calibration cannot use
thresholds it is computing, so the selection thresholds come from a separate *selection
calibration* (random-question histories, the paper's length marginalisation: it depends on
no question policy) and the same object is passed to calibration and to serving; without
one, both use the nominal rule.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.engine.banks import dedupe_questions
from app.engine.config import (
    AnswerSource,
    InterviewConfig,
    Objective,
    Policy,
    QuestionSource,
    SelectionRule,
    StopReason,
)
from app.engine.outcomes import (
    AnswerOutcome,
    CandidateScore,
    QuestionRationale,
    Trajectory,
    TurnOutcome,
    make_differential,
)
from app.engine.progress import ProgressFn, Stage, TurnProgress, scoring_progress_var
from app.engine.scoring import improves, score_candidates
from app.engine.thresholds import StepThresholds
from app.engine.types import (
    QA,
    AnswerDraw,
    CaseContext,
    History,
    PosteriorProvider,
    WeightedAnswer,
)
from app.errors import InvalidInputError, UpstreamBadOutputError

__all__ = [
    "AnswerFn",
    "DrawFn",
    "finite_sample_alpha",
    "plan_turn",
    "rank_candidates",
    "run_interview",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
AnswerFn = Callable[[str], Awaitable[str]]
# step -> the step's draws for the ``sampled`` answer source (seeded by the caller).
DrawFn = Callable[[int], Sequence[AnswerDraw]]

# Expected set sizes are weighted sums of integers; two that agree to this many decimals
# are a tie (float summation order must not decide), broken by expected entropy.
_SIZE_DECIMALS = 9
_BOUND_DECIMALS = 9
_ENTROPY_DECIMALS = 12
# Objective improvements smaller than this are no gain.
_GAIN_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class _Answer:
    """An answer that scores a candidate: its text, weight and draw label (-1: none)."""

    text: str
    weight: float
    label: int = -1


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
    draws: Sequence[AnswerDraw] | None = None,
    progress: ProgressFn | None = None,
) -> TurnOutcome:
    """Differential at step len(history), and the next question or why to stop.

    ``thresholds`` give the displayed set (None: nominal, uncalibrated; its alpha must equal
    ``config.alpha``). ``selection_thresholds`` give the sets inside the C-IP objective
    (None: nominal). ``asked`` lists questions to exclude besides those in ``history``.
    ``draws`` are the step's draws when ``config.answer_source`` is ``sampled``.
    ``progress`` is told each stage's counts as the turn runs (``app.engine.progress``).
    """
    tell = _Teller(progress)
    label_tuple = _check_labels(labels)
    history = tuple(history)
    if thresholds is not None and not math.isclose(thresholds.alpha, config.alpha):
        raise InvalidInputError(
            f"thresholds were calibrated at alpha={thresholds.alpha}, config has {config.alpha}"
        )
    sampled = config.answer_source is AnswerSource.SAMPLED
    step = len(history)
    exclude = [qa.question for qa in history] + list(asked)

    pool: list[str] = []
    to_score: list[str] = []
    chosen: str | None = None
    budget_reached = step >= config.max_questions
    if config.policy is not Policy.NONE and not budget_reached:
        tell(Stage.QUESTIONS, 0, 1)
        pool = await _candidate_pool(provider, case, history, inquiry, label_tuple, config, exclude)
        tell(Stage.QUESTIONS, 1, 1)
        if pool:
            to_score, chosen = _pick_for_scoring(pool, config, rng)

    if sampled:
        if to_score and not draws:
            raise InvalidInputError("answer source 'sampled' needs the step's draws")
        answers = await _sampled_answers(to_score, draws or (), label_tuple)
    else:
        answered = tell.counter(Stage.ANSWERS, len(to_score))
        answer_sets = await asyncio.gather(
            *(
                answered(
                    provider.simulate_answers(
                        case=case,
                        history=history,
                        question=q,
                        labels=label_tuple,
                        m=config.n_answers,
                    )
                )
                for q in to_score
            )
        )
        answers = [
            _check_answers(a, q, config.n_answers)
            for a, q in zip(answer_sets, to_score, strict=True)
        ]

    # One row per distinct history; row 0 is the bare history (the current posterior).
    rows: dict[History, int] = {history: 0}
    row_of: list[list[int]] = []
    for q, q_answers in zip(to_score, answers, strict=True):
        row_of.append([rows.setdefault((*history, QA(q, a.text)), len(rows)) for a in q_answers])
    candidate_answers = len(rows) - 1
    tell(Stage.SCORING, 0, candidate_answers)
    told = scoring_progress_var.set(tell.fraction(Stage.SCORING, candidate_answers))
    try:
        posteriors = await provider.label_posteriors(
            case=case, histories=list(rows), inquiry=inquiry, labels=label_tuple
        )
    finally:
        scoring_progress_var.reset(told)
    tell(Stage.SCORING, candidate_answers, candidate_answers)
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
        gain: bool | None = None,
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
            gain=gain,
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
    rule = SelectionRule.NOMINAL if next_tau is None else SelectionRule.CALIBRATED
    alpha_n = finite_sample_alpha(config.alpha, selection_thresholds, step + 1)
    scored = _score(to_score, answers, row_of, posteriors, label_tuple, next_tau, config, alpha_n)

    if config.policy in (Policy.CIP, Policy.IP):
        order = rank_candidates(config, scored)
        ranked = tuple(scored[i] for i in order)
        best = ranked[0]
        # "Ask nothing": the present posterior after every answer, scored by the same rule.
        (stay,) = _score(
            ["(ask nothing)"],
            [answers[order[0]]],
            [[0] * len(answers[order[0]])],
            posteriors,
            label_tuple,
            next_tau,
            config,
            alpha_n,
        )
        gain = bool(
            improves(
                best=_objective(config, best),
                best_entropy=best.expected_entropy,
                current=_objective(config, stay),
                current_entropy=differential.entropy,
                entropy_only=config.policy is Policy.IP,
                tol=_GAIN_TOL,
            )
        )
        if config.stop_on_no_gain and not gain:
            return outcome(StopReason.NO_GAIN, None, ranked, gain=gain)
        values = np.array([_objective(config, c) for c in scored])
        if (
            config.spread_epsilon is not None
            and values.size >= 2
            and float(np.std(values)) < config.spread_epsilon
        ):
            return outcome(StopReason.SPREAD, None, ranked, gain=gain)
        rationale = QuestionRationale(
            policy=config.policy,
            question=best.question,
            expected_set_size=best.expected_set_size,
            expected_entropy=best.expected_entropy,
            answers=best.answers,
            runner_ups=ranked[1:],
            entropy_bound=best.entropy_bound,
            selection_rule=rule,
            objective=objective_name(config),
            tied=_ties(config, ranked),
            tie_break=_tie_break(config, ranked),
            candidates_scored=len(ranked),
        )
        return outcome(None, best.question, ranked, rationale, gain)

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
            entropy_bound=explained[0].entropy_bound,
            selection_rule=rule,
            objective=None,
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
    draws: DrawFn | None = None,
) -> Trajectory:
    """Plan turns and ask ``answer_fn`` (the simulated patient) until a stop rule fires.

    For calibration pass ``thresholds=None`` (tau_k is what is being computed), the same
    ``selection_thresholds`` and policy settings as serving, and a config with
    ``stop_on_singleton=False, stop_on_no_gain=False, spread_epsilon=None`` so every case
    reaches step ``max_questions`` unless the candidates run out (``exhausted``); the
    calibrator then reads ``Trajectory.label_scores(true_label)`` for steps 0..T.
    ``draws(step)`` gives each step's draws for the ``sampled`` answer source.
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
            draws=None if draws is None else draws(len(history)),
        )
        turns.append(turn)
        if turn.next_question is None:
            return Trajectory(turns=tuple(turns), history=history)
        answer = await answer_fn(turn.next_question)
        history = (*history, QA(turn.next_question, answer))


class _Teller:
    """Tells ``progress`` (if any) each stage's counts, never the same count twice."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self._progress = progress
        self._last: TurnProgress | None = None

    def __call__(self, stage: Stage, done: int, total: int) -> None:
        if self._progress is None:
            return
        now = TurnProgress(stage=stage, done=min(done, total), total=total)
        if now != self._last:
            self._last = now
            self._progress(now)

    def counter(
        self, stage: Stage, total: int
    ) -> Callable[[Awaitable[list[WeightedAnswer]]], Awaitable[list[WeightedAnswer]]]:
        """Wraps each of ``total`` awaitables; tells the count as each one finishes."""
        done = 0
        self(stage, 0, total)

        async def counted(work: Awaitable[list[WeightedAnswer]]) -> list[WeightedAnswer]:
            nonlocal done
            result = await work
            done += 1
            self(stage, done, total)
            return result

        return counted

    def fraction(self, stage: Stage, total: int) -> Callable[[int, int], None]:
        """A provider's (parts done, parts) as a count out of ``total``."""

        def told(done: int, parts: int) -> None:
            if parts > 0:
                self(stage, (done * total) // parts, total)

        return told


def finite_sample_alpha(alpha: float, selection: StepThresholds | None, step: int) -> float:
    """alpha_N = alpha - 1 / (n + 1) for the bound, n the selection calibration's size at
    ``step``; alpha itself (the n -> infinity limit) for the nominal rule or unknown n.

    Clipped at 0: below n = 1/alpha - 1 the threshold is infinite anyway.
    """
    scores = None if selection is None else selection.scores_for_step(step)
    if scores is None or len(scores) == 0:
        return alpha
    return max(0.0, alpha - 1.0 / (len(scores) + 1))


def objective_name(config: InterviewConfig) -> str | None:
    """What the policy minimises: the C-IP objective, "expected_entropy" for IP, else None."""
    if config.policy is Policy.CIP:
        return config.objective.value
    return "expected_entropy" if config.policy is Policy.IP else None


def _objective(config: InterviewConfig, c: CandidateScore) -> float:
    """The value the policy's first key ranks by (IP: expected entropy)."""
    if config.policy is Policy.IP:
        return c.expected_entropy
    if config.objective is Objective.ENTROPY_BOUND:
        return c.entropy_bound
    return c.expected_set_size


def _first_key_decimals(config: InterviewConfig) -> int:
    """The rounding of the value the policy ranks by first (see ``rank_candidates``)."""
    if config.policy is Policy.IP:
        return _ENTROPY_DECIMALS
    return _BOUND_DECIMALS if config.objective is Objective.ENTROPY_BOUND else _SIZE_DECIMALS


def rank_candidates(config: InterviewConfig, scored: Sequence[CandidateScore]) -> IntArray:
    """Candidate indices best first: cip by (objective, expected entropy), ip by (expected
    entropy, expected set size).

    Remaining ties keep candidate order. Values equal after rounding (9 decimals for sizes
    and bounds, 12 for entropies) tie, so float summation order never decides.
    """
    first = np.round([_objective(config, c) for c in scored], _first_key_decimals(config))
    if config.policy is Policy.IP:
        second = np.round([c.expected_set_size for c in scored], _SIZE_DECIMALS)
    else:
        second = np.round([c.expected_entropy for c in scored], _ENTROPY_DECIMALS)
    # np.lexsort sorts by the last key first.
    return np.lexsort((np.arange(len(scored)), second, first))


def _tied(config: InterviewConfig, ranked: Sequence[CandidateScore]) -> list[CandidateScore]:
    """The other candidates that share the best one's first key (after rounding)."""
    decimals = _first_key_decimals(config)
    best = round(_objective(config, ranked[0]), decimals)
    return [c for c in ranked[1:] if round(_objective(config, c), decimals) == best]


def _ties(config: InterviewConfig, ranked: Sequence[CandidateScore]) -> int:
    """How many other candidates share the best one's first key (after rounding)."""
    return len(_tied(config, ranked))


def _tie_break(config: InterviewConfig, ranked: Sequence[CandidateScore]) -> str | None:
    """What decided among the candidates tied on the first key: the second key
    (``expected_entropy`` for cip, ``expected_set_size`` for ip), ``candidate_order`` when
    some tied on both, None when nothing tied (``rank_candidates``' order)."""
    tied = _tied(config, ranked)
    if not tied:
        return None
    if config.policy is Policy.IP:
        key, second_decimals = "expected_set_size", _SIZE_DECIMALS
    else:
        key, second_decimals = "expected_entropy", _ENTROPY_DECIMALS
    mine = round(getattr(ranked[0], key), second_decimals)
    if any(round(getattr(c, key), second_decimals) == mine for c in tied):
        return "candidate_order"
    return key


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


async def _sampled_answers(
    questions: Sequence[str], draws: Sequence[AnswerDraw], labels: tuple[str, ...]
) -> list[list[_Answer]]:
    """Every draw answers every question; weights 1/m; a draw's label kept if it is one."""
    replies = await asyncio.gather(*(d.answer(q) for q in questions for d in draws))
    index = {label: i for i, label in enumerate(labels)}
    label_of = [-1 if d.label is None else index.get(d.label, -1) for d in draws]
    m = len(draws)
    return [
        [_Answer(replies[qi * m + j], 1.0 / m, label_of[j]) for j in range(m)]
        for qi in range(len(questions))
    ]


def _score(
    questions: Sequence[str],
    answers: Sequence[Sequence[_Answer]],
    row_of: Sequence[Sequence[int]],
    posteriors: FloatArray,
    labels: tuple[str, ...],
    threshold: float | None,
    config: InterviewConfig,
    alpha_n: float,
) -> list[CandidateScore]:
    """Vectorised scoring of all candidates: (Q, M, K) probabilities, ragged M padded."""
    if not questions:
        return []
    n_q, n_k = len(questions), len(labels)
    n_m = max(len(a) for a in answers)
    probs = np.full((n_q, n_m, n_k), 1.0 / n_k)
    weights = np.zeros((n_q, n_m))
    drawn = np.full((n_q, n_m), -1, dtype=np.intp)
    for qi, (q_answers, q_rows) in enumerate(zip(answers, row_of, strict=True)):
        probs[qi, : len(q_rows)] = posteriors[list(q_rows)]
        weights[qi, : len(q_answers)] = [a.weight for a in q_answers]
        drawn[qi, : len(q_answers)] = [a.label for a in q_answers]
    objectives = score_candidates(
        probs, weights, threshold, config.alpha, answer_labels=drawn, alpha_n=alpha_n
    )
    tops = probs.argmax(axis=-1)
    return [
        CandidateScore(
            question=q,
            expected_set_size=float(objectives.expected_set_size[qi]),
            expected_entropy=float(objectives.expected_entropy[qi]),
            entropy_bound=float(objectives.entropy_bound[qi]),
            answers=tuple(
                AnswerOutcome(
                    text=a.text,
                    weight=a.weight,
                    set_size=int(objectives.set_sizes[qi, mi]),
                    entropy=float(objectives.entropies[qi, mi]),
                    top_label=labels[int(tops[qi, mi])],
                    label=None if a.label < 0 else labels[a.label],
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


def _check_answers(answers: Sequence[WeightedAnswer], question: str, m: int) -> list[_Answer]:
    """At most m answers, identical texts merged (weights added), weights renormalised."""
    merged: dict[str, float] = {}
    for a in list(answers)[:m]:
        if not (math.isfinite(a.weight) and a.weight >= 0):
            raise UpstreamBadOutputError(f"answer weight {a.weight!r} is not a finite number >= 0")
        merged[a.text] = merged.get(a.text, 0.0) + a.weight
    total = sum(merged.values())
    if not merged or total <= 0:
        raise UpstreamBadOutputError(f"no weighted answers for candidate question {question!r}")
    return [_Answer(text, w / total) for text, w in merged.items()]


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
