"""Seeded 20 Questions games and two ways to play them: the engine, or a batched replica.

A game is a true animal and a noisy player: the player answers each question with the
oracle's answer for that animal, flipped with probability ``noise`` (one seeded draw u per
step, flip when u < noise; a world that makes attribute a noisier, ``Games.with_extra_noise``,
flips when u < noise + extra[a], so games and attributes it leaves alone do not change).
Game i of a split draws its animal, its player's draws and the policy's random stream from
``SeedSequence([seed, split, i])``, so splits never share games and every policy plays the
same test games (paired comparisons).

Every game runs to the question budget without early stopping (stop rules that end an
interview do not change which questions come before the stop), and the trace keeps what
the serving stop rules need: the posterior at every step and whether C-IP/IP saw no gain.

- ``simulate_engine`` plays through ``app.engine.run_interview`` with any
  ``PosteriorProvider`` (the LLM path). One engine turn costs a few milliseconds of Python.
- ``simulate_tabular`` replays the engine's decisions for a ``TabularProvider`` over a whole
  batch of games at once with numpy: the same candidate pool (unasked bank questions in
  bank order), the same answer weights and posteriors, the engine's own set/entropy
  functions and rounding for ranking, the same per-game random stream for ``random``.
  Tests check that both give the same questions and posteriors.

Candidate scoring (``Scoring``): C-IP's objective (expected set size or the paper's entropy
bound) and where the answers that score a candidate come from: ``llm``, the provider's own
answer distribution (the tabular mixture: "Yes." with P(yes | h), "No." with the rest), or
``sampled``, the paper's way: per game and step, m labels drawn uniformly (``answer_draws``,
seeded by game and step, shared by every candidate), each answering like the game's player
would for that label (oracle answer, flipped with the game's noise), weights 1/m.

Selection thresholds for calibrated C-IP (``selection_thresholds``) come from random-question
histories, the paper's length marginalisation: for each history length k, n labels drawn
uniformly, k distinct bank questions drawn uniformly, answered by the player; one LAC
threshold per k from the scores 1 - p(y | h). They depend on no question policy.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from app.engine import (
    AnswerDraw,
    AnswerSource,
    DrawFn,
    InterviewConfig,
    Objective,
    Policy,
    QuestionSource,
    StepThresholds,
    StepwiseThresholds,
    finite_sample_alpha,
    improves,
    normalize_question,
    run_interview,
)
from app.engine.scoring import PROB_FLOOR, score_candidates
from app.engine.types import QA, CaseContext, History, PosteriorProvider
from app.errors import InvalidInputError
from app.worlds.tabular import ANSWER_UNKNOWN, ANSWER_YES, NO, YES, TabularProvider

__all__ = [
    "SELECTION_TAU_SLACK",
    "SPLITS",
    "BenchPolicy",
    "Games",
    "Scoring",
    "Traces",
    "answer_draws",
    "make_games",
    "random_histories",
    "selection_thresholds",
    "simulate_engine",
    "simulate_tabular",
    "thresholds_from_histories",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
UIntArray = npt.NDArray[np.uint64]

SPLITS = {"selection": 0, "calibration": 1, "test": 2}
CASE = CaseContext(summary="Think of an animal; I will guess it with yes/no questions.")
INQUIRY = "Which animal is it?"

# The engine's decision constants (app.engine.interview): expected sizes and bounds tie at 9
# decimals, expected entropies at 12, and an improvement below 1e-9 is no gain.
_SIZE_DECIMALS = 9
_ENTROPY_DECIMALS = 12
_GAIN_TOL = 1e-9
# Seed-word tags of the answer draws and the random selection histories; make_games uses
# [seed, split, i] with i a game index, far below these.
_DRAWS_TAG = 1 << 30
_HISTORIES_TAG = (1 << 30) + 1
# Selection thresholds are widened by this. A candidate history can be the very history whose
# score set the threshold (at step 0 every length-1 history is both), and whether its label is
# in the set then turns on the last bit of two float routes to the same posterior (the
# engine's matrix product, the replica's update); with the slack it is always in. Selection
# thresholds only rank questions (no coverage claim rests on them), so 1e-12 costs nothing.
SELECTION_TAU_SLACK = 1e-12
# Random selection histories scored per label_posteriors call.
_HISTORY_CHUNK = 256


class BenchPolicy(StrEnum):
    """Question policies of the bench."""

    CIP = "cip"  # C-IP with calibrated sets in its objective (random-history selection)
    CIP_NOMINAL = "cip-nominal"  # C-IP with the model's own nominal sets (engine default)
    IP = "ip"  # expected posterior entropy
    RANDOM = "random"  # uniform over unasked questions

    @property
    def engine_policy(self) -> Policy:
        """The engine policy that plays it."""
        if self in (BenchPolicy.CIP, BenchPolicy.CIP_NOMINAL):
            return Policy.CIP
        return Policy(self.value)

    @property
    def calibrated_selection(self) -> bool:
        """Whether its objective uses selection thresholds (random-question histories)."""
        return self is BenchPolicy.CIP


@dataclass(frozen=True, slots=True)
class Scoring:
    """How C-IP/IP score a candidate: C-IP's objective, the answer source, draws per step."""

    objective: Objective = Objective.SET_SIZE
    answer_source: AnswerSource = AnswerSource.LLM
    n_answers: int = 4  # draws per step for ``sampled``; ``llm`` scores yes and no exactly

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective(self.objective))
        object.__setattr__(self, "answer_source", AnswerSource(self.answer_source))
        if self.answer_source not in (AnswerSource.LLM, AnswerSource.SAMPLED):
            raise InvalidInputError("20 Questions answer source must be llm or sampled")
        if self.n_answers < 1:
            raise InvalidInputError(f"n_answers must be >= 1, got {self.n_answers}")

    @property
    def sampled(self) -> bool:
        """Whether the answers are the step's label draws."""
        return self.answer_source is AnswerSource.SAMPLED

    def settings(self) -> dict[str, object]:
        """JSON-safe summary for reports."""
        return {
            "objective": self.objective.value,
            "answer_source": self.answer_source.value,
            "answers": self.n_answers if self.sampled else "yes and no, exact weights",
        }


