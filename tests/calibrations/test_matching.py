"""Which active calibration serves a session (pure: no database, no LLM)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.calibrations.matching import (
    ActiveCalibration,
    SessionPolicy,
    choose,
    mismatches,
    policy_key,
)
from app.engine.policy import QuestionPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BANK_PARAMS: dict[str, Any] = {
    "question_source": "bank",
    "bank": "neurology",
    "n_questions": 4,
    "n_answers": 2,
    "answer_source": "llm",
}
POLICY: dict[str, Any] = {
    "policy": "cip",
    "alpha": 0.1,
    "question_source": "bank",
    "question_bank_name": "neurology",
    "n_candidate_questions": 4,
    "n_answers": 2,
}


def session(max_questions: int = 3, specialty: str | None = None, **policy: Any) -> SessionPolicy:
    """A session's policy: ``POLICY`` with ``policy`` changes."""
    fields = {**POLICY, **policy}
    if fields["question_source"] != "bank":
        fields.pop("question_bank_name", None)
    return SessionPolicy(
        question=QuestionPolicy.build(**fields),
        max_questions=max_questions,
        specialty=specialty,
        any_selection="selection_calibration_id" not in policy,
    )


SESSION = session()
SELECTION = uuid.uuid4()


def test_a_session_that_names_no_selection_takes_the_calibrations() -> None:
    calibrated = active(selection_calibration_id=str(SELECTION))
    assert mismatches(SESSION, calibrated) == ()
    assert mismatches(session(selection_calibration_id=SELECTION), calibrated) == ()
    # The selection is part of the policy: runs with different ones do not compete.
    other = active(selection_calibration_id=str(uuid.uuid4()))
    assert policy_key("cip", calibrated.params) != policy_key("cip", other.params)
    assert policy_key("ip", calibrated.params) == policy_key("ip", other.params)


def active(
    *,
    policy: str = "cip",
    alpha: float = 0.1,
    max_questions: int = 3,
    age_s: int = 0,
    **params: Any,
) -> ActiveCalibration:
    return ActiveCalibration(
        id=uuid.uuid4(),
        policy=policy,
        alpha=alpha,
        max_questions=max_questions,
        params={**BANK_PARAMS, **params},
        updated_at=T0 - timedelta(seconds=age_s),
    )


def test_the_same_policy_matches() -> None:
    calibration = active()
    assert mismatches(SESSION, calibration) == ()
    assert choose(SESSION, [calibration]).calibration_id == calibration.id


@pytest.mark.parametrize(
    ("session", "params", "field"),
    [
        (session(policy="ip"), {}, "policy"),
        (session(alpha=0.05), {}, "alpha"),
        (SESSION, {"answer_source": "estimation"}, "answer_source"),
        (SESSION, {"question_source": "generated", "bank": None}, "question_source"),
        (session(question_bank_name="pediatrics"), {}, "question_bank_name"),
        (session(question_bank_name=None, question_bank=("Q?",)), {}, "question_bank_name"),
        (session(n_candidate_questions=8), {}, "n_candidate_questions"),
        (session(n_answers=4), {}, "n_answers"),
        (session(specialty="Pediatrics"), {"specialty": "Neurology"}, "specialty"),
        (session(objective="entropy_bound"), {}, "objective"),
        (session(), {"objective": "entropy_bound"}, "objective"),
        (session(selection_calibration_id=SELECTION), {}, "selection_calibration_id"),
        (
            session(selection_calibration_id=SELECTION),
            {"selection_calibration_id": str(uuid.uuid4())},
            "selection_calibration_id",
        ),
        (session(), {"purpose": "selection"}, "purpose"),
    ],
)
def test_each_policy_setting_must_match_and_the_reason_names_it(
    session: SessionPolicy, params: dict[str, Any], field: str
) -> None:
    calibration = active(**params)
    found = mismatches(session, calibration)
    assert [m.field for m in found] == [field]
    match = choose(session, [calibration])
    assert match.calibration_id is None and match.mismatches == found
    assert match.reason is not None and field in match.reason


def test_an_estimation_calibration_never_serves_whatever_the_policy() -> None:
    for policy in ("cip", "ip", "random", "fixed", "none"):
        one = session(policy=policy)
        found = mismatches(one, active(policy=policy, answer_source="estimation"))
        assert [m.field for m in found] == ["answer_source"]


def test_a_setting_the_calibration_does_not_record_never_matches() -> None:
    bare = ActiveCalibration(uuid.uuid4(), "cip", 0.1, 3, {}, T0)
    found = {m.field: m for m in mismatches(SESSION, bare)}
    assert set(found) == {"answer_source", "question_source", "n_candidate_questions", "n_answers"}
    assert found["n_answers"].calibration is None
    assert found["n_answers"].describe() == "n_answers: session 2, not recorded by the calibration"


def test_only_the_settings_that_define_the_policy_count() -> None:
    # "none" asks nothing; "fixed" takes the bank in order; "random" over a bank ignores how
    # many candidates a turn would score; a same-named specialty differs only in spelling.
    other = {"n_questions": 16, "n_answers": 8}
    assert mismatches(session(policy="none"), active(policy="none", bank="x")) == ()
    assert mismatches(session(policy="fixed"), active(policy="fixed", **other)) == ()
    assert mismatches(session(policy="random"), active(policy="random", **other)) == ()
    generated = session(policy="random", question_source="generated")
    random_generated = active(policy="random", question_source="generated", bank="neurology")
    assert [m.field for m in mismatches(generated, random_generated)] == []
    assert [
        m.field
        for m in mismatches(
            session(policy="random", question_source="generated", n_candidate_questions=8),
            random_generated,
        )
    ] == ["n_candidate_questions"]
    assert mismatches(session(specialty=" neurology "), active(specialty="Neurology")) == ()
    assert mismatches(session(specialty="Neurology"), active()) == ()


def test_the_budget_and_stop_rules_do_not_decide_but_full_coverage_is_preferred() -> None:
    short, long_old = active(max_questions=2), active(max_questions=5, age_s=60)
    assert mismatches(session(max_questions=10), short) == ()
    assert choose(SESSION, [short, long_old]).calibration_id == long_old.id
    newer = active(max_questions=4)
    assert choose(SESSION, [long_old, newer]).calibration_id == newer.id


def test_without_a_match_the_closest_calibration_is_described() -> None:
    assert choose(SESSION, []).reason == (
        "no calibration is active for this model and prompt version"
    )
    far = active(n_questions=8, n_answers=4)
    near = active(n_answers=4)
    match = choose(SESSION, [far, near])
    assert match.calibration_id is None
    assert [(m.field, m.session, m.calibration) for m in match.mismatches] == [("n_answers", 2, 4)]
    # Nothing beyond the policy settings: no ids, paths or hashes.
    assert str(near.id) not in (match.reason or "")


def test_the_policy_key_separates_policies_and_ignores_the_rest() -> None:
    a = policy_key("cip", BANK_PARAMS)
    assert a == policy_key("cip", {**BANK_PARAMS, "dataset": "/x", "seed": 3, "group_by": None})
    assert a != policy_key("cip", {**BANK_PARAMS, "bank": "pediatrics"})
    assert a != policy_key("cip", {**BANK_PARAMS, "n_answers": 4})
    assert policy_key("none", BANK_PARAMS) == policy_key("none", {"answer_source": "llm"})
