"""Seeded games, and the batched replica against the engine itself."""

from __future__ import annotations

import numpy as np
import pytest

from app.conformal import PerStepCalibration
from app.conformal.rank import lac_threshold
from app.engine import (
    AnswerSource,
    InterviewConfig,
    Objective,
    QuestionSource,
    StepThresholds,
    StepwiseThresholds,
    run_interview,
)
from app.engine.types import QA
from app.research.twentyq import (
    BenchPolicy,
    make_game,
    make_games,
    simulate_engine,
    simulate_tabular,
)
from app.research.twentyq.bench import records_from_traces
from app.research.twentyq.simulate import (
    CASE,
    INQUIRY,
    SELECTION_TAU_SLACK,
    Games,
    Scoring,
    answer_draws,
    random_histories,
    selection_thresholds,
)
from app.worlds.tabular import NO, YES, Miscalibration, Mode, TabularProvider, build_distortion

GAME = make_game(20)
BUDGET = 6


def test_games_are_seeded_and_splits_do_not_share_games() -> None:
    a = make_games(n=400, split="test", seed=1, n_labels=20, max_questions=20, noise=0.1)
    b = make_games(n=400, split="test", seed=1, n_labels=20, max_questions=20, noise=0.1)
    c = make_games(n=400, split="calibration", seed=1, n_labels=20, max_questions=20, noise=0.1)
    assert (a.truth == b.truth).all() and (a.flips == b.flips).all()
    assert (a.truth != c.truth).mean() > 0.8
    assert a.flips.mean() == pytest.approx(0.1, abs=0.01)
    quiet = make_games(n=50, split="test", seed=1, n_labels=20, max_questions=20, noise=0.0)
    assert not quiet.flips.any() and (quiet.truth == a.truth[:50]).all()


async def _selection(
    provider: TabularProvider, n: int = 200, extra_noise: np.ndarray | None = None
) -> StepwiseThresholds:
    return await selection_thresholds(
        provider,
        labels=GAME.labels,
        bank=GAME.questions,
        oracle_yes=GAME.oracle_yes,
        n=n,
        horizon=BUDGET + 1,
        seed=3,
        noise=0.2,
        alpha=0.1,
        extra_noise=extra_noise,
    )


BOUND_LLM = Scoring(Objective.ENTROPY_BOUND, AnswerSource.LLM)
SIZE_SAMPLED = Scoring(Objective.SET_SIZE, AnswerSource.SAMPLED, 4)
BOUND_SAMPLED = Scoring(Objective.ENTROPY_BOUND, AnswerSource.SAMPLED, 4)
SCORED = (BenchPolicy.CIP, BenchPolicy.CIP_NOMINAL, BenchPolicy.IP)


@pytest.mark.parametrize(
    ("temperature", "policy", "scoring"),
    [(1.0, p, Scoring()) for p in BenchPolicy]
    + [(0.5, BenchPolicy.CIP, Scoring()), (0.5, BenchPolicy.IP, Scoring())]
    + [(1.0, p, s) for s in (BOUND_LLM, SIZE_SAMPLED, BOUND_SAMPLED) for p in SCORED]
    + [(1.0, BenchPolicy.RANDOM, BOUND_SAMPLED), (0.5, BenchPolicy.CIP, BOUND_SAMPLED)]
    + [(2.0, BenchPolicy.CIP, Scoring(Objective.ENTROPY_BOUND, AnswerSource.SAMPLED, 3))],
    ids=str,
)
async def test_the_batched_replica_makes_the_engines_decisions(
    temperature: float, policy: BenchPolicy, scoring: Scoring
) -> None:
    provider = TabularProvider(GAME.model, temperature=temperature)
    selection = await _selection(provider) if policy.calibrated_selection else None
    games = make_games(n=4, split="test", seed=3, n_labels=20, max_questions=BUDGET, noise=0.2)
    fast = simulate_tabular(
        provider,
        GAME.oracle_yes,
        games,
        policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=selection,
        scoring=scoring,
    )
    engine = await simulate_engine(
        provider,
        labels=GAME.labels,
        bank=GAME.questions,
        oracle_yes=GAME.oracle_yes,
        games=games,
        policy=policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=selection,
        scoring=scoring,
    )
    np.testing.assert_array_equal(fast.asked, engine.asked)
    np.testing.assert_array_equal(fast.answered_yes, engine.answered_yes)
    np.testing.assert_array_equal(fast.no_gain, engine.no_gain)
    np.testing.assert_array_equal(fast.n_steps, engine.n_steps)
    np.testing.assert_allclose(fast.posteriors, engine.posteriors, rtol=0, atol=1e-12)
    # The player answered the oracle's answer, flipped where the game says so.
    for i in range(len(games)):
        oracle = GAME.oracle_yes[games.truth[i], fast.asked[i]]
        np.testing.assert_array_equal(fast.answered_yes[i], oracle ^ games.flips[i])