@dataclass(frozen=True, eq=False, slots=True)
class Games:
    """A split's games: true label index, the player's draws per step, policy streams."""

    split: str
    seed: int
    truth: IntArray  # (G,)
    policy_seeds: tuple[np.random.SeedSequence, ...]
    n_labels: int
    noise: float
    uniforms: FloatArray  # (G, T): the per-step draw u; the player flips when u < noise (+ extra)
    extra_noise: FloatArray | None = None  # (A,): added flip probability per attribute

    def __len__(self) -> int:
        return int(self.truth.size)

    @property
    def flips(self) -> BoolArray:
        """(G, T): whether the player flips at step j, before any per-attribute extra noise."""
        return np.asarray(self.uniforms < self.noise, dtype=np.bool_)

    def with_extra_noise(self, extra: FloatArray | None) -> Games:
        """The same games, the player flipping attribute a when u < noise + extra[a]."""
        if extra is None or not np.any(extra):
            return replace(self, extra_noise=None)
        return replace(self, extra_noise=np.asarray(extra, dtype=np.float64))

    def flip(self, g: IntArray, step: int, a: IntArray) -> BoolArray:
        """Whether the player flips its answer in games g at ``step`` asked attributes a."""
        extra = 0.0 if self.extra_noise is None else self.extra_noise[a]
        return np.asarray(self.uniforms[g, step] < self.noise + extra, dtype=np.bool_)

    def policy_rng(self, i: int) -> np.random.Generator:
        """A fresh copy of game i's policy random stream."""
        return np.random.default_rng(self.policy_seeds[i])


