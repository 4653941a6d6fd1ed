"""SDC adaptive forms: read a posted QuestionnaireResponse, write a session's state into it.

The posted QuestionnaireResponse (QR) contains its Questionnaire. Its first items describe
the case (``summary``, ``inquiry``, ``candidates``); every question Pursuit asked is an item
whose linkId is the question's id, answered as ``valueString``. Pursuit keeps its own state in
hidden read-only items (``session-id`` and the differential's numbers) and returns the QR with
the next question appended, or with status ``completed`` when the interview stopped.
Everything here is pure: JSON in, JSON out (validated with ``fhir.resources`` on the way in).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from fhir.resources.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.questionnaireresponse import (
    QuestionnaireResponse as QuestionnaireResponseR4,
)
from pydantic import ValidationError

from app.errors import InvalidInputError
from app.fhir.differential import anonymous_subject, differential_resources, method_text
from app.fhir.versions import DEFAULT_FHIR_VERSION, FhirVersion
from app.fhir.vocab import (
    AGE,
    ALPHA,
    ANSWER_OPTION_SYSTEM,
    CALIBRATION_ID,
    CANDIDATES,
    CONFIG_ITEMS,
    DIFFERENTIAL,
    GUARANTEE,
    HIDDEN_EXTENSION,
    INQUIRY,
    OBJECTIVE_EXTENSION,
    OWNED_ID_PREFIX,
    PARAMETER_NAME,
    QUESTIONNAIRE_ID,
    SELECTION_CALIBRATION_EXTENSION,
    SELECTION_RULE_EXTENSION,
    SESSION_ID,
    SET_SIZE,
    SEX,
    STOP_REASON,
    SUMMARY,
)
from app.sessions.schemas import (
    AnswerIn,
    DifferentialOut,
    QuestionOut,
    SessionCreate,
    SessionDetail,
    SessionOut,
)

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

# SessionCreate field path -> the linkId a caller fixes it with (for error messages).
_FIELD_ITEMS: dict[str, str] = {
    "patient.summary": SUMMARY,
    "patient.age": AGE,
    "patient.sex": SEX,
    "inquiry": INQUIRY,
    "candidates": CANDIDATES,
    **{field_name: link_id for link_id, field_name in CONFIG_ITEMS.items()},
}
_TEXT_VALUES = ("valueString", "valueUri", "valueDate", "valueDateTime", "valueTime")


# -- session state, from the sessions API's wire models ---------------------------------------


@dataclass(frozen=True)
class Asked:
    """A question the session asked, and the answer it recorded (None: not yet answered)."""

    id: str
    text: str
    answer: str | None = None
    # How the question was chosen (QuestionOut's fields of the same names).
    selection_rule: str | None = None
    selection_calibration_id: str | None = None
    objective: str | None = None
    # The question's answer options, (code, display) each; empty: free text only.
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, q: QuestionOut, answer: str | None = None) -> Asked:
        return cls(
            id=q.id,
            text=q.text,
            answer=answer,
            selection_rule=q.selection_rule,
            selection_calibration_id=q.selection_calibration_id,
            objective=q.objective,
            options=tuple((o.code, o.display) for o in q.answer_options or ()),
        )

    def definition(self) -> Json:
        """The Questionnaire item (R5): ``string``, or ``coding`` with its options and free
        text allowed (``optionsOrString``; R4: ``open-choice``)."""
        item: Json = {"linkId": self.id, "text": self.text, "type": "string"}
        if self.extensions():
            item = {"extension": self.extensions(), **item}
        if self.options:
            item["type"] = "coding"
            item["answerConstraint"] = "optionsOrString"
            item["answerOption"] = [{"valueCoding": self._coding(c, d)} for c, d in self.options]
        return item

    def answer_value(self) -> Json:
        """The recorded answer as a QR answer: an option's coding when it is one's text."""
        assert self.answer is not None
        for code, display in self.options:
            if self.answer == display:
                return {"valueCoding": self._coding(code, display)}
        return {"valueString": self.answer}

    def option_text(self, coding: Any) -> str | None:
        """The display text of the option a posted ``valueCoding`` names (by code), if any."""
        if not isinstance(coding, dict) or coding.get("system") not in (None, ANSWER_OPTION_SYSTEM):
            return None
        return next((d for c, d in self.options if c == coding.get("code")), None)

    @staticmethod
    def _coding(code: str, display: str) -> Json:
        return {"system": ANSWER_OPTION_SYSTEM, "code": code, "display": display}

    def extensions(self) -> list[Json]:
        """Item extensions saying which rule chose the question (absent values left out)."""
        values = (
            (SELECTION_RULE_EXTENSION, "valueCode", self.selection_rule),
            (SELECTION_CALIBRATION_EXTENSION, "valueString", self.selection_calibration_id),
            (OBJECTIVE_EXTENSION, "valueCode", self.objective),
        )
        return [{"url": url, kind: v} for url, kind, v in values if v is not None]


@dataclass(frozen=True)
class SessionState:
    """What the FHIR views need of a session."""

    session_id: str
    status: str
    stop_reason: str | None
    policy: str
    model: str
    differential: DifferentialOut
    asked: tuple[Asked, ...] = field(default=())

    @property
    def current(self) -> Asked | None:
        """The question awaiting an answer, if the session takes one."""
        if self.status != "active" or not self.asked or self.asked[-1].answer is not None:
            return None
        return self.asked[-1]

    @classmethod
    def from_detail(cls, detail: SessionDetail) -> SessionState:
        asked = tuple(
            Asked.of(t.question, t.answer) for t in detail.transcript if t.question is not None
        )
        return cls._of(detail, asked)

    @classmethod
    def started(cls, out: SessionOut) -> SessionState:
        """The state of a session just created."""
        return cls._of(out, ()).advanced(out)

    def advanced(self, out: SessionOut, *, answered: tuple[str, str] | None = None) -> SessionState:
        """The state after ``out`` (an answer's or finalize's reply) without re-reading it."""
        asked = [
            replace(a, answer=answered[1]) if answered and a.id == answered[0] else a
            for a in self.asked
        ]
        question = out.next_question
        if question is not None and all(a.id != question.id for a in asked):
            asked.append(Asked.of(question))
        return self._of(out, tuple(asked))

    @classmethod
    def _of(cls, out: SessionOut, asked: tuple[Asked, ...]) -> SessionState:
        return cls(
            session_id=out.id,
            status=out.status,
            stop_reason=out.stop_reason,
            policy=out.policy,
            model=out.model,
            differential=out.differential,
            asked=asked,
        )


# -- reading a posted QuestionnaireResponse ---------------------------------------------------


@dataclass(frozen=True)
class PostedResponse:
    """A validated QR posted to ``$next-question``, and what it says."""

    response: Json
    session_id: uuid.UUID | None

    @property
    def questionnaire(self) -> Json:
        return _contained_questionnaire(self.response)

    @property
    def completed(self) -> bool:
        """The caller ends the interview (status ``completed``)."""
        return self.response.get("status") == "completed"

    def answer(self, link_id: str, asked: Asked | None = None) -> str | None:
        """The text the QR answers the top-level item ``link_id`` with (several: joined); a
        ``valueCoding`` naming one of ``asked``'s options by code reads as its display text."""
        item = _find(self.response.get("item"), link_id)
        if item is None or not item.get("answer"):
            return None
        texts = [
            (asked.option_text(value) if asked and key == "valueCoding" else None)
            or _text(link_id, key, value)
            for key, value in _values(item.get("answer"))
        ]
        return "; ".join(texts) if texts else None

    def answer_in(self, asked: Asked) -> AnswerIn | None:
        """The posted answer to an asked question, as the sessions API takes it (an option
        as its display text, which is what the session stores either way)."""
        question_id = asked.id
        text = self.answer(question_id, asked)
        if text is None:
            return None
        try:
            return AnswerIn(question_id=question_id, answer=text)
        except ValidationError as exc:
            raise InvalidInputError(
                f"item '{question_id}': {_first_message(exc)} (answers are 1-2000 characters)"
            ) from None

    def session_create(self) -> SessionCreate:
        """The new session the QR describes (summary, inquiry, candidates, optional config)."""
        summary = self._text_of(SUMMARY)
        if summary is None:
            raise InvalidInputError(
                f"the QuestionnaireResponse must answer the item '{SUMMARY}' (the patient's "
                "initial information) with valueString"
            )
        inquiry = self._text_of(INQUIRY)
        if inquiry is None:
            raise InvalidInputError(
                f"the item '{INQUIRY}' needs an answer or an initial valueString "
                "(the clinical question)"
            )
        data: dict[str, Any] = {
            "patient": {"summary": summary},
            "inquiry": inquiry,
            "candidates": self._candidates(),
        }
        age = self._raw(AGE)
        if age is not None:
            data["patient"]["age"] = age
        sex = self._text_of(SEX)
        if sex is not None:
            data["patient"]["sex"] = sex
        for link_id, field_name in CONFIG_ITEMS.items():
            value = self._raw(link_id)
            if value is not None:
                data[field_name] = value
        if "question_bank_name" in data:
            data["question_source"] = "bank"
        try:
            return SessionCreate.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(_first_message(exc)) from None

    def item_values(self, link_id: str) -> list[tuple[str, Any]]:
        """The QR's answers to a top-level item, else the Questionnaire item's ``initial``."""
        item = _find(self.response.get("item"), link_id)
        if item is not None and item.get("answer"):
            return list(_values(item["answer"]))
        definition = _find(self.questionnaire.get("item"), link_id)
        if definition is not None and definition.get("initial"):
            return list(_values(definition["initial"]))
        return []

    def _text_of(self, link_id: str) -> str | None:
        values = self.item_values(link_id)
        return _text(link_id, *values[0]) if values else None

    def _raw(self, link_id: str) -> Any:
        values = self.item_values(link_id)
        if not values:
            return None
        key, value = values[0]
        if key == "valueCoding":
            return value.get("code") or value.get("display")
        return value

    def _candidates(self) -> list[str]:
        definition = _find(self.questionnaire.get("item"), CANDIDATES)
        options = (definition or {}).get("answerOption") or []
        if not options:
            raise InvalidInputError(
                f"the contained Questionnaire needs an item '{CANDIDATES}' with one "
                "answerOption (valueString) per candidate answer"
            )
        return [_text(CANDIDATES, key, value) for key, value in _values(options)]


