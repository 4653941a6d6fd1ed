"""SDC adaptive forms, writing: a session's state into a QuestionnaireResponse.

Pursuit keeps its own state in hidden read-only items (``session-id`` and the differential's
numbers), appends each asked question to the contained Questionnaire with its recorded
answer, and marks the QR ``completed`` when the interview stopped; the differential goes
alongside as Conditions and a RiskAssessment. Everything here is pure: JSON in, JSON out.
"""

from __future__ import annotations

import copy
from typing import Any

from app.db.status import SessionStatus
from app.fhir.differential import anonymous_subject, differential_resources, method_text
from app.fhir.read import PostedResponse, contained_questionnaire, find_item
from app.fhir.state import SessionState
from app.fhir.vocab import (
    AGE,
    ALPHA,
    CALIBRATION_ID,
    CANDIDATES,
    DIFFERENTIAL,
    GUARANTEE,
    HIDDEN_EXTENSION,
    INQUIRY,
    OWNED_ID_PREFIX,
    QUESTIONNAIRE_ID,
    SESSION_ID,
    SET_SIZE,
    SEX,
    STOP_REASON,
    SUMMARY,
)
from app.sessions.schemas import SessionDetail

__all__ = ["PURSUIT_ITEMS", "next_question_response", "session_response", "write_state"]

Json = dict[str, Any]

# Pursuit's hidden read-only items: linkId, text, item type.
PURSUIT_ITEMS: tuple[tuple[str, str, str], ...] = (
    (SESSION_ID, "Pursuit interview session", "string"),
    (ALPHA, "Miscoverage level alpha of the prediction set", "decimal"),
    (SET_SIZE, "Candidates in the prediction set", "integer"),
    (CALIBRATION_ID, "Calibration behind the set's guarantee", "string"),
    (GUARANTEE, "What the set's coverage statement covers", "text"),
    (STOP_REASON, "Why the interview stopped", "string"),
    (DIFFERENTIAL, "The differential: Conditions and a RiskAssessment", "reference"),
)


def next_question_response(posted: PostedResponse, state: SessionState) -> Json:
    """The posted QR with the session's state: hidden items, questions, differential, status."""
    response = copy.deepcopy(posted.response)
    questionnaire = contained_questionnaire(response)
    subject = response.get("subject") or anonymous_subject(state.session_id)
    ids = [f"{OWNED_ID_PREFIX}condition-{n + 1}" for n in range(len(state.differential.labels))]
    resources = differential_resources(
        state.differential,
        subject=subject,
        condition_ids=ids,
        risk_id=f"{OWNED_ID_PREFIX}risk-assessment",
        # A contained resource refers to its container as "#".
        basis={"reference": "#"},
        method=method_text(policy=state.policy, model=state.model, differential=state.differential),
        final=state.status == SessionStatus.FINALIZED,
    )
    contained = [*resources.conditions, resources.risk_assessment]
    write_state(
        response, questionnaire, state, differential_refs=[f"#{r['id']}" for r in contained]
    )
    response["contained"] = [
        r
        for r in response.get("contained") or []
        if not str(r.get("id", "")).startswith(OWNED_ID_PREFIX)
    ] + contained
    return response