def make_games(
    *, n: int, split: str, seed: int, n_labels: int, max_questions: int, noise: float
) -> Games:
    """``n`` games of ``split``: animal uniform over labels, flips with probability noise."""
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not 0 <= noise < 0.5:
        raise InvalidInputError(f"noise must lie in [0, 0.5), got {noise!r}")
    if n < 0 or n_labels < 1 or max_questions < 0:
        raise InvalidInputError("need n >= 0, n_labels >= 1, max_questions >= 0")
    truth = np.empty(n, dtype=np.intp)
    uniforms = np.empty((n, max_questions))
    policy_seeds = []
    for i in range(n):
        animal, player, policy = np.random.SeedSequence([seed, SPLITS[split], i]).spawn(3)
        truth[i] = np.random.default_rng(animal).integers(n_labels)
        uniforms[i] = np.random.default_rng(player).random(max_questions)
        policy_seeds.append(policy)
    return Games(split, seed, truth, tuple(policy_seeds), n_labels, float(noise), uniforms)


def answer_draws(
    games: Games, i: int, step: int, m: int, oracle_yes: BoolArray
) -> tuple[IntArray, BoolArray]:
    """The ``sampled`` draws of game i at ``step``: m labels uniform, and each draw's answer
    to every bank question (the oracle's for its label, flipped with the game's noise).

    Seeded by (seed, split, game, step) alone, so every policy and both simulators see the
    same draws, and every candidate of the step is scored on them. Returns (m,) label
    indices and an (m, A) matrix of "yes".
    """
    rng = np.random.default_rng(
        np.random.SeedSequence([games.seed, SPLITS[games.split], _DRAWS_TAG, i, step])
    )
    labels = rng.integers(games.n_labels, size=m)
    extra = 0.0 if games.extra_noise is None else games.extra_noise[None, :]
    flips = rng.random((m, oracle_yes.shape[1])) < games.noise + extra
    return labels.astype(np.intp), np.asarray(oracle_yes[labels] ^ flips, dtype=np.bool_)


def random_histories(
    *,
    n: int,
    k: int,
    seed: int,
    oracle_yes: BoolArray,
    noise: float,
    extra_noise: FloatArray | None = None,
) -> tuple[IntArray, IntArray, BoolArray]:
    """n selection histories of length k: label uniform, k distinct bank questions uniform
    (in random order), answered by the player (oracle answer flipped with ``noise``, plus
    ``extra_noise[a]`` on attribute a when given).

    Seeded by (seed, "selection", k): each length is an independent sample, as in the
    paper's length marginalisation. Returns labels (n,), questions (n, k), "yes" (n, k).
    """
    n_labels, n_bank = oracle_yes.shape
    if not 0 <= k <= n_bank:
        raise InvalidInputError(f"history length must lie in 0..{n_bank}, got {k}")
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, SPLITS["selection"], _HISTORIES_TAG, k])
    )
    labels = rng.integers(n_labels, size=n).astype(np.intp)
    questions = np.argsort(rng.random((n, n_bank)), axis=1)[:, :k].astype(np.intp)
    extra = 0.0 if extra_noise is None else extra_noise[questions]
    flips = rng.random((n, k)) < noise + extra
    yes = np.asarray(oracle_yes[labels[:, None], questions] ^ flips, dtype=np.bool_)
    return labels, questions, yes


async def selection_thresholds(
    provider: PosteriorProvider,
    *,
    labels: Sequence[str],
    bank: Sequence[str],
    oracle_yes: BoolArray,
    n: int,
    horizon: int,
    seed: int,
    noise: float,
    alpha: float,
    concurrency: int = 1,
    extra_noise: FloatArray | None = None,
) -> StepwiseThresholds:
    """Selection thresholds tau_0..tau_horizon from ``random_histories`` (policy-free).

    Scores ``s = 1 - p(y | h)`` through ``provider.label_posteriors`` (any provider, LLM
    included), thresholds by the exact conformal rank (``StepwiseThresholds.from_scores``,
    scores kept so the bound's alpha_N knows n), each widened by ``SELECTION_TAU_SLACK``.
    """
    if n < 1:
        raise InvalidInputError(f"selection needs n >= 1 histories, got {n}")

    def draw(k: int) -> tuple[IntArray, list[History]]:
        truth, questions, yes = random_histories(
            n=n,
            k=min(k, len(bank)),
            seed=seed,
            oracle_yes=oracle_yes,
            noise=noise,
            extra_noise=extra_noise,
        )
        histories: list[History] = [
            tuple(QA(bank[int(a)], YES if y else NO) for a, y in zip(q_row, y_row, strict=True))
            for q_row, y_row in zip(questions, yes, strict=True)
        ]
        return truth, histories

    return await thresholds_from_histories(
        provider, draw, labels=labels, horizon=horizon, alpha=alpha, concurrency=concurrency
    )