async def _assert_same_decisions(
    provider: TabularProvider,
    policy: BenchPolicy,
    scoring: Scoring,
    games: Games,
    selection: StepThresholds | None,
) -> None:
    fast = simulate_tabular(
        provider,
        GAME.oracle_yes,
        games,
        policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=selection,
        scoring=scoring,
    )
    engine = await simulate_engine(
        provider,
        labels=GAME.labels,
        bank=GAME.questions,
        oracle_yes=GAME.oracle_yes,
        games=games,
        policy=policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=selection,
        scoring=scoring,
    )
    np.testing.assert_array_equal(fast.asked, engine.asked)
    np.testing.assert_array_equal(fast.answered_yes, engine.answered_yes)
    np.testing.assert_array_equal(fast.no_gain, engine.no_gain)
    np.testing.assert_allclose(fast.posteriors, engine.posteriors, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("mode", "policy", "scoring"),
    # cip-nominal shares cip's scoring path (without selection thresholds); random only
    # needs checking where the player changes.
    [(m, p, Scoring()) for m in Mode for p in (BenchPolicy.CIP, BenchPolicy.IP)]
    + [(m, BenchPolicy.CIP, BOUND_SAMPLED) for m in Mode]
    + [(Mode.OVERCONFIDENT_ATTRS, BenchPolicy.RANDOM, Scoring())]
    + [(Mode.LOGIT_NOISE, BenchPolicy.CIP_NOMINAL, Scoring())],
    ids=str,
)
async def test_the_replica_makes_the_engines_decisions_under_every_miscalibration(
    mode: Mode, policy: BenchPolicy, scoring: Scoring
) -> None:
    distortion = build_distortion(
        GAME.model, Miscalibration(mode, 2.0), player_yes=GAME.oracle_yes, seed=3
    )
    provider = TabularProvider(GAME.model, temperature=0.8, distortion=distortion)
    extra = distortion.player_extra_noise
    selection = (
        await _selection(provider, extra_noise=extra) if policy.calibrated_selection else None
    )
    games = make_games(n=4, split="test", seed=3, n_labels=20, max_questions=BUDGET, noise=0.2)
    await _assert_same_decisions(
        provider, policy, scoring, games.with_extra_noise(extra), selection
    )


@pytest.mark.parametrize("policy", [BenchPolicy.CIP, BenchPolicy.CIP_NOMINAL, BenchPolicy.IP])
async def test_post_hoc_stops_match_the_engines_serving_stop_rules(policy: BenchPolicy) -> None:
    """Stops read off full-length traces = run_interview with the serving stop rules on."""
    provider = TabularProvider(GAME.model)
    selection = await _selection(provider) if policy.calibrated_selection else None
    cal_games = make_games(
        n=120, split="calibration", seed=5, n_labels=20, max_questions=BUDGET, noise=0.05
    )
    cal = simulate_tabular(
        provider,
        GAME.oracle_yes,
        cal_games,
        policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=None,
    )

    calibration = PerStepCalibration.from_scores(
        [cal.true_label_scores(k) for k in range(BUDGET + 1)], 0.1
    )
    display = StepwiseThresholds(alpha=0.1, thresholds=tuple(calibration.thresholds))
    games = make_games(n=6, split="test", seed=5, n_labels=20, max_questions=BUDGET, noise=0.05)
    traces = simulate_tabular(
        provider,
        GAME.oracle_yes,
        games,
        policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=selection,
    )
    records = records_from_traces(policy, traces, calibration, max_questions=BUDGET)
    config = InterviewConfig(
        policy=policy.engine_policy,
        alpha=0.1,
        max_questions=BUDGET,
        question_source=QuestionSource.BANK,
        bank=GAME.questions,
        n_answers=2,
    )
    for i, record in enumerate(records):
        step = 0

        async def answer(question: str, i: int = i) -> str:
            nonlocal step
            a = GAME.questions.index(question)
            yes = bool(GAME.oracle_yes[games.truth[i], a] ^ games.flips[i, step])
            step += 1
            return YES if yes else NO

        trajectory = await run_interview(
            provider=provider,
            case=CASE,
            inquiry=INQUIRY,
            labels=GAME.labels,
            config=config,
            thresholds=display,
            answer_fn=answer,
            rng=games.policy_rng(i),
            selection_thresholds=selection,
        )
        assert len(trajectory.turns) - 1 == record.stop_step
        assert trajectory.stop_reason.value == record.stop_reason
        final = record.steps[record.stop_step]
        assert trajectory.final.set_size == final.set_size
        assert (trajectory.final.top_label == GAME.labels[games.truth[i]]) == final.correct


