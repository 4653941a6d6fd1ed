"""What a session's replies say, from rows and engine results built in memory (no HTTP, no
database): the guarantee for each kind of calibration, the differential, the question and
its tie-break, the stop notes and the answer read from an option."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.calibrations.lookup import Calibrated, Serving
from app.calibrations.matching import Mismatch
from app.calibrations.results import calibration_result, thresholds_for_group
from app.db.models import Calibration, InterviewSession, Turn
from app.engine import (
    CandidateScore,
    Differential,
    Policy,
    QuestionRationale,
    SelectionRule,
    StopReason,
    TurnOutcome,
    make_differential,
)
from app.engine.options import YES_NO_UNSURE
from app.errors import InvalidInputError
from app.sessions.replies import (
    MAX_RUNNER_UPS,
    STOP_NOTES,
    answer_text,
    differential_out,
    question_out,
    session_detail,
    session_out,
    session_summary,
    turn_row,
)
from app.sessions.schemas import AnswerIn, CalibrationMismatch
from tests.calibrations.fakes import grouped_result

LABELS = ["Influenza", "Measles", "Migraine", "Common cold"]
POSTERIOR = [0.2, 0.5, 0.05, 0.25]  # Measles, then Common cold, Influenza, Migraine
NO_CALIBRATION = "no calibration is active for this model and prompt version"


def _calibrated(
    thresholds: list[float], n: int, *, anytime: bool = False, group: str | None = None
) -> Calibrated:
    """A pooled calibration of steps 0..len(thresholds)-1 with ``n`` cases a step."""
    result = calibration_result(
        thresholds=thresholds,
        scores=[[0.5] * n for _ in thresholds],
        alpha=0.1,
        step_alpha=0.1,
        n_per_step=[n] * len(thresholds),
    )
    if anytime:
        result["anytime"] = True
    display = thresholds_for_group(result, group_by=None, group=group)
    return Calibrated(row=Calibration(id=uuid.uuid4()), display=display, selection=None)


def _differential(step: int = 0, threshold: float | None = None) -> Differential:
    return make_differential(
        step=step,
        labels=LABELS,
        posterior=POSTERIOR,
        alpha=0.1,
        threshold=threshold,
        calibration_scores=None,
    )


def _uncalibrated() -> Serving:
    return Serving(None, NO_CALIBRATION, (Mismatch("n_answers", 2, 4),))


# -- the differential and its guarantee ---------------------------------------------------


def test_an_uncalibrated_set_says_so_with_the_reason_and_the_differences() -> None:
    # Nominal set: the fewest top labels holding 90%: Measles .5, Common cold .25, Influenza .2.
    out = differential_out(_differential(), _uncalibrated(), None)
    assert out.guarantee.startswith("Uncalibrated: no active calibration")
    assert f"({NO_CALIBRATION})" in out.guarantee
    assert "90% of its probability" in out.guarantee and "no coverage guarantee" in out.guarantee
    assert [x.label for x in out.labels] == ["Measles", "Common cold", "Influenza"]
    assert [x.label for x in out.all_labels] == ["Measles", "Common cold", "Influenza", "Migraine"]
    assert [x.in_set for x in out.all_labels] == [True, True, True, False]
    assert out.set_size == 3 and out.top == "Measles"
    assert out.calibrated is False and out.calibration_id is None and out.calibration_n is None
    assert out.threshold is None and out.coverage_scope is None
    assert out.coverage_target == pytest.approx(0.9)
    assert out.calibration_note == NO_CALIBRATION
    assert out.calibration_mismatches == [
        CalibrationMismatch(field="n_answers", session=2, calibration=4)
    ]


def test_a_calibrated_set_states_its_marginal_guarantee_and_its_calibration() -> None:
    calibration = _calibrated([0.6, 0.7], n=20)
    # LAC at tau 0.6: labels whose score 1 - p <= 0.6, i.e. p >= 0.4: Measles only.
    out = differential_out(_differential(threshold=0.6), Serving(calibration), None)
    assert out.guarantee.startswith("The set contains the right answer with probability")
    assert "at least 90% marginally, over patients like the 20 calibration cases" in (out.guarantee)
    assert "at step 0 of an interview" in out.guarantee
    assert "data-dependent" not in out.guarantee
    assert [x.label for x in out.labels] == ["Measles"]
    assert out.calibrated is True and out.threshold == 0.6 and out.trivial is False
    assert out.calibration_id == str(calibration.row.id) and out.calibration_n == 20
    assert out.coverage_scope == "pooled" and out.calibration_group is None
    assert out.calibration_max_step == 1 and out.calibration_note is None
    # A finite threshold at alpha 0.1 needs (n + 1)(1 - alpha) <= n, i.e. n >= 9.
    assert out.min_calibration_n == 9


def test_an_anytime_calibration_spends_alpha_over_its_steps() -> None:
    # alpha 0.1 over steps 0..1 is 0.05 a step: n >= 0.95 / 0.05 = 19.
    calibration = _calibrated([0.6, 0.7], n=20, anytime=True)
    out = differential_out(_differential(threshold=0.6), Serving(calibration), None)
    assert out.min_calibration_n == 19


def test_a_threshold_admitting_every_label_is_called_trivial() -> None:
    out = differential_out(_differential(threshold=1.0), Serving(_calibrated([1.0], n=12)), None)
    assert out.guarantee.startswith("Calibrated on 12 cases, but at step 0 the threshold admits")
    assert "covers trivially and says nothing" in out.guarantee
    assert out.trivial is True and out.set_size == len(LABELS)
    assert out.calibration_id is not None  # it is the calibration's set, only a trivial one


def test_too_few_cases_for_a_finite_threshold_are_named() -> None:
    calibration = _calibrated([float("inf")], n=5)
    out = differential_out(_differential(threshold=float("inf")), Serving(calibration), None)
    assert out.guarantee.startswith("Calibrated on too few cases (5) for a 90% guarantee")
    assert out.threshold is None and out.trivial is True and out.set_size == len(LABELS)


def test_a_step_past_the_calibrated_horizon_is_uncalibrated_and_says_why() -> None:
    calibration = _calibrated([0.6, 0.7], n=20)
    out = differential_out(_differential(step=2), Serving(calibration), None)
    assert out.guarantee.startswith("Uncalibrated at step 2: the calibration covers steps 0 to 1")
    assert out.calibration_note == "step 2 is beyond the calibrated steps 0..1"
    assert out.calibration_max_step == 1
    assert out.calibration_id is None and out.calibration_n is None


@pytest.mark.parametrize(
    ("stop", "said"),
    [
        (StopReason.SINGLETON, True),
        (StopReason.NO_GAIN, True),
        (StopReason.SPREAD, True),
        (StopReason.BUDGET, False),
        (StopReason.EXHAUSTED, False),
        (None, False),
    ],
)
def test_a_data_dependent_stop_qualifies_a_fixed_step_guarantee(
    stop: StopReason | None, said: bool
) -> None:
    fixed = differential_out(_differential(threshold=0.6), Serving(_calibrated([0.6], 20)), stop)
    suffix = f"stopped here by a data-dependent rule ({stop.value if stop else ''})"
    assert (suffix in fixed.guarantee) is said
    anytime = Serving(_calibrated([0.6], 20, anytime=True))
    assert "data-dependent" not in differential_out(_differential(0, 0.6), anytime, stop).guarantee


def test_a_groups_own_threshold_names_the_group() -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    display = thresholds_for_group(
        result, group_by="specialty", group="pediatrics", group_keys=keys
    )
    calibration = Calibrated(row=Calibration(id=uuid.uuid4()), display=display, selection=None)
    tau = display.thresholds.threshold_for_step(0)
    out = differential_out(_differential(threshold=tau), Serving(calibration), None)
    assert "for patients of specialty 'Pediatrics'" in out.guarantee
    assert "its 20 calibration cases (coverage per specialty)" in out.guarantee
    assert out.coverage_scope == "group" and out.calibration_group == "Pediatrics"
    assert out.calibration_n == 20 and out.calibration_note is None


def test_a_pooled_threshold_for_a_declared_group_says_why() -> None:
    result, keys = grouped_result({"Neurology": 30, "Pediatrics": 20})
    display = thresholds_for_group(
        result, group_by="specialty", group="Cardiology", group_keys=keys
    )
    calibration = Calibrated(row=Calibration(id=uuid.uuid4()), display=display, selection=None)
    tau = display.thresholds.threshold_for_step(0)
    out = differential_out(_differential(threshold=tau), Serving(calibration), None)
    assert "over patients like the 50 calibration cases" in out.guarantee
    assert " For this patient's specialty: specialty 'Cardiology' has no calibration cases" in (
        out.guarantee
    )
    assert out.coverage_scope == "pooled" and out.calibration_n == 50
    assert out.calibration_note is not None and "'Cardiology'" in out.calibration_note


# -- the question --------------------------------------------------------------------------


def _candidate(i: int) -> CandidateScore:
    return CandidateScore(f"Question {i}?", 1.0 + i, 0.5 + i, 2.0 + i, ())


def _outcome(*, tie_break: str | None, rule: SelectionRule, step: int = 1) -> TurnOutcome:
    rationale = QuestionRationale(
        policy=Policy.CIP,
        question="Any rash?",
        expected_set_size=1.5,
        expected_entropy=0.7,
        answers=(),
        runner_ups=tuple(_candidate(i) for i in range(MAX_RUNNER_UPS + 2)),
        entropy_bound=1.1,
        selection_rule=rule,
        objective="set_size",
        tied=2 if tie_break else 0,
        tie_break=tie_break,
        candidates_scored=8,
    )
    return TurnOutcome(
        step=step,
        differential=_differential(step),
        next_question="Any rash?",
        rationale=rationale,
        should_stop=False,
        stop_reason=None,
        candidates=(),
        candidates_considered=8,
        posterior_evaluations=17,
    )


def test_the_question_carries_its_scores_its_tie_break_and_the_best_runner_ups() -> None:
    qid = uuid.uuid4()
    out = question_out(
        _outcome(tie_break="expected_entropy", rule=SelectionRule.NOMINAL),
        qid,
        _uncalibrated(),
        YES_NO_UNSURE,
    )
    assert out.id == str(qid) and out.text == "Any rash?" and out.step == 1
    assert out.tied == 2 and out.tie_break == "expected_entropy"
    assert out.policy == "cip" and out.objective == "set_size" and out.selection_rule == "nominal"
    assert out.expected_set_size == 1.5 and out.entropy_bound == 1.1
    assert out.candidates_scored == 8
    assert [c.question for c in out.runner_ups] == [f"Question {i}?" for i in range(5)]
    assert out.runner_ups[0].expected_entropy == 0.5
    assert out.answer_options is not None
    assert [(o.code, o.display) for o in out.answer_options] == [
        ("yes", "Yes"),
        ("no", "No"),
        ("unsure", "Unsure"),
    ]


def test_no_tie_and_no_options_say_so() -> None:
    out = question_out(
        _outcome(tie_break=None, rule=SelectionRule.NOMINAL), uuid.uuid4(), _uncalibrated(), None
    )
    assert out.tied == 0 and out.tie_break is None and out.answer_options is None


def test_the_selection_calibration_is_named_only_when_its_sets_were_counted() -> None:
    calibration = Calibrated(
        row=Calibration(id=uuid.uuid4()),
        display=_calibrated([0.6, 0.7], 20).display,
        selection=None,
        selection_id="sel-1",
    )
    serving = Serving(calibration)
    counted = _outcome(tie_break=None, rule=SelectionRule.CALIBRATED)
    nominal = _outcome(tie_break=None, rule=SelectionRule.NOMINAL)
    assert question_out(counted, uuid.uuid4(), serving, None).selection_calibration_id == "sel-1"
    assert question_out(nominal, uuid.uuid4(), serving, None).selection_calibration_id is None


# -- the session's replies -----------------------------------------------------------------


def _session(**fields: Any) -> InterviewSession:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "status": "active",
        "step": 1,
        "version": 2,
        "patient_summary": "A 30-year-old with a fever.",
        "patient_age": 30,
        "patient_sex": "female",
        "inquiry": "What is the most likely diagnosis?",
        "candidates": LABELS,
        "config": {"policy": "cip"},
        "model": "some-model",
        "prompt_version": "v1",
        "calibration_id": None,
        "stop_reason": None,
        **fields,
    }
    return InterviewSession(**values)


def _stopped_turn(row: InterviewSession, stop: StopReason) -> Turn:
    outcome = TurnOutcome(
        step=row.step,
        differential=_differential(row.step),
        next_question=None,
        rationale=None,
        should_stop=True,
        stop_reason=stop,
        candidates=(),
        candidates_considered=0,
        posterior_evaluations=1,
    )
    return turn_row(row, outcome, None, _uncalibrated(), options=None)


def test_a_turn_row_stores_the_reply_shapes() -> None:
    row = _session()
    qid = uuid.uuid4()
    outcome = _outcome(tie_break="candidate_order", rule=SelectionRule.NOMINAL)
    turn = turn_row(row, outcome, qid, _uncalibrated(), options=YES_NO_UNSURE)
    assert turn.session_id == row.id and turn.step == 1 and turn.question_id == qid
    assert turn.question == "Any rash?" and turn.posterior_evaluations == 17
    assert turn.rationale is not None and turn.rationale["tie_break"] == "candidate_order"
    assert turn.rationale["answer_options"][1] == {"code": "no", "display": "No"}
    assert turn.differential["guarantee"].startswith("Uncalibrated:")
    reply = session_out(row, turn)
    assert reply.next_question is not None and reply.next_question.id == str(qid)
    assert reply.should_stop is False and reply.stop_reason is None and reply.stop_note is None


def test_a_stopped_session_says_why_in_words() -> None:
    row = _session(status="stopped", stop_reason="budget")
    reply = session_out(row, _stopped_turn(row, StopReason.BUDGET))
    assert reply.should_stop is True and reply.next_question is None
    assert reply.stop_reason == "budget"
    assert reply.stop_note == "The question budget (max_questions) is used up."
    assert set(STOP_NOTES) == {*(r.value for r in StopReason), "finalized"}


def test_a_finalized_session_shows_no_question_and_says_it_was_finalized() -> None:
    row = _session(status="finalized", calibration_id=uuid.UUID(int=3))
    qid = uuid.uuid4()
    turn = turn_row(
        row,
        _outcome(tie_break=None, rule=SelectionRule.NOMINAL),
        qid,
        _uncalibrated(),
        options=None,
    )
    reply = session_out(row, turn)
    assert reply.next_question is None  # the stored question is not offered any more
    assert reply.stop_reason == "finalized" and reply.stop_note == STOP_NOTES["finalized"]
    assert reply.calibration_id == str(uuid.UUID(int=3))


def test_the_detail_has_the_patient_and_the_transcript_the_summary_does_not() -> None:
    row = _session(
        created_at=datetime(2026, 1, 2, 3, 4, 5),  # naive, as SQLite returns it: UTC
        updated_at=datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    )
    first = turn_row(
        row,
        _outcome(tie_break=None, rule=SelectionRule.NOMINAL, step=0),
        uuid.uuid4(),
        _uncalibrated(),
        options=None,
    )
    first.answer = "Yes"
    second = turn_row(
        row,
        _outcome(tie_break=None, rule=SelectionRule.NOMINAL),
        uuid.uuid4(),
        _uncalibrated(),
        options=None,
    )
    detail = session_detail(row, [first, second])
    assert detail.patient.summary == "A 30-year-old with a fever." and detail.patient.age == 30
    assert [t.step for t in detail.transcript] == [0, 1]
    assert [t.answer for t in detail.transcript] == ["Yes", None]
    assert detail.next_question is not None and detail.next_question.id == str(second.question_id)
    summary = session_summary(row)
    dumped = summary.model_dump()
    assert "patient" not in dumped and "transcript" not in dumped
    assert summary.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert summary.updated_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert summary.policy == "cip" and summary.step == 1 and summary.version == 2


# -- reading an answer ---------------------------------------------------------------------


def _asked(options: list[dict[str, str]] | None) -> Turn:
    return Turn(step=0, question="Any rash?", rationale={"answer_options": options})


def test_an_option_is_read_as_its_display_text_and_text_as_itself() -> None:
    turn = _asked([{"code": "yes", "display": "Yes"}, {"code": "no", "display": "No"}])
    qid = str(uuid.uuid4())
    assert answer_text(AnswerIn(question_id=qid, option="no"), turn) == "No"
    assert answer_text(AnswerIn(question_id=qid, answer="Since Monday"), turn) == "Since Monday"


def test_an_unknown_option_lists_the_codes_and_no_options_asks_for_text() -> None:
    qid = str(uuid.uuid4())
    turn = _asked([{"code": "yes", "display": "Yes"}, {"code": "no", "display": "No"}])
    with pytest.raises(InvalidInputError, match="its codes: yes, no"):
        answer_text(AnswerIn(question_id=qid, option="maybe"), turn)
    with pytest.raises(InvalidInputError, match="send the answer as text"):
        answer_text(AnswerIn(question_id=qid, option="yes"), _asked(None))


def test_each_label_keeps_its_own_p_value_when_sorted_by_probability() -> None:
    # p = (1 + #{calibration scores >= 1 - p(y)}) / (n + 1) with n = 5 scores.
    d = make_differential(
        step=0,
        labels=LABELS,
        posterior=POSTERIOR,
        alpha=0.1,
        threshold=0.6,
        calibration_scores=[0.1, 0.3, 0.5, 0.7, 0.9],
    )
    out = differential_out(d, Serving(_calibrated([0.6], n=5)), None)
    p_values = {x.label: x.p_value for x in out.all_labels}
    assert p_values == pytest.approx(
        {"Measles": 4 / 6, "Common cold": 2 / 6, "Influenza": 2 / 6, "Migraine": 1 / 6}
    )
    probabilities = [x.probability for x in out.all_labels]
    assert probabilities == sorted(probabilities, reverse=True)


def test_the_stored_differences_have_the_wire_models_shape() -> None:
    # A later turn's reply reads them back from what the session stored (Serving.restore).
    stored = _uncalibrated().unmatched_json()
    assert stored is not None
    wire = CalibrationMismatch(field="n_answers", session=2, calibration=4)
    assert stored["mismatches"] == [wire.model_dump(mode="json")]
    restored = Serving.restore(None, stored)
    assert differential_out(_differential(), restored, None) == differential_out(
        _differential(), _uncalibrated(), None
    )