# Length k -> (true label per history, the histories of that length).
HistoryDraw = Callable[[int], tuple[IntArray, list[History]]]


async def thresholds_from_histories(
    provider: PosteriorProvider,
    draw: HistoryDraw,
    *,
    labels: Sequence[str],
    horizon: int,
    alpha: float,
    case: CaseContext = CASE,
    inquiry: str = INQUIRY,
    concurrency: int = 1,
) -> StepwiseThresholds:
    """Selection thresholds tau_0..tau_horizon from the histories ``draw(k)`` gives for each
    length k (whatever answers them: this game's player, another world's patients).

    Scores ``s = 1 - p(y | h)`` through ``provider.label_posteriors``, renormalised as the
    engine does; thresholds by the exact conformal rank (``StepwiseThresholds.from_scores``,
    scores kept so the bound's alpha_N knows n), each widened by ``SELECTION_TAU_SLACK``.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def scores(k: int) -> FloatArray:
        truth, histories = draw(k)

        async def chunk(start: int) -> FloatArray:
            async with gate:
                return np.asarray(
                    await provider.label_posteriors(
                        case=case,
                        histories=histories[start : start + _HISTORY_CHUNK],
                        inquiry=inquiry,
                        labels=labels,
                    ),
                    dtype=np.float64,
                )

        n = len(histories)
        parts = await asyncio.gather(*(chunk(s) for s in range(0, n, _HISTORY_CHUNK)))
        probs = np.concatenate(parts, axis=0)
        probs = probs / probs.sum(axis=1, keepdims=True)  # as the engine renormalises
        return np.asarray(1.0 - probs[np.arange(n), truth], dtype=np.float64)

    by_step = await asyncio.gather(*(scores(k) for k in range(horizon + 1)))
    raw = StepwiseThresholds.from_scores(by_step, alpha)
    widened = tuple(t if math.isinf(t) else t + SELECTION_TAU_SLACK for t in raw.thresholds)
    return StepwiseThresholds(alpha=raw.alpha, thresholds=widened, scores=raw.scores)


@dataclass(frozen=True, eq=False, slots=True)
class Traces:
    """Games played to the budget: posteriors per step and what the stop rules need."""

    truth: IntArray  # (G,)
    posteriors: FloatArray  # (G, T + 1, K); NaN after a game's last step
    n_steps: IntArray  # (G,): steps reached (last step + 1)
    no_gain: BoolArray  # (G, T + 1): C-IP/IP expected no improvement at step k
    asked: IntArray  # (G, T): bank index asked at step j, -1 if none
    answered_yes: BoolArray  # (G, T)

    def true_label_scores(self, step: int) -> FloatArray:
        """LAC scores 1 - p(true label | h_k) of the games that reached ``step``."""
        reached = self.n_steps > step
        p = self.posteriors[reached, step, self.truth[reached]]
        return np.asarray(1.0 - p, dtype=np.float64)


def _player_yes(
    oracle_yes: BoolArray, games: Games, g: IntArray, step: int, a: IntArray
) -> BoolArray:
    return np.asarray(oracle_yes[games.truth[g], a] ^ games.flip(g, step, a), dtype=np.bool_)


def _lexi_argmin(
    primary: FloatArray, secondary: FloatArray | None, eligible: BoolArray
) -> tuple[IntArray, BoolArray]:
    """Per row: the eligible column with the least primary, ties by secondary, then index.

    Returns the choice and whether primary ties remain (secondary None means "not computed").
    """
    p = np.where(eligible, primary, np.inf)
    ties = p == p.min(axis=1, keepdims=True)
    if secondary is not None:
        s = np.where(ties, secondary, np.inf)
        ties = s == s.min(axis=1, keepdims=True)
    return np.asarray(np.argmax(ties, axis=1), dtype=np.intp), ties.sum(axis=1) > 1


@dataclass(slots=True)
class _State:
    """A batch's beliefs: the running logits (linear models) or their parts (the others)."""

    logits: FloatArray  # (G, K): linear: the logits; else the raw log-likelihood sum
    informative: FloatArray  # (G,): answers so far (the ``length`` mode's N)
    hashes: UIntArray  # (G,): the history hash (``logit_noise``)