def read_next_question_input(
    body: Any, *, version: FhirVersion = DEFAULT_FHIR_VERSION
) -> PostedResponse:
    """A ``Parameters`` (``questionnaire-response``) or a bare QR, validated as ``version``."""
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a FHIR resource (a JSON object)")
    resource_type = body.get("resourceType")
    if resource_type == "Parameters":
        resources = [
            p.get("resource")
            for p in body.get("parameter") or []
            if isinstance(p, dict) and p.get("name") == PARAMETER_NAME
        ]
        if len(resources) != 1 or not isinstance(resources[0], dict):
            raise InvalidInputError(
                f"the Parameters must carry one parameter '{PARAMETER_NAME}' with a resource"
            )
        body = resources[0]
        resource_type = body.get("resourceType")
    if resource_type != "QuestionnaireResponse":
        raise InvalidInputError(
            "post a QuestionnaireResponse, or a Parameters resource with the parameter "
            f"'{PARAMETER_NAME}'"
        )
    response = copy.deepcopy(body)
    _link_contained_questionnaire(response)
    _validate(response, version)
    posted = PostedResponse(response=response, session_id=None)
    return replace(posted, session_id=_session_id(posted))


def _link_contained_questionnaire(response: Json) -> None:
    """Name the one contained Questionnaire in ``questionnaire`` when the caller left it out."""
    if response.get("questionnaire") is not None:
        return
    contained = [
        r
        for r in response.get("contained") or []
        if isinstance(r, dict) and r.get("resourceType") == "Questionnaire"
    ]
    if len(contained) == 1:
        contained[0].setdefault("id", QUESTIONNAIRE_ID)
        response["questionnaire"] = f"#{contained[0]['id']}"


