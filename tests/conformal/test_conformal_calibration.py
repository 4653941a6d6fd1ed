"""Per-step and anytime calibration, step lookup, groups, and the JSON round trip."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from app.conformal import (
    CalibrationMetadata,
    PerStepCalibration,
    conformal_rank,
    conformal_threshold,
    from_scores,
    lac_threshold,
)

META = CalibrationMetadata(
    model="llama-3.1-8b", prompt_version="p3", policy="cip", dataset_hash="sha256:ab12"
)


def test_per_step_thresholds_with_different_n() -> None:
    rng = np.random.default_rng(0)
    scores = [rng.random(300), rng.random(120), rng.random(5)]  # cases stop early
    cal = from_scores(scores, 0.1, metadata=META)
    assert [s.n for s in cal.steps] == [300, 120, 5]
    for k, s in enumerate(scores):
        assert cal.threshold_for_step(k) == lac_threshold(s, 0.1)
        assert cal.steps[k].threshold == conformal_threshold(s, 0.1)
    assert cal.insufficient_steps == (2,)
    assert cal.threshold_for_step(2) == math.inf
    assert cal.max_step == 2 and not cal.anytime and cal.step_alpha == Fraction(1, 10)


def test_anytime_spends_alpha_over_t_plus_one_exactly() -> None:
    # T = 2, alpha = 0.1: each step gets 1/30. With n = 29, r = ceil(30 * 29/30) = 29 <= n.
    # The float route (alpha / 3 = 0.0333...) would give rank 30 > n and an infinite
    # threshold.
    assert conformal_rank(29, 0.1 / 3) == 30
    scores = [np.arange(29.0)] * 3
    cal = PerStepCalibration.from_scores(scores, 0.1, anytime=True)
    assert cal.step_alpha == Fraction(1, 30)
    for step in cal.steps:
        assert step.threshold.alpha_exact == Fraction(1, 30)
        assert step.threshold.rank == 29 and step.value == 28.0
    plain = PerStepCalibration.from_scores(scores, 0.1)
    assert all(s.threshold.rank == conformal_rank(29, 0.1) == 27 for s in plain.steps)


def test_steps_beyond_t_use_the_last_threshold() -> None:
    cal = from_scores([np.arange(50.0), np.arange(50.0) / 2], 0.1)
    assert cal.threshold_for_step(7) == cal.threshold_for_step(1) != cal.threshold_for_step(0)
    with pytest.raises(ValueError):
        cal.threshold_for_step(-1)
    scores = np.full((4, 3, 2), 22.0)  # 4 steps of 3 cases x 2 labels; T = 1
    sets = cal.prediction_sets(scores)
    taus = [cal.threshold_for_step(k) for k in range(4)]
    # n = 50, r = ceil(51 * 0.9) = 46: step 0 tau = 45, step 1 tau = 45 / 2 = 22.5.
    assert taus == [45.0, 22.5, 22.5, 22.5]
    assert sets.all()
    later = cal.prediction_sets(scores + 1.0)  # 23.0: in at step 0 only
    assert later[0].all() and not later[1:].any()
    assert sets.shape == scores.shape


def test_json_round_trip_with_infinite_thresholds() -> None:
    rng = np.random.default_rng(1)
    sizes = (200, 40, 3)
    groups = [rng.choice(["cardio", "neuro", "peds"], size=n, p=[0.6, 0.35, 0.05]) for n in sizes]
    cal = from_scores(
        [rng.random(n) for n in sizes],
        0.05,
        anytime=True,
        metadata=META,
        groups_per_step=groups,
        min_group_n=30,
    )
    # alpha 0.05 / 3 = 1/60 per step needs n >= 59: steps 1 and 2 are infinite.
    assert cal.insufficient_steps == (1, 2)
    text = json.dumps(cal.to_dict(), allow_nan=False)  # strict JSON: no Infinity token
    assert '"inf"' in text
    back = PerStepCalibration.from_dict(json.loads(text))
    assert back == cal
    assert back.metadata == META
    assert PerStepCalibration.from_json(cal.to_json()) == cal
    assert math.isinf(back.threshold_for_step(1)) and math.isinf(back.threshold_for_step(2))


def test_null_reads_as_inf_and_corrupt_records_are_refused() -> None:
    cal = from_scores([np.arange(5.0)], 0.1)
    data = cal.to_dict()
    data["steps"][0]["threshold"]["value"] = None
    assert PerStepCalibration.from_dict(data) == cal
    bad_rank = cal.to_dict()
    bad_rank["steps"][0]["threshold"]["rank"] = 5
    with pytest.raises(ValueError):
        PerStepCalibration.from_dict(bad_rank)
    bad_schema = {**cal.to_dict(), "schema": "other/1"}
    with pytest.raises(ValueError):
        PerStepCalibration.from_dict(bad_schema)
    bad_alpha = {**cal.to_dict(), "anytime": True, "alpha_exact": "1/20"}
    with pytest.raises(ValueError):
        PerStepCalibration.from_dict(bad_alpha)


def test_group_thresholds_per_step_with_fallback() -> None:
    rng = np.random.default_rng(2)
    s = rng.random(120)
    g = np.array(["a"] * 100 + ["b"] * 20)
    cal = from_scores([s], 0.1, groups_per_step=[g], min_group_n=50)
    assert cal.threshold_for_step(0, "a") == lac_threshold(s[:100], 0.1)
    assert cal.threshold_for_step(0, "b") == lac_threshold(s, 0.1)  # pooled fallback
    groups = cal.steps[0].groups
    assert groups is not None
    assert groups.groups["b"].fallback
    assert groups.groups["b"].reason == "group n=20 < min_n=50: pooled threshold used"
    assert cal.threshold_for_step(3, "unseen") == lac_threshold(s, 0.1)
    assert cal.threshold_for_step(0) == lac_threshold(s, 0.1)


def test_integer_group_keys_survive_json() -> None:
    rng = np.random.default_rng(4)
    s = rng.random(60)
    labels = np.repeat([0, 1, 2], 20)
    cal = from_scores([s], 0.1, groups_per_step=[labels])
    back = PerStepCalibration.from_json(cal.to_json())
    groups = back.steps[0].groups
    assert groups is not None
    np.testing.assert_array_equal(
        groups.thresholds_for(np.arange(3)),
        [lac_threshold(s[labels == c], 0.1) for c in range(3)],
    )


def test_empty_input_is_refused() -> None:
    with pytest.raises(ValueError):
        from_scores([], 0.1)