class _Beliefs:
    """The provider's posteriors, updated answer by answer, as the engine computes them.

    A linear model (no distortion, or one linear in the answer counts) keeps the logits and
    multiplies the posterior by the tempered likelihood to score an answer, as before. The
    ``length`` and ``logit_noise`` distortions keep the raw log-likelihood sum, the answer
    count and the history hash, and rebuild every posterior through
    ``Distortion.finish``: the same function of the counts the engine path evaluates.
    """

    def __init__(self, provider: TabularProvider) -> None:
        model = provider.model
        self.provider = provider
        self.distortion = provider.distortion
        log_yes, log_no = (
            (model.log_yes, model.log_no)
            if self.distortion is None
            else (self.distortion.log_yes, self.distortion.log_no)
        )
        # (A, 2, K): log P(answer | class) for "Yes." then "No.".
        self.log_answer = np.stack([log_yes, log_no], axis=1)
        self.linear = self.distortion is None or self.distortion.linear
        # Tempered, the factor that turns the current posterior into the one after an answer.
        self.likelihood = np.exp(self.log_answer / provider.temperature) if self.linear else None
        self.n_bank, self.n_labels = len(model.questions), len(model.labels)

    def start(self, size: int) -> _State:
        """The empty history for ``size`` games."""
        zeros = np.zeros(self.n_bank)
        first = self.provider.logits(zeros, zeros) if self.linear else np.zeros(self.n_labels)
        return _State(
            np.broadcast_to(first, (size, self.n_labels)).copy(),
            np.zeros(size),
            np.zeros(size, dtype=np.uint64),
        )

    def _posterior(
        self, loglik: FloatArray, informative: FloatArray, hashes: UIntArray
    ) -> FloatArray:
        assert self.distortion is not None
        logits = self.distortion.finish(self.provider.model.log_prior, loglik, informative, hashes)
        post = self.provider.posterior_from_logits(logits + self.provider.label_bias)
        return np.asarray(post / post.sum(axis=-1, keepdims=True), dtype=np.float64)

    def posterior(self, state: _State) -> FloatArray:
        """(G, K) the posterior now, renormalised as the engine does."""
        if self.linear:
            post = self.provider.posterior_from_logits(state.logits)
            return np.asarray(post / post.sum(axis=1, keepdims=True), dtype=np.float64)
        return self._posterior(state.logits, state.informative, state.hashes)

    def after_each_answer(self, state: _State, post: FloatArray) -> FloatArray:
        """(G, A, 2, K) the posterior after "Yes." then "No." to every bank question."""
        if self.likelihood is not None:
            after = post[:, None, None, :] * self.likelihood[None]
            after /= after.sum(axis=-1, keepdims=True)
            return np.asarray(after, dtype=np.float64)
        assert self.distortion is not None
        with np.errstate(over="ignore"):
            hashes = state.hashes[:, None, None] + self.distortion.keys[None]
        return self._posterior(
            state.logits[:, None, None, :] + self.log_answer[None],
            np.broadcast_to((state.informative + 1.0)[:, None, None], hashes.shape),
            hashes,
        )

    def update(
        self, state: _State, choice: IntArray, answer: IntArray, informative: BoolArray
    ) -> None:
        """Add answer (0 "Yes.", 1 "No.") to question ``choice`` of every game whose answer
        is ``informative`` (an "unsure" leaves the beliefs as they were)."""
        state.logits += np.where(informative[:, None], self.log_answer[choice, answer], 0.0)
        state.informative += informative
        if self.distortion is not None:
            keys = np.where(informative, self.distortion.keys[choice, answer], np.uint64(0))
            with np.errstate(over="ignore"):
                state.hashes += keys