def test_sampled_draws_are_seeded_per_game_and_step_and_answer_like_the_player() -> None:
    games = make_games(n=3, split="test", seed=4, n_labels=20, max_questions=5, noise=0.1)
    labels, yes = answer_draws(games, 1, 2, 4, GAME.oracle_yes)
    again, yes_again = answer_draws(games, 1, 2, 4, GAME.oracle_yes)
    assert (labels == again).all() and (yes == yes_again).all() and yes.shape == (4, 85)
    other, _ = answer_draws(games, 1, 3, 400, GAME.oracle_yes)
    assert len(set(other.tolist())) == 20  # uniform over the labels (400 draws)
    # The player's mechanism: the oracle's answer for the draw's label, flipped ~10%.
    many, many_yes = answer_draws(games, 0, 0, 2000, GAME.oracle_yes)
    flipped = (many_yes != GAME.oracle_yes[many]).mean()
    assert 0.095 < flipped < 0.105  # 170,000 answers: sd 0.0007


def test_random_histories_are_distinct_uniform_questions_answered_by_the_player() -> None:
    labels, questions, yes = random_histories(
        n=3000, k=5, seed=1, oracle_yes=GAME.oracle_yes, noise=0.0
    )
    assert all(len(set(row)) == 5 for row in questions.tolist())
    np.testing.assert_array_equal(yes, GAME.oracle_yes[labels[:, None], questions])
    counts = np.bincount(questions.ravel(), minlength=85)
    assert counts.min() > 100 and counts.max() < 260  # 15,000 picks, 176 each expected
    other, _, _ = random_histories(n=3000, k=6, seed=1, oracle_yes=GAME.oracle_yes, noise=0)
    assert (other != labels).mean() > 0.8  # each length is its own sample


async def test_selection_thresholds_are_the_conformal_rank_of_random_history_scores() -> None:
    provider = TabularProvider(GAME.model)
    horizon = 20

    async def select(noise: float) -> StepwiseThresholds:
        return await selection_thresholds(
            provider,
            labels=GAME.labels,
            bank=GAME.questions,
            oracle_yes=GAME.oracle_yes,
            n=300,
            horizon=horizon,
            seed=3,
            noise=noise,
            alpha=0.1,
        )

    selection = await select(0.05)
    assert selection.max_step == horizon and selection.scores is not None
    for k in (0, 3, horizon):
        truth, questions, yes = random_histories(
            n=300, k=k, seed=3, oracle_yes=GAME.oracle_yes, noise=0.05
        )
        post = provider.posteriors(
            [
                tuple(QA(GAME.questions[a], YES if y else NO) for a, y in zip(q, ys, strict=True))
                for q, ys in zip(questions.tolist(), yes.tolist(), strict=True)
            ]
        )
        scores = 1.0 - post[np.arange(300), truth]
        np.testing.assert_allclose(np.sort(scores), selection.scores[k], atol=1e-12)
        tau = lac_threshold(scores, 0.1) + SELECTION_TAU_SLACK
        assert selection.threshold_for_step(k) == pytest.approx(tau, abs=1e-12)
    # Step 0 is the prior (every score 1 - 1/20); longer random histories inform.
    assert selection.threshold_for_step(0) == pytest.approx(0.95 + SELECTION_TAU_SLACK)
    assert selection.threshold_for_step(horizon) < selection.threshold_for_step(0) - 0.03
    assert np.median(selection.scores[horizon]) < np.median(selection.scores[0]) - 0.5
    # A player who lies 20% of the time pushes the true label down as answers pile up: the
    # random-history threshold then grows with k (the sets C-IP counts get larger).
    noisy = await select(0.2)
    assert noisy.threshold_for_step(horizon) > noisy.threshold_for_step(0) + 0.04
