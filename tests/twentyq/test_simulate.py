"""Seeded games, and the batched replica against the engine itself."""

from __future__ import annotations

import numpy as np
import pytest

from app.conformal import PerStepCalibration
from app.engine import InterviewConfig, QuestionSource, StepwiseThresholds, run_interview
from app.tabular import NO, YES, TabularProvider
from app.twentyq import BenchPolicy, make_game, make_games, simulate_engine, simulate_tabular
from app.twentyq.bench import records_from_traces
from app.twentyq.simulate import CASE, INQUIRY

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


def _selection(provider: TabularProvider) -> StepwiseThresholds:
    pilot_games = make_games(
        n=60, split="selection", seed=3, n_labels=20, max_questions=BUDGET, noise=0.2
    )
    pilot = simulate_tabular(
        provider,
        GAME.oracle_yes,
        pilot_games,
        BenchPolicy.CIP_NOMINAL,
        alpha=0.1,
        max_questions=BUDGET,
        selection=None,
    )
    return StepwiseThresholds.from_scores(
        [pilot.true_label_scores(k) for k in range(BUDGET + 1)], 0.1
    )


@pytest.mark.parametrize(
    ("temperature", "policy"),
    [(1.0, p) for p in BenchPolicy] + [(0.5, BenchPolicy.CIP), (0.5, BenchPolicy.IP)],
)
async def test_the_batched_replica_makes_the_engines_decisions(
    temperature: float, policy: BenchPolicy
) -> None:
    provider = TabularProvider(GAME.model, temperature=temperature)
    selection = _selection(provider) if policy.calibrated_selection else None
    games = make_games(n=4, split="test", seed=3, n_labels=20, max_questions=BUDGET, noise=0.2)
    fast = simulate_tabular(
        provider,
        GAME.oracle_yes,
        games,
        policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=selection,
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


@pytest.mark.parametrize("policy", [BenchPolicy.CIP, BenchPolicy.CIP_NOMINAL, BenchPolicy.IP])
async def test_post_hoc_stops_match_the_engines_serving_stop_rules(policy: BenchPolicy) -> None:
    """Stops read off full-length traces = run_interview with the serving stop rules on."""
    provider = TabularProvider(GAME.model)
    selection = _selection(provider) if policy.calibrated_selection else None
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