def simulate_tabular(
    provider: TabularProvider,
    oracle_yes: BoolArray,
    games: Games,
    policy: BenchPolicy,
    *,
    alpha: float,
    max_questions: int,
    selection: StepThresholds | None,
    scoring: Scoring = Scoring(),
    chunk: int = 256,
    answers: npt.NDArray[np.int8] | None = None,
) -> Traces:
    """Batched replica of ``simulate_engine`` for a TabularProvider (same decisions).

    ``answers`` (G, A), when given, replaces the oracle-and-flips player: game g answers
    question a with ``answers[g, a]``, ``ANSWER_YES``, ``ANSWER_NO`` or ``ANSWER_UNKNOWN``
    ("unsure", which the table ignores); ``oracle_yes`` then only serves ``sampled`` draws.
    """
    model = provider.model
    n_games, n_labels, n_bank = len(games), len(model.labels), len(model.questions)
    steps = min(max_questions, n_bank)  # the bank runs out after n_bank questions
    if games.uniforms.shape[1] < max_questions:
        raise InvalidInputError("games were drawn for a smaller question budget")
    posteriors = np.full((n_games, max_questions + 1, n_labels), np.nan)
    no_gain = np.zeros((n_games, max_questions + 1), dtype=np.bool_)
    asked = np.full((n_games, max_questions), -1, dtype=np.intp)
    answered = np.zeros((n_games, max_questions), dtype=np.bool_)
    beliefs = _Beliefs(provider)
    engine_policy = policy.engine_policy
    for start in range(0, n_games, chunk):
        g = np.arange(start, min(start + chunk, n_games))
        rngs = [games.policy_rng(int(i)) for i in g] if engine_policy is Policy.RANDOM else []
        state = beliefs.start(g.size)
        unasked = np.ones((g.size, n_bank), dtype=np.bool_)
        rows = np.arange(g.size)
        for k in range(steps + 1):
            post = beliefs.posterior(state)
            posteriors[g, k] = post
            if k == steps:
                break
            if engine_policy is Policy.RANDOM:
                choice = np.array(
                    [
                        np.flatnonzero(unasked[r])[int(rng.integers(n_bank - k))]
                        for r, rng in enumerate(rngs)
                    ],
                    dtype=np.intp,
                )
            else:
                draws = None
                if scoring.sampled:
                    pairs = [
                        answer_draws(games, int(i), k, scoring.n_answers, oracle_yes) for i in g
                    ]
                    draws = (
                        np.stack([p[0] for p in pairs]),
                        np.stack([p[1] for p in pairs]),
                    )
                choice, stop = _score_step(
                    post,
                    beliefs.after_each_answer(state, post),
                    model.p_yes,
                    unasked,
                    engine_policy,
                    alpha,
                    k,
                    selection,
                    scoring,
                    draws,
                )
                no_gain[g, k] = stop
            if answers is None:
                yes = _player_yes(oracle_yes, games, g, k, choice)
                informative = np.ones(g.size, dtype=np.bool_)
            else:
                reply = answers[g, choice]
                yes, informative = reply == ANSWER_YES, reply != ANSWER_UNKNOWN
            asked[g, k] = choice
            answered[g, k] = yes
            beliefs.update(state, choice, np.where(yes, 0, 1), informative)
            unasked[rows, choice] = False
    return Traces(
        truth=games.truth.copy(),
        posteriors=posteriors,
        n_steps=np.full(n_games, steps + 1, dtype=np.intp),
        no_gain=no_gain,
        asked=asked,
        answered_yes=answered,
    )


def _entropy(probs: FloatArray) -> FloatArray:
    """``app.engine.entropy`` (same floats) with fewer temporaries."""
    logs = np.maximum(probs, PROB_FLOOR)
    np.log(logs, out=logs)
    logs *= probs
    return np.asarray(-logs.sum(axis=-1), dtype=np.float64)


