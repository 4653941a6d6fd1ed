"""Seeded 20 Questions games and two ways to play them: the engine, or a batched replica.

A game is a true animal and a noisy player: the player answers each question with the
oracle's answer for that animal, flipped with probability ``noise`` (one seeded draw per
step). Game i of a split draws its animal, its player's flips and the policy's random
stream from ``SeedSequence([seed, split, i])``, so splits never share games and every
policy plays the same test games (paired comparisons).

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
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from app.engine import (
    InterviewConfig,
    Policy,
    QuestionSource,
    StepThresholds,
    improves,
    normalize_question,
    objective_set_size,
    run_interview,
)
from app.engine.scoring import NOMINAL_MASS_TOL, PROB_FLOOR
from app.engine.types import CaseContext, PosteriorProvider
from app.errors import InvalidInputError
from app.tabular import NO, YES, TabularProvider

__all__ = [
    "SPLITS",
    "BenchPolicy",
    "Games",
    "Traces",
    "make_games",
    "simulate_engine",
    "simulate_tabular",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

SPLITS = {"selection": 0, "calibration": 1, "test": 2}
CASE = CaseContext(summary="Think of an animal; I will guess it with yes/no questions.")
INQUIRY = "Which animal is it?"

# The engine's decision constants (app.engine.interview): expected sizes tie at 9 decimals,
# expected entropies at 12, and an improvement below 1e-9 is no gain.
_SIZE_DECIMALS = 9
_ENTROPY_DECIMALS = 12
_GAIN_TOL = 1e-9


class BenchPolicy(StrEnum):
    """Question policies of the bench."""

    CIP = "cip"  # C-IP with calibrated sets in its objective (thresholds from a pilot split)
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
        """Whether its objective uses selection thresholds from a pilot calibration."""
        return self is BenchPolicy.CIP


@dataclass(frozen=True, eq=False, slots=True)
class Games:
    """A split's games: true label index, the player's flips per step, policy streams."""

    split: str
    seed: int
    truth: IntArray  # (G,)
    flips: BoolArray  # (G, T): the player flips its answer at step j
    policy_seeds: tuple[np.random.SeedSequence, ...]

    def __len__(self) -> int:
        return int(self.truth.size)

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
    flips = np.empty((n, max_questions), dtype=np.bool_)
    policy_seeds = []
    for i in range(n):
        animal, player, policy = np.random.SeedSequence([seed, SPLITS[split], i]).spawn(3)
        truth[i] = np.random.default_rng(animal).integers(n_labels)
        flips[i] = np.random.default_rng(player).random(max_questions) < noise
        policy_seeds.append(policy)
    return Games(split, seed, truth, flips, tuple(policy_seeds))


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
    return np.asarray(oracle_yes[games.truth[g], a] ^ games.flips[g, step], dtype=np.bool_)


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


def simulate_tabular(
    provider: TabularProvider,
    oracle_yes: BoolArray,
    games: Games,
    policy: BenchPolicy,
    *,
    alpha: float,
    max_questions: int,
    selection: StepThresholds | None,
    chunk: int = 512,
) -> Traces:
    """Batched replica of ``simulate_engine`` for a TabularProvider (same decisions)."""
    model = provider.model
    n_games, n_labels, n_bank = len(games), len(model.labels), len(model.questions)
    steps = min(max_questions, n_bank)  # the bank runs out after n_bank questions
    if games.flips.shape[1] < max_questions:
        raise InvalidInputError("games were drawn for a smaller question budget")
    posteriors = np.full((n_games, max_questions + 1, n_labels), np.nan)
    no_gain = np.zeros((n_games, max_questions + 1), dtype=np.bool_)
    asked = np.full((n_games, max_questions), -1, dtype=np.intp)
    answered = np.zeros((n_games, max_questions), dtype=np.bool_)
    # (A, 2, K): log P(answer | class) for "Yes." then "No."; tempered, the factor that turns
    # the current posterior into the posterior after that answer.
    log_answer = np.stack([model.log_yes, model.log_no], axis=1)
    likelihood = np.exp(log_answer / provider.temperature)
    engine_policy = policy.engine_policy
    for start in range(0, n_games, chunk):
        g = np.arange(start, min(start + chunk, n_games))
        rngs = [games.policy_rng(int(i)) for i in g] if engine_policy is Policy.RANDOM else []
        logits = np.broadcast_to(
            provider.logits(np.zeros(n_bank), np.zeros(n_bank)), (g.size, n_labels)
        ).copy()
        unasked = np.ones((g.size, n_bank), dtype=np.bool_)
        rows = np.arange(g.size)
        for k in range(steps + 1):
            post = provider.posterior_from_logits(logits)
            post = post / post.sum(axis=1, keepdims=True)  # as the engine renormalises
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
                choice, stop = _score_step(
                    post, likelihood, model.p_yes, unasked, engine_policy, alpha, k, selection
                )
                no_gain[g, k] = stop
            yes = _player_yes(oracle_yes, games, g, k, choice)
            asked[g, k] = choice
            answered[g, k] = yes
            logits += log_answer[choice, np.where(yes, 0, 1)]
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


def _set_sizes(probs: FloatArray, threshold: float | None, alpha: float) -> IntArray:
    """``objective_set_size(probs, threshold, alpha)``, without the argsort when nominal.

    The nominal set is a prefix of the labels sorted by decreasing probability, so its size
    needs the sorted values only (same float cumsum as the engine, hence the same sizes).
    """
    if threshold is not None:
        return objective_set_size(probs, threshold, alpha)
    sorted_p = -np.sort(-probs, axis=-1)
    cumulative = np.cumsum(sorted_p, axis=-1)
    needed = cumulative[..., :-1] < (1.0 - alpha) - NOMINAL_MASS_TOL
    return np.asarray(1 + needed.sum(axis=-1), dtype=np.intp)


def _score_step(
    post: FloatArray,
    likelihood: FloatArray,
    p_yes: FloatArray,
    unasked: BoolArray,
    policy: Policy,
    alpha: float,
    step: int,
    selection: StepThresholds | None,
) -> tuple[IntArray, BoolArray]:
    """C-IP/IP choice for a batch at one step, and whether no candidate improves things.

    ``likelihood`` (A, 2, K) is ``P(answer | class) ** (1 / T)``: the tempered posterior
    after an answer is the current one times it, renormalised.
    """
    w_yes = np.einsum("gk,ka->ga", post, p_yes)  # no BLAS: its threads thrash small products
    w_no = 1.0 - w_yes
    total = w_yes + w_no
    weights = np.stack([w_yes / total, w_no / total], axis=-1)  # (G, A, 2)
    after = post[:, None, None, :] * likelihood[None]
    after /= after.sum(axis=-1, keepdims=True)  # (G, A, 2, K)
    next_tau = None if selection is None else selection.threshold_for_step(step + 1)
    exp_entropy = np.sum(weights * _entropy(after), axis=-1)
    ent_key = np.round(exp_entropy, _ENTROPY_DECIMALS)

    def expected_size(rows: IntArray) -> FloatArray:
        sizes = _set_sizes(after[rows], next_tau, alpha)
        return np.asarray(np.sum(weights[rows] * sizes, axis=-1), dtype=np.float64)

    if policy is Policy.CIP:
        exp_size = expected_size(np.arange(post.shape[0]))
        choice, _ = _lexi_argmin(np.round(exp_size, _SIZE_DECIMALS), ent_key, unasked)
        # "Ask nothing" scored by the same rule as the candidates (tau_{k+1}).
        current_size = _set_sizes(post, next_tau, alpha).astype(np.float64)
        best_size = np.take_along_axis(exp_size, choice[:, None], axis=1)[:, 0]
    else:
        choice, tied = _lexi_argmin(ent_key, None, unasked)
        tied_rows = np.flatnonzero(tied)
        if tied_rows.size:  # entropy ties (rare): the engine breaks them by expected size
            size_key = np.round(expected_size(tied_rows), _SIZE_DECIMALS)
            eligible = unasked[tied_rows] & (
                np.where(unasked[tied_rows], ent_key[tied_rows], np.inf)
                == ent_key[tied_rows, choice[tied_rows]][:, None]
            )
            choice[tied_rows], _ = _lexi_argmin(size_key, None, eligible)
        current_size = best_size = np.zeros(post.shape[0])
    best_entropy = np.take_along_axis(exp_entropy, choice[:, None], axis=1)[:, 0]
    gain = improves(
        best=best_size,
        best_entropy=best_entropy,
        current=current_size,
        entropy_only=policy is not Policy.CIP,
        current_entropy=_entropy(post),
        tol=_GAIN_TOL,
    )
    return choice, ~gain


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
        n_answers=2,
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
            yes = bool(oracle_yes[games.truth[i], a] ^ games.flips[i, step])
            asked[i, step], answered[i, step] = a, yes
            step += 1
            return YES if yes else NO

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
