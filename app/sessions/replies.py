"""What a session's replies say: the wire models from its rows and the engine's results.

Pure functions, no database and no I/O: a turn's row (``turn_row``) is built from the
engine's outcome and what serves the session (``app.calibrations.lookup.Serving``), and
every reply (``session_out``, ``session_detail``, ``session_summary``, and the session
fields a finalize reply extends) is read back from the stored rows, so a replayed or cached
reply says what the first one said. An answer is read as the transcript shows it
(``answer_text``: an option is its display text).

The guarantee is the one place a reply states what its set is worth, and it never states
more than the calibration gives: no calibration, or a step past its steps 0..T, is
"uncalibrated" with the reason; too few cases, or a threshold that admits every candidate,
is said to cover trivially; a group's own threshold names the group; a pooled threshold
used for a declared group says why; and a stop chosen by a data-dependent rule says that
coverage holds at a fixed step (unless the calibration is anytime).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from app.calibrations.lookup import Serving
from app.calibrations.results import GROUP_FIELD
from app.conformal.rank import min_calibration_size, per_step_alpha
from app.db.models import InterviewSession, Turn
from app.db.status import SessionStatus
from app.engine import Differential, SelectionRule, StopReason, TurnOutcome
from app.engine.options import AnswerOptions
from app.errors import InvalidInputError
from app.llm.demo import demo_model_note
from app.pagination import as_utc
from app.sessions.schemas import (
    AnswerIn,
    AnswerOptionOut,
    CalibrationMismatch,
    CandidateOut,
    DifferentialOut,
    LabelOut,
    QuestionOut,
    SessionDetail,
    SessionOut,
    SessionSummary,
)

MAX_RUNNER_UPS = 5

GUARANTEE_CALIBRATED = (
    "The set contains the right answer with probability at least {target:.0%} "
    "marginally, over patients like the {n} calibration cases, at step {step} of an interview "
    "run with the same model, prompts and policy. It is not a statement about this patient, "
    "not a diagnosis, and does not hold for a population, model or policy that differs from "
    "the calibration."
)
GUARANTEE_INSUFFICIENT = (
    "Calibrated on too few cases ({n}) for a {target:.0%} guarantee at step {step}: the set is "
    "every candidate, which covers trivially and says nothing. Not a diagnosis."
)
GUARANTEE_TRIVIAL = (
    "Calibrated on {n} cases, but at step {step} the threshold admits every candidate whatever "
    "the model says (the right answer's probability was too often near zero in the "
    "calibration): the set is every candidate, which covers trivially and says nothing. Not "
    "a diagnosis."
)
GUARANTEE_UNCALIBRATED = (
    "Uncalibrated: no active calibration was made with this session's model, prompt version "
    "and question policy ({reason}). This set is only the model's own top labels holding "
    "{target:.0%} of its probability; it carries no coverage guarantee and is not a diagnosis."
)
GUARANTEE_GROUP = (
    "The set contains the right answer with probability at least {target:.0%} "
    "for patients of {group_by} {group!r}, marginally over patients like its {n} calibration "
    "cases (coverage per {group_by}), at step {step} of an interview run with the same model, "
    "prompts and policy. It is not a statement about this patient, not a diagnosis, and does "
    "not hold for a population, model or policy that differs from the calibration."
)
GUARANTEE_BEYOND_HORIZON = (
    "Uncalibrated at step {step}: the calibration covers steps 0 to {max_step} only, so this "
    "set is only the model's own top labels holding {target:.0%} of its probability. It "
    "carries no coverage guarantee and is not a diagnosis."
)
GUARANTEE_DATA_DEPENDENT_STOP = (
    " The interview stopped here by a data-dependent rule ({reason}); coverage holds at a "
    "fixed step, not at a step chosen this way (an anytime calibration's would)."
)

# What each stop reason means, in words (the page and every client can show these).
STOP_NOTES = {
    "policy_none": "Policy 'none' asks no questions: the differential is from the initial "
    "information only.",
    "singleton": "The set narrowed to a single candidate.",
    "budget": "The question budget (max_questions) is used up.",
    "exhausted": "No candidate question was left to ask.",
    "no_gain": "No candidate question was expected to shrink the set or sharpen the "
    "probabilities (stop_on_no_gain).",
    "spread": "The candidate questions scored too close to each other to choose between them "
    "(spread_epsilon).",
    "finalized": "The interview was finalized.",
}

# Stop rules that pick the stopping step from the data (the budget and running out do not).
_DATA_DEPENDENT_STOPS = frozenset({StopReason.SINGLETON, StopReason.NO_GAIN, StopReason.SPREAD})


def differential_out(
    d: Differential, serving: Serving, stop_reason: StopReason | None
) -> DifferentialOut:
    """The differential at a step: every label by decreasing probability, the set, and the
    guarantee the set carries (with the calibration facts behind it)."""
    order = sorted(range(len(d.labels)), key=lambda i: -d.posterior[i])
    all_labels = [
        LabelOut(
            label=d.labels[i],
            probability=d.posterior[i],
            p_value=d.p_values[i] if d.p_values is not None else None,
            in_set=d.in_set[i],
        )
        for i in order
    ]
    target = 1 - d.alpha
    threshold = d.threshold if d.threshold is not None and math.isfinite(d.threshold) else None
    calibration = serving.calibration
    source = calibration.display.source(d.step) if calibration else None
    extra: dict[str, Any] = {}
    if calibration is None:
        guarantee = GUARANTEE_UNCALIBRATED.format(target=target, reason=serving.reason)
        extra = {
            "calibration_note": serving.reason,
            "calibration_mismatches": tuple(
                CalibrationMismatch(field=m.field, session=m.session, calibration=m.calibration)
                for m in serving.mismatches
            ),
        }
    elif source is None:
        # The calibration serves the session, but not this step (beyond its steps 0..T).
        max_step = calibration.display.max_step
        guarantee = GUARANTEE_BEYOND_HORIZON.format(target=target, step=d.step, max_step=max_step)
        extra = {
            "calibration_max_step": max_step,
            "calibration_note": f"step {d.step} is beyond the calibrated steps 0..{max_step}",
        }
    else:
        step_alpha = per_step_alpha(
            d.alpha, steps=calibration.display.max_step + 1, anytime=calibration.display.anytime
        )
        trivial = d.calibrated and (threshold is None or threshold >= 1.0)
        if threshold is None:
            guarantee = GUARANTEE_INSUFFICIENT.format(target=target, n=source.n, step=d.step)
        elif trivial:
            guarantee = GUARANTEE_TRIVIAL.format(n=source.n, step=d.step)
        elif source.group is not None:
            guarantee = GUARANTEE_GROUP.format(
                target=target, group_by=GROUP_FIELD, group=source.group, n=source.n, step=d.step
            )
        else:
            guarantee = GUARANTEE_CALIBRATED.format(target=target, n=source.n, step=d.step)
        if source.fallback is not None:
            guarantee += f" For this patient's {GROUP_FIELD}: {source.fallback}."
        if stop_reason in _DATA_DEPENDENT_STOPS and not calibration.display.anytime:
            assert stop_reason is not None
            guarantee += GUARANTEE_DATA_DEPENDENT_STOP.format(reason=stop_reason.value)
        extra = {
            "coverage_scope": "group" if source.group is not None else "pooled",
            "calibration_group": source.group,
            "calibration_max_step": calibration.display.max_step,
            "calibration_note": source.fallback,
            "trivial": trivial,
            "min_calibration_n": min_calibration_size(step_alpha),
        }
    served = calibration is not None and source is not None and d.calibrated
    return DifferentialOut(
        labels=[label for label in all_labels if label.in_set],
        all_labels=all_labels,
        set_size=d.set_size,
        top=d.top_label,
        alpha=d.alpha,
        coverage_target=target,
        step=d.step,
        calibrated=d.calibrated,
        calibration_id=str(calibration.row.id) if calibration and served else None,
        calibration_n=source.n if served and source else None,
        threshold=threshold,
        entropy=d.entropy,
        guarantee=guarantee,
        **extra,
    )


def answer_text(body: AnswerIn, turn: Turn) -> str:
    """The answer as the engine and the transcript see it: an option is its display text."""
    if body.answer is not None:
        return body.answer
    options = (turn.rationale or {}).get("answer_options") or []
    for option in options:
        if option["code"] == body.option:
            return str(option["display"])
    if not options:
        raise InvalidInputError(
            f"question {body.question_id} offers no answer options: send the answer as text"
        )
    codes = ", ".join(str(o["code"]) for o in options)
    raise InvalidInputError(
        f"question {body.question_id} offers no option with that code; its codes: {codes}"
    )


def question_out(
    outcome: TurnOutcome,
    question_id: uuid.UUID,
    serving: Serving,
    options: AnswerOptions | None,
) -> QuestionOut:
    """The next question and why it was chosen (its scores, ties, the best runner-ups)."""
    assert outcome.next_question is not None
    rationale = outcome.rationale
    calibrated = rationale is not None and rationale.selection_rule is SelectionRule.CALIBRATED
    selection_id = serving.calibration.selection_id if calibrated and serving.calibration else None
    return QuestionOut(
        id=str(question_id),
        text=outcome.next_question,
        answer_options=(
            [AnswerOptionOut(code=o.code, display=o.display) for o in options] if options else None
        ),
        step=outcome.step,
        policy=rationale.policy if rationale else None,
        expected_set_size=rationale.expected_set_size if rationale else None,
        expected_entropy=rationale.expected_entropy if rationale else None,
        entropy_bound=rationale.entropy_bound if rationale else None,
        selection_rule=rationale.selection_rule.value if rationale else None,
        selection_calibration_id=selection_id,
        objective=rationale.objective if rationale else None,
        tied=rationale.tied if rationale else 0,
        tie_break=rationale.tie_break if rationale else None,
        candidates_scored=rationale.candidates_scored if rationale else None,
        runner_ups=[
            CandidateOut(
                question=c.question,
                expected_set_size=c.expected_set_size,
                expected_entropy=c.expected_entropy,
                entropy_bound=c.entropy_bound,
            )
            for c in (rationale.runner_ups if rationale else ())[:MAX_RUNNER_UPS]
        ],
    )


def turn_row(
    row: InterviewSession,
    outcome: TurnOutcome,
    question_id: uuid.UUID | None,
    serving: Serving,
    *,
    options: AnswerOptions | None,
) -> Turn:
    """The row a turn stores: its differential and question as the replies show them."""
    # The question's options are stored with it (in its rationale JSON, as the reply has them).
    question = question_out(outcome, question_id, serving, options) if question_id else None
    differential = differential_out(outcome.differential, serving, outcome.stop_reason)
    return Turn(
        session_id=row.id,
        step=outcome.step,
        differential=differential.model_dump(mode="json"),
        question_id=question_id,
        question=outcome.next_question,
        rationale=question.model_dump(mode="json") if question else None,
        posterior_evaluations=outcome.posterior_evaluations,
    )


def session_fields(row: InterviewSession, turn: Turn) -> dict[str, Any]:
    """The fields of a ``SessionOut`` as stored (JSON), validated once by the reply model."""
    finalized = row.status == SessionStatus.FINALIZED
    stop_reason = stop_reason_of(row)
    return {
        "id": str(row.id),
        "status": row.status,
        "step": row.step,
        "version": row.version,
        "next_question": None if finalized else (turn.rationale or None),
        "should_stop": row.status != SessionStatus.ACTIVE,
        "stop_reason": stop_reason,
        "stop_note": STOP_NOTES.get(stop_reason) if stop_reason else None,
        "differential": turn.differential,
        "model": row.model,
        "model_note": demo_model_note(row.model),
        "prompt_version": row.prompt_version,
        "policy": row.config["policy"],
        "calibration_id": str(row.calibration_id) if row.calibration_id else None,
    }


def session_detail(row: InterviewSession, turns: list[Turn]) -> SessionDetail:
    """The whole state: the session's fields, the patient and the transcript."""
    return SessionDetail.model_validate(
        {
            **session_fields(row, turns[-1]),
            "patient": {
                "summary": row.patient_summary,
                "age": row.patient_age,
                "sex": row.patient_sex,
            },
            "inquiry": row.inquiry,
            "candidates": row.candidates,
            "transcript": [
                {
                    "step": t.step,
                    "question": t.rationale or None,
                    "answer": t.answer,
                    "differential": t.differential,
                }
                for t in turns
            ],
        }
    )


def stop_reason_of(row: InterviewSession) -> str | None:
    """Why the session stopped: the engine's stop rule, or "finalized" (None: it has not)."""
    return row.stop_reason or ("finalized" if row.status == SessionStatus.FINALIZED else None)


def session_summary(row: InterviewSession) -> SessionSummary:
    """A listing's entry (no patient text)."""
    return SessionSummary.model_validate(
        {
            "id": str(row.id),
            "status": row.status,
            "step": row.step,
            "version": row.version,
            "policy": row.config["policy"],
            "stop_reason": stop_reason_of(row),
            "model": row.model,
            "prompt_version": row.prompt_version,
            "calibration_id": str(row.calibration_id) if row.calibration_id else None,
            "created_at": as_utc(row.created_at),
            "updated_at": as_utc(row.updated_at),
        }
    )


def session_out(row: InterviewSession, turn: Turn) -> SessionOut:
    """The reply to a create or an answer: the session at ``turn``."""
    return SessionOut.model_validate(session_fields(row, turn))