def session_response(detail: SessionDetail, *, response_id: str) -> tuple[Json, Json]:
    """A QR with its contained Questionnaire for a whole session (no state written yet)."""
    items: list[Json] = [
        {"linkId": SUMMARY, "text": "Initial information", "type": "text", "readOnly": True}
    ]
    answers: list[Json] = [{"linkId": SUMMARY, "answer": [{"valueString": detail.patient.summary}]}]
    if detail.patient.age is not None:
        items.append({"linkId": AGE, "text": "Age", "type": "integer", "readOnly": True})
        answers.append({"linkId": AGE, "answer": [{"valueInteger": detail.patient.age}]})
    if detail.patient.sex is not None:
        items.append({"linkId": SEX, "text": "Sex", "type": "string", "readOnly": True})
        answers.append({"linkId": SEX, "answer": [{"valueString": detail.patient.sex}]})
    items += [
        {
            "linkId": INQUIRY,
            "text": "Clinical inquiry",
            "type": "string",
            "readOnly": True,
            "initial": [{"valueString": detail.inquiry}],
        },
        {
            "linkId": CANDIDATES,
            "text": "Candidate answers",
            # R5 has no "choice" type: a string item restricted to its options.
            "type": "string",
            "readOnly": True,
            "answerConstraint": "optionsOnly",
            "answerOption": [{"valueString": c} for c in detail.candidates],
        },
    ]
    answers.append({"linkId": INQUIRY, "answer": [{"valueString": detail.inquiry}]})
    questionnaire: Json = {
        "resourceType": "Questionnaire",
        "id": QUESTIONNAIRE_ID,
        "status": "active",
        "title": "Pursuit guided interview",
        "item": items,
    }
    response: Json = {
        "resourceType": "QuestionnaireResponse",
        "id": response_id,
        "contained": [questionnaire],
        "questionnaire": f"#{QUESTIONNAIRE_ID}",
        "status": "in-progress",
        "item": answers,
    }
    return response, questionnaire


def write_state(
    response: Json, questionnaire: Json, state: SessionState, *, differential_refs: list[str]
) -> None:
    """Write the session into a QR in place: hidden items, asked questions, answers, status."""
    definitions: list[Json] = questionnaire.setdefault("item", [])
    known = {item.get("linkId") for item in definitions}
    asked_ids = {a.id for a in state.asked}
    # Pursuit's hidden items go after the caller's items and before the first question.
    at = next(
        (n for n, item in enumerate(definitions) if item.get("linkId") in asked_ids),
        len(definitions),
    )
    definitions[at:at] = [
        {
            "extension": [{"url": HIDDEN_EXTENSION, "valueBoolean": True}],
            "linkId": link_id,
            "text": text,
            "type": item_type,
            "readOnly": True,
        }
        for link_id, text, item_type in PURSUIT_ITEMS
        if link_id not in known
    ]
    session_item = find_item(definitions, SESSION_ID)
    assert session_item is not None
    session_item["initial"] = [{"valueString": state.session_id}]
    for asked in state.asked:
        if asked.id not in known:
            definitions.append(asked.definition())

    d = state.differential
    values: dict[str, list[Json] | None] = {
        SESSION_ID: [{"valueString": state.session_id}],
        ALPHA: [{"valueDecimal": d.alpha}],
        SET_SIZE: [{"valueInteger": d.set_size}],
        CALIBRATION_ID: [{"valueString": d.calibration_id}] if d.calibration_id else None,
        GUARANTEE: [{"valueString": d.guarantee}],
        STOP_REASON: [{"valueString": state.stop_reason}] if state.stop_reason else None,
        DIFFERENTIAL: [{"valueReference": {"reference": ref}} for ref in differential_refs],
    }
    answers: list[Json] = response.setdefault("item", [])
    for link_id, value in values.items():
        _set_answer(answers, link_id, value)
    for asked in state.asked:
        existing = find_item(answers, asked.id)
        if asked.answer is not None and (existing is None or not existing.get("answer")):
            _set_answer(answers, asked.id, [asked.answer_value()], text=asked.text)
    order = {item.get("linkId"): n for n, item in enumerate(definitions)}
    answers.sort(key=lambda item: order.get(item.get("linkId"), len(order)))
    response["status"] = "in-progress" if state.status == SessionStatus.ACTIVE else "completed"


def _set_answer(
    answers: list[Json], link_id: str, value: list[Json] | None, *, text: str | None = None
) -> None:
    existing = find_item(answers, link_id)
    if value is None:
        if existing is not None:
            answers.remove(existing)
        return
    if existing is None:
        existing = {"linkId": link_id}
        if text is not None:
            existing["text"] = text
        answers.append(existing)
    existing["answer"] = value
