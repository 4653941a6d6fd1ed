"""simulate_tabular with per-game answers: the posteriors are the table's for the history,
"unsure" answers included (ignored), and a world's patients play the same games every time."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.types import QA
from app.research.kb import split_answers
from app.research.twentyq.simulate import BenchPolicy, make_games, simulate_tabular
from app.worlds.kb.hpo import HpoKb
from app.worlds.kb.world import UNSURE, PatientConfig, WorldConfig, build_world
from app.worlds.tabular import ANSWER_NO, ANSWER_UNKNOWN, ANSWER_YES, NO, YES, TabularProvider

REPLY = {ANSWER_YES: YES, ANSWER_NO: NO, ANSWER_UNKNOWN: UNSURE}


@pytest.mark.parametrize("policy", [BenchPolicy.IP, BenchPolicy.CIP_NOMINAL, BenchPolicy.RANDOM])
def test_replica_posteriors_are_the_table_posteriors_of_the_answered_history(
    hpo: HpoKb, policy: BenchPolicy
) -> None:
    world = build_world(hpo, WorldConfig(candidates=10, seed=3, max_terms=60))
    provider = TabularProvider(world.model)
    games = make_games(n=40, split="test", seed=5, n_labels=10, max_questions=8, noise=0.0)
    answers = split_answers(world, games, PatientConfig(unsure_rate=0.3), seed=5)
    traces = simulate_tabular(
        provider,
        world.annotated,
        games,
        policy,
        alpha=0.1,
        max_questions=8,
        selection=None,
        answers=answers,
    )
    bank = world.model.questions
    unsure_seen = 0
    for g in range(len(games)):
        history = tuple(QA(bank[a], REPLY[int(answers[g, a])]) for a in traces.asked[g] if a >= 0)
        unsure_seen += sum(qa.answer == UNSURE for qa in history)
        expected = provider.posteriors([history])[0]
        np.testing.assert_allclose(traces.posteriors[g, -1], expected, rtol=1e-9, atol=1e-12)
        assert len(set(traces.asked[g].tolist())) == 8  # distinct questions
    assert unsure_seen > 0  # the check covered unsure answers
