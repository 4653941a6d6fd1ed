"""An interview's stored settings: the JSON round trip a session's later turns rely on."""

from __future__ import annotations

import json
import uuid

import pytest

from app.engine.config import InterviewConfig, Policy, QuestionSource
from app.engine.policy import DEFAULT_BANK, QuestionPolicy, named_bank
from app.engine.settings import InterviewSettings
from app.errors import InvalidInputError

CALLER_BANK = ("Any fever?", "Any cough?", "Any rash?")

SETTINGS = [
    InterviewSettings(QuestionPolicy(), max_questions=5, stop_on_no_gain=True, spread_epsilon=None),
    InterviewSettings(
        QuestionPolicy.build(
            policy="ip",
            alpha=0.2,
            question_source="bank",
            question_bank=list(CALLER_BANK),
            n_candidate_questions=2,
            n_answers=3,
        ),
        max_questions=2,
        stop_on_no_gain=False,
        spread_epsilon=0.05,
    ),
    InterviewSettings(
        QuestionPolicy.build(
            question_source="generated",
            objective="entropy_bound",
            selection_calibration_id=str(uuid.UUID(int=7)),
        ),
        max_questions=0,
        stop_on_no_gain=True,
        spread_epsilon=None,
    ),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_stored_json_reads_back_as_the_same_settings(settings: InterviewSettings) -> None:
    stored = json.loads(json.dumps(settings.to_json()))  # as the JSON column keeps it
    again = InterviewSettings.from_json(stored)
    assert again == settings
    assert again.config() == settings.config()


def test_the_budget_and_stop_rules_sit_beside_the_policy_fields() -> None:
    settings = SETTINGS[1]
    stored = settings.to_json()
    assert stored == {
        **settings.question.to_json(),
        "max_questions": 2,
        "stop_on_no_gain": False,
        "spread_epsilon": 0.05,
    }
    assert stored["question_bank"] == list(CALLER_BANK)
    assert stored["policy"] == "ip" and stored["n_candidate_questions"] == 2


def test_the_config_is_the_policys_with_the_budget_and_stop_rules() -> None:
    config = SETTINGS[1].config()
    assert isinstance(config, InterviewConfig)
    assert config.policy is Policy.IP and config.alpha == 0.2
    assert config.max_questions == 2 and config.spread_epsilon == 0.05
    assert config.stop_on_no_gain is False and config.stop_on_singleton is True
    assert config.question_source is QuestionSource.BANK and config.bank == CALLER_BANK
    assert config.n_questions == 2 and config.max_candidates == 2 and config.n_answers == 3


def test_the_default_policy_is_the_default_bank() -> None:
    config = SETTINGS[0].config()
    assert config.bank == named_bank(DEFAULT_BANK)
    assert SETTINGS[0].to_json()["question_bank_name"] == DEFAULT_BANK


def test_a_sessions_own_keys_are_ignored_on_reading() -> None:
    stored = {**SETTINGS[0].to_json(), "specialty": "neurology", "calibration_unmatched": None}
    assert InterviewSettings.from_json(stored) == SETTINGS[0]


def test_an_older_rows_caller_bank_under_bank_is_still_read() -> None:
    stored = SETTINGS[1].to_json()
    stored["bank"] = stored.pop("question_bank")
    assert InterviewSettings.from_json(stored) == SETTINGS[1]


def test_an_older_bank_that_is_no_list_is_dropped() -> None:
    # Read as the older spelling of question_bank_name it would give generated questions a bank.
    stored = {**SETTINGS[2].to_json(), "bank": "pediatrics"}
    assert InterviewSettings.from_json(stored) == SETTINGS[2]


def test_a_stored_policy_that_no_longer_validates_is_refused() -> None:
    stored = {**SETTINGS[0].to_json(), "policy": "fixed", "question_source": "generated"}
    stored.pop("question_bank_name")
    with pytest.raises(InvalidInputError, match="fixed"):
        InterviewSettings.from_json(stored)