def _candidate_answers(
    post: FloatArray,
    after: FloatArray,
    p_yes: FloatArray,
    draws: tuple[IntArray, BoolArray] | None,
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Every candidate's answers as the engine scores them: (G, A, M, K) posteriors after
    each answer, (G, A, M) weights and (G, A, M) draw labels (-1: none).

    ``llm``: M = 2, "Yes." with P(yes | h) under the current posterior, then "No."
    (``TabularProvider.simulate_answers``). ``sampled``: the step's m draws, weights 1/m.
    """
    if draws is None:
        w_yes = np.einsum("gk,ka->ga", post, p_yes)  # no BLAS: its threads thrash small products
        w_no = 1.0 - w_yes
        total = w_yes + w_no
        weights = np.stack([w_yes / total, w_no / total], axis=-1)  # (G, A, 2)
        return after, weights, np.full(weights.shape, -1, dtype=np.intp)
    drawn, yes = draws  # (G, M), (G, M, A)
    index = np.where(yes, 0, 1).transpose(0, 2, 1)  # (G, A, M): 0 = "Yes.", 1 = "No."
    probs = np.take_along_axis(after, index[..., None], axis=2)  # (G, A, M, K)
    weights = np.full(index.shape, 1.0 / drawn.shape[1])
    labels = np.broadcast_to(drawn[:, None, :], index.shape).astype(np.intp)
    return probs, weights, labels


def _score_step(
    post: FloatArray,
    after: FloatArray,
    p_yes: FloatArray,
    unasked: BoolArray,
    policy: Policy,
    alpha: float,
    step: int,
    selection: StepThresholds | None,
    scoring: Scoring,
    draws: tuple[IntArray, BoolArray] | None,
) -> tuple[IntArray, BoolArray]:
    """C-IP/IP choice for a batch at one step, and whether no candidate improves things.

    ``after`` (G, A, 2, K) is the posterior after "Yes." and "No." to every bank question
    (``_Beliefs.after_each_answer``). Candidates are scored by the
    engine's own ``score_candidates`` and ranked with its rounding; "ask nothing" is the
    present posterior once per answer of the best candidate, by the same rule (tau_{k+1}).
    """
    n_g, n_a = unasked.shape
    probs, weights, labels = _candidate_answers(post, after, p_yes, draws)
    n_m, n_k = probs.shape[2], probs.shape[3]
    next_tau = None if selection is None else selection.threshold_for_step(step + 1)
    alpha_n = finite_sample_alpha(alpha, selection, step + 1)
    scored = score_candidates(
        probs.reshape(n_g * n_a, n_m, n_k),
        weights.reshape(n_g * n_a, n_m),
        next_tau,
        alpha,
        answer_labels=labels.reshape(n_g * n_a, n_m),
        alpha_n=alpha_n,
    )
    exp_entropy = scored.expected_entropy.reshape(n_g, n_a)
    bound_objective = scoring.objective is Objective.ENTROPY_BOUND
    first = scored.entropy_bound if bound_objective else scored.expected_set_size
    objective = first.reshape(n_g, n_a)
    ent_key = np.round(exp_entropy, _ENTROPY_DECIMALS)
    size_key = np.round(scored.expected_set_size.reshape(n_g, n_a), _SIZE_DECIMALS)
    if policy is Policy.CIP:
        choice, _ = _lexi_argmin(np.round(objective, _SIZE_DECIMALS), ent_key, unasked)
    else:  # IP: expected entropy, ties by expected set size
        choice, _ = _lexi_argmin(ent_key, size_key, unasked)
    rows = np.arange(n_g)
    stay = score_candidates(
        np.broadcast_to(post[:, None, :], (n_g, n_m, n_k)),
        weights[rows, choice],
        next_tau,
        alpha,
        answer_labels=labels[rows, choice],
        alpha_n=alpha_n,
    )
    stay_objective = stay.entropy_bound if bound_objective else stay.expected_set_size
    gain = improves(
        best=objective[rows, choice],
        best_entropy=exp_entropy[rows, choice],
        current=stay_objective,
        current_entropy=_entropy(post),
        entropy_only=policy is not Policy.CIP,
        tol=_GAIN_TOL,
    )
    return choice, ~gain


def _player_draws(
    games: Games, i: int, m: int, oracle_yes: BoolArray, labels: Sequence[str], bank: Sequence[str]
) -> DrawFn:
    """Game i's ``sampled`` draws for the engine: step -> m AnswerDraws (``answer_draws``)."""
    attribute = {normalize_question(q): a for a, q in enumerate(bank)}

    def draw(step: int) -> list[AnswerDraw]:
        drawn, yes = answer_draws(games, i, step, m, oracle_yes)

        def reply(row: BoolArray) -> Callable[[str], Awaitable[str]]:
            async def answer(question: str) -> str:
                return YES if row[attribute[normalize_question(question)]] else NO

            return answer

        return [AnswerDraw(label=labels[int(y)], answer=reply(yes[j])) for j, y in enumerate(drawn)]

    return draw


async def simulate_engine(
    provider: PosteriorProvider,
    *,
    labels: Sequence[str],
    bank: Sequence[str],
    oracle_yes: BoolArray,
    games: Games,
    policy: BenchPolicy,
    alpha: float,
    max_questions: int,
    selection: StepThresholds | None,
    scoring: Scoring = Scoring(),
    concurrency: int = 1,
    max_candidates: int | None = None,
) -> Traces:
    """Play every game through ``run_interview`` (stop rules off), ``concurrency`` at once.

    ``max_candidates``: C-IP/IP score that many unasked bank questions per turn, drawn from
    the game's policy stream (the engine's ``max_candidates``), instead of the whole bank.
    """
    attribute = {normalize_question(q): a for a, q in enumerate(bank)}
    config = InterviewConfig(
        policy=policy.engine_policy,
        alpha=alpha,
        max_questions=max_questions,
        question_source=QuestionSource.BANK,
        bank=tuple(bank),
        n_answers=scoring.n_answers if scoring.sampled else 2,
        objective=scoring.objective,
        answer_source=scoring.answer_source,
        max_candidates=max_candidates,
        stop_on_singleton=False,
        stop_on_no_gain=False,
        explain_baselines=False,
    )
    n_games, n_labels = len(games), len(labels)
    posteriors = np.full((n_games, max_questions + 1, n_labels), np.nan)
    no_gain = np.zeros((n_games, max_questions + 1), dtype=np.bool_)
    asked = np.full((n_games, max_questions), -1, dtype=np.intp)
    answered = np.zeros((n_games, max_questions), dtype=np.bool_)
    n_steps = np.zeros(n_games, dtype=np.intp)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def play(i: int) -> None:
        step = 0

        async def answer(question: str) -> str:
            nonlocal step
            a = attribute[normalize_question(question)]
            flip = games.flip(np.array([i]), step, np.array([a]))[0]
            yes = bool(oracle_yes[games.truth[i], a] ^ flip)
            asked[i, step], answered[i, step] = a, yes
            step += 1
            return YES if yes else NO

        draws = (
            _player_draws(games, i, scoring.n_answers, oracle_yes, labels, bank)
            if scoring.sampled
            else None
        )
        async with gate:
            trajectory = await run_interview(
                provider=provider,
                case=CASE,
                inquiry=INQUIRY,
                labels=labels,
                config=config,
                thresholds=None,
                answer_fn=answer,
                rng=games.policy_rng(i),
                selection_thresholds=selection,
                draws=draws,
            )
        n_steps[i] = len(trajectory.turns)
        posteriors[i, : n_steps[i]] = trajectory.posteriors
        for turn in trajectory.turns:
            # Recorded, not acted on: the trace runs to the budget, stops are read post hoc.
            no_gain[i, turn.step] = turn.gain is False

    await asyncio.gather(*(play(i) for i in range(n_games)))
    return Traces(
        truth=games.truth.copy(),
        posteriors=posteriors,
        n_steps=n_steps,
        no_gain=no_gain,
        asked=asked,
        answered_yes=answered,
    )
