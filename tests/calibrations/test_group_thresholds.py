"""A session's thresholds from a stored result: pooled, or its group's (Mondrian) with fallback."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.calibrations.results import thresholds_for_group
from app.conformal import lac_threshold
from tests.calibrations.fakes import grouped_result


def _group_scores(result: dict[str, Any], keys: Sequence[str], group: str, k: int) -> np.ndarray:
    return np.array([s for s, g in zip(result["scores"][k], keys, strict=True) if g == group])


def test_without_a_group_the_pooled_thresholds_serve() -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    served = thresholds_for_group(result, group_by="specialty", group=None, group_keys=keys)
    assert served.thresholds.thresholds == tuple(result["thresholds"])
    assert [s.n for s in served.steps] == [50, 50, 50]
    assert all(s.group is None and s.fallback is None for s in served.steps)


def test_a_group_with_enough_cases_gets_its_own_thresholds_and_scores() -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    # The session's spelling may differ in case and spacing.
    served = thresholds_for_group(
        result, group_by="specialty", group="pediatrics ", group_keys=keys
    )
    for k in range(3):
        own = _group_scores(result, keys, "Pediatrics", k)
        assert served.thresholds.threshold_for_step(k) == lac_threshold(own, 0.1)
        assert served.thresholds.threshold_for_step(k) != result["thresholds"][k]
        scores = served.thresholds.scores_for_step(k)
        assert scores is not None and np.array_equal(scores, np.sort(own))
        assert served.source(k) is not None
    assert {(s.n, s.group, s.fallback) for s in served.steps} == {(20, "Pediatrics", None)}
    assert served.source(3) is None and served.max_step == 2


def test_a_group_too_small_for_a_finite_threshold_gets_the_pooled_one_said_so() -> None:
    # At alpha 0.1 a finite threshold needs n >= 9: the conformal core falls back to pooled.
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 5})
    served = thresholds_for_group(result, group_by="specialty", group="Pediatrics", group_keys=keys)
    assert served.thresholds.thresholds == tuple(result["thresholds"])
    for step in served.steps:
        assert step.group is None and step.n == 35
        assert step.fallback is not None
        assert "'Pediatrics' has 5 calibration cases" in step.fallback
        assert "at least 9" in step.fallback and "not per specialty" in step.fallback
    scores = served.thresholds.scores_for_step(0)
    assert scores is not None and scores.size == 35


def test_when_the_pooled_calibration_is_too_small_too_the_set_is_every_label() -> None:
    result, keys = grouped_result({"Neurology": 5, "Pediatrics": 3})
    served = thresholds_for_group(result, group_by="specialty", group="Neurology", group_keys=keys)
    assert all(math.isinf(t) for t in served.thresholds.thresholds)
    assert all(s.fallback is not None and s.n == 8 for s in served.steps)


def test_an_unseen_group_and_an_ungrouped_calibration_fall_back_to_pooled() -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    unseen = thresholds_for_group(result, group_by="specialty", group="Cardiology", group_keys=keys)
    assert unseen.thresholds.thresholds == tuple(result["thresholds"])
    assert all("'Cardiology' has no calibration cases" in (s.fallback or "") for s in unseen.steps)

    pooled_only, keys = grouped_result({"Neurology": 30, "Pediatrics": 20}, group_by=None)
    served = thresholds_for_group(pooled_only, group_by=None, group="Neurology", group_keys=keys)
    assert served.thresholds.thresholds == tuple(pooled_only["thresholds"])
    assert all("no per-specialty thresholds" in (s.fallback or "") for s in served.steps)


@pytest.mark.parametrize("keys_given", [False, True])
def test_p_values_are_left_out_rather_than_taken_against_the_wrong_scores(
    keys_given: bool,
) -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    wrong = None if not keys_given else keys[:-1]  # missing, or not lined up with the scores
    served = thresholds_for_group(result, group_by="specialty", group="Neurology", group_keys=wrong)
    assert served.thresholds.scores is None
    assert served.steps[0].group == "Neurology"


def test_anytime_group_thresholds_spend_alpha_over_the_steps() -> None:
    result, keys = grouped_result({"Neurology": 60, "Pediatrics": 20}, anytime=True)
    served = thresholds_for_group(result, group_by="specialty", group="Neurology", group_keys=keys)
    assert served.anytime
    own = _group_scores(result, keys, "Neurology", 1)
    assert served.thresholds.threshold_for_step(1) == lac_threshold(own, 0.1 / 3)
