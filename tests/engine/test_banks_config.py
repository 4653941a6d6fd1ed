"""Question banks, the config's validation and the thresholds object."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.engine import (
    DEFAULT_QUERY_BANKS_PATH,
    InterviewConfig,
    Policy,
    QuestionSource,
    StepwiseThresholds,
    dedupe_questions,
    load_query_bank,
    load_query_banks,
    normalize_question,
)
from app.engine.banks import load_query_bank_options, shipped_bank_options
from app.engine.options import YES_NO_UNSURE, AnswerOption
from app.errors import InvalidInputError, NotFoundError


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "banks.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_normalize_collapses_whitespace_and_case() -> None:
    assert normalize_question("  Any\tFEVER \n lately? ") == normalize_question("any fever lately?")
    assert dedupe_questions(["A?", " a? ", "", "B?"], exclude=["b?"]) == ["A?"]


def test_load_banks_dedupes_and_keeps_order(tmp_path: Path) -> None:
    path = write(tmp_path, {"neuro": ["Headache?", "headache? ", "Dizzy?"], "peds": ["Fever?"]})
    assert load_query_banks(path) == {"neuro": ("Headache?", "Dizzy?"), "peds": ("Fever?",)}
    assert load_query_bank("peds", path) == ("Fever?",)


def test_unknown_bank_names_the_available_ones(tmp_path: Path) -> None:
    path = write(tmp_path, {"neuro": ["Headache?"]})
    with pytest.raises(NotFoundError, match="neuro"):
        load_query_bank("cardio", path)


@pytest.mark.parametrize("data", [["Headache?"], {"neuro": "Headache?"}, {"neuro": []}])
def test_malformed_banks_are_refused(tmp_path: Path, data: object) -> None:
    with pytest.raises(InvalidInputError):
        load_query_banks(write(tmp_path, data))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_query_banks(tmp_path / "nope.json")


def test_default_path_is_app_data() -> None:
    assert DEFAULT_QUERY_BANKS_PATH.parts[-3:] == ("app", "data", "query_banks.json")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"max_questions": -1},
        {"n_questions": 0},
        {"n_answers": 0},
        {"max_candidates": 0},
        {"spread_epsilon": 0.0},
        {"question_source": QuestionSource.BANK},  # no bank
        {"policy": Policy.FIXED},  # fixed needs a bank
    ],
)
def test_config_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        InterviewConfig(**kwargs)  # type: ignore[arg-type]


def test_config_coerces_strings() -> None:
    config = InterviewConfig(policy="ip", question_source="bank", bank=["Q?"])  # type: ignore[arg-type]
    assert config.policy is Policy.IP and config.question_source is QuestionSource.BANK
    assert config.bank == ("Q?",)


def test_stepwise_thresholds_from_scores_and_horizon() -> None:
    steps = [[0.3, 0.1, 0.2] * 4, [0.5] * 12]
    t = StepwiseThresholds.from_scores(steps, 0.1)
    # n = 12, r = ceil(13 * 0.9) = 12: the largest score.
    assert t.threshold_for_step(0) == 0.3 and t.threshold_for_step(1) == 0.5
    assert t.threshold_for_step(2) == math.inf and t.scores_for_step(2) is None
    step0 = t.scores_for_step(0)
    assert step0 is not None
    np.testing.assert_array_equal(step0, np.sort(steps[0]))
    assert t.max_step == 1


def test_banks_may_give_answer_options_per_bank_or_per_question(tmp_path: Path) -> None:
    left_right = [{"code": "left", "display": "Left ear"}, {"code": "right", "display": "Right"}]
    path = write(
        tmp_path,
        {
            "old": ["Headache?"],
            "neuro": {
                "options": "yes-no-unsure",
                "questions": [
                    "Headache?",
                    {"text": "Which ear?", "options": left_right},
                    {"text": "What brings you in?", "options": None},
                    {"text": "Dizzy?"},
                ],
            },
            "peds": [{"text": "Fever?", "options": "yes-no"}, "Rash?"],
        },
    )
    assert load_query_banks(path) == {
        "old": ("Headache?",),
        "neuro": ("Headache?", "Which ear?", "What brings you in?", "Dizzy?"),
        "peds": ("Fever?", "Rash?"),
    }
    options = load_query_bank_options(path)
    assert options["old"] == {}
    assert options["neuro"] == {
        "headache?": YES_NO_UNSURE,
        "which ear?": (AnswerOption("left", "Left ear"), AnswerOption("right", "Right")),
        "dizzy?": YES_NO_UNSURE,
    }
    assert options["peds"] == {"fever?": YES_NO_UNSURE[:2]}


@pytest.mark.parametrize(
    "options",
    [
        "maybe",
        [{"code": "a", "display": "A"}],
        [{"code": "a", "display": "A"}, {"code": "a", "display": "B"}],
        [{"code": "a"}, {"code": "b", "display": "B"}],
        [{"code": "a", "display": "A", "score": 1}, {"code": "b", "display": "B"}],
        {"yes": "Yes"},
    ],
)
def test_malformed_answer_options_are_refused(tmp_path: Path, options: object) -> None:
    path = write(tmp_path, {"neuro": [{"text": "Headache?", "options": options}]})
    with pytest.raises(InvalidInputError, match="neuro"):
        load_query_banks(path)


def test_the_shipped_banks_offer_yes_no_unsure_on_closed_questions() -> None:
    banks = load_query_banks()
    for name, questions in banks.items():
        marked = [q for q in questions if shipped_bank_options(name, q) is not None]
        assert 0.3 * len(questions) < len(marked) < 0.8 * len(questions), name
        assert all(shipped_bank_options(name, q) == YES_NO_UNSURE for q in marked)
    # The first neurology question is closed, the second offers its own alternatives.
    assert shipped_bank_options("neurology", banks["neurology"][0]) == YES_NO_UNSURE
    assert shipped_bank_options("neurology", banks["neurology"][1]) is None