def _validate(response: Json, version: FhirVersion) -> None:
    # R4 is checked with fhir.resources' R4B models (it ships no R4): the same QR structure.
    model = QuestionnaireResponseR4 if version is FhirVersion.R4 else QuestionnaireResponse
    try:
        model.model_validate(response)
    except ValidationError as exc:
        # Where and why only, never the input: it may be patient text.
        raise InvalidInputError(
            f"not a valid FHIR {version.name} QuestionnaireResponse: {_first_message(exc)}"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:  # e.g. an unknown contained resourceType
        raise InvalidInputError(
            f"not a valid FHIR {version.name} QuestionnaireResponse ({type(exc).__name__})"
        ) from None
    _contained_questionnaire(response)


def _contained_questionnaire(response: Json) -> Json:
    reference = response.get("questionnaire") or ""
    for resource in response.get("contained") or []:
        if (
            resource.get("resourceType") == "Questionnaire"
            and reference.startswith("#")
            and resource.get("id") == reference[1:]
        ):
            questionnaire: Json = resource
            return questionnaire
    raise InvalidInputError(
        "the QuestionnaireResponse must contain its Questionnaire and name it in "
        "'questionnaire' as '#<id>' (SDC adaptive form)"
    )


def _session_id(posted: PostedResponse) -> uuid.UUID | None:
    values = posted.item_values(SESSION_ID)
    if not values:
        return None
    key, value = values[0]
    if key == "valueString":
        try:
            return uuid.UUID(str(value))
        except ValueError:
            pass
    raise InvalidInputError(f"the item '{SESSION_ID}' does not hold a Pursuit session id")


def _find(items: Any, link_id: str) -> Json | None:
    for item in items or []:
        if isinstance(item, dict) and item.get("linkId") == link_id:
            return item
    return None


def _values(entries: Any) -> Iterator[tuple[str, Any]]:
    for entry in entries or []:
        for key, value in entry.items():
            if key.startswith("value"):
                yield key, value


def _text(link_id: str, key: str, value: Any) -> str:
    if key in _TEXT_VALUES:
        return str(value)
    if key == "valueBoolean":
        return "Yes" if value else "No"
    if key in ("valueInteger", "valueDecimal"):
        return str(value)
    if (
        key == "valueCoding"
        and isinstance(value, dict)
        and (value.get("display") or value.get("code"))
    ):
        return str(value.get("display") or value.get("code"))
    raise InvalidInputError(
        f"item '{link_id}': {key} is not read; use valueString (or valueBoolean, valueInteger, "
        "valueDecimal, valueCoding)"
    )


def _first_message(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(part) for part in error.get("loc", ())]
    where = ".".join(loc)
    for depth in range(len(loc), 0, -1):
        link_id = _FIELD_ITEMS.get(".".join(loc[:depth]))
        if link_id is not None:
            where = f"item '{link_id}'"
            break
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


def conflicting_answer(posted: PostedResponse, state: SessionState) -> str | None:
    """Why the QR contradicts the session (an answered question answered otherwise), or None."""
    for asked in state.asked:
        if asked.answer is None:
            continue
        posted_answer = posted.answer(asked.id, asked)
        if posted_answer is not None and posted_answer.strip() != asked.answer:
            return (
                f"question {asked.id} was already answered differently in session "
                f"{state.session_id}; reload it (GET /v1/sessions/{state.session_id}/fhir)"
            )
    return None


# -- writing the session's state --------------------------------------------------------------


def next_question_response(posted: PostedResponse, state: SessionState) -> Json:
    """The posted QR with the session's state: hidden items, questions, differential, status."""
    response = copy.deepcopy(posted.response)
    questionnaire = _contained_questionnaire(response)
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
        final=state.status == "finalized",
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
    session_item = _find(definitions, SESSION_ID)
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
        existing = _find(answers, asked.id)
        if asked.answer is not None and (existing is None or not existing.get("answer")):
            _set_answer(answers, asked.id, [asked.answer_value()], text=asked.text)
    order = {item.get("linkId"): n for n, item in enumerate(definitions)}
    answers.sort(key=lambda item: order.get(item.get("linkId"), len(order)))
    response["status"] = "in-progress" if state.status == "active" else "completed"


def _set_answer(
    answers: list[Json], link_id: str, value: list[Json] | None, *, text: str | None = None
) -> None:
    existing = _find(answers, link_id)
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
