"""The engine's progress callback: each stage's counts, in order, from the real scoring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.engine import InterviewConfig, Policy, Stage, TurnProgress, plan_turn
from app.engine.progress import scoring_progress_var
from app.engine.types import CaseContext, History, WeightedAnswer
from tests.engine.scripted import CASE, INQUIRY, LABELS, ScriptedProvider

QUESTIONS = ["q1", "q2", "q3"]


class ChunkedProvider(ScriptedProvider):
    """Scores histories two at a time, telling the engine after each part (as the gateway)."""

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        tell = scoring_progress_var.get()
        assert tell is not None
        for done in range(2, len(histories) + 2, 2):
            tell(min(done, len(histories)), len(histories))
        return await super().label_posteriors(
            case=case, histories=histories, inquiry=inquiry, labels=labels
        )


def _provider() -> ChunkedProvider:
    return ChunkedProvider(
        table={(): [0.4, 0.3, 0.2, 0.1]},
        default_answers=(WeightedAnswer("yes", 0.5), WeightedAnswer("no", 0.5)),
        proposals=QUESTIONS,
    )


async def test_progress_counts_every_stage_in_order() -> None:
    seen: list[TurnProgress] = []
    outcome = await plan_turn(
        provider=_provider(),
        case=CASE,
        history=(),
        inquiry=INQUIRY,
        labels=LABELS,
        config=InterviewConfig(policy=Policy.CIP, n_questions=3, n_answers=2, max_questions=3),
        thresholds=None,
        rng=np.random.default_rng(0),
        progress=seen.append,
    )
    assert outcome.posterior_evaluations == 7  # the bare history and 3 x 2 answers
    stages = [p.stage for p in seen]
    assert stages == sorted(stages, key=list(Stage).index)
    assert [(p.done, p.total) for p in seen if p.stage is Stage.ANSWERS] == [
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    scoring = [(p.done, p.total) for p in seen if p.stage is Stage.SCORING]
    # 7 histories in parts of 2 -> 6 candidate answers: 0, 1 (2/7), 3 (4/7), 5 (6/7), 6.
    assert scoring == [(0, 6), (1, 6), (3, 6), (5, 6), (6, 6)]
    assert seen[-1].message == "scored 6 of 6 candidate answers"
    assert len(set(seen)) == len(seen)  # never the same count twice
    assert scoring_progress_var.get() is None  # set around the scoring call only


async def test_no_callback_no_change() -> None:
    kwargs = dict(
        case=CASE,
        history=(),
        inquiry=INQUIRY,
        labels=LABELS,
        config=InterviewConfig(policy=Policy.CIP, n_questions=3, n_answers=2, max_questions=3),
        thresholds=None,
    )
    quiet = await plan_turn(provider=_provider(), rng=np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]
    told = await plan_turn(
        provider=_provider(),
        rng=np.random.default_rng(0),
        progress=lambda _: None,
        **kwargs,  # type: ignore[arg-type]
    )
    assert quiet == told
