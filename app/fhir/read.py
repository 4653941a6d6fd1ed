"""SDC adaptive forms, reading: a posted QuestionnaireResponse and what it says.

The posted QuestionnaireResponse (QR) contains its Questionnaire. Its first items describe
the case (``summary``, ``inquiry``, ``candidates``); every question Pursuit asked is an item
whose linkId is the question's id, answered as ``valueString`` (or an option's
``valueCoding``). Pursuit's own state is in hidden read-only items (``session-id`` and the
differential's numbers), which ``app.fhir.write`` writes. Everything here is pure: JSON in,
session-service inputs out (validated with ``fhir.resources`` on the way in).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from fhir.resources.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.questionnaireresponse import (
    QuestionnaireResponse as QuestionnaireResponseR4,
)
from pydantic import ValidationError

from app.errors import InvalidInputError
from app.fhir.state import Asked, SessionState
from app.fhir.versions import DEFAULT_FHIR_VERSION, FhirVersion
from app.fhir.vocab import (
    AGE,
    CANDIDATES,
    CONFIG_ITEMS,
    INQUIRY,
    PARAMETER_NAME,
    QUESTIONNAIRE_ID,
    SESSION_ID,
    SEX,
    SUMMARY,
)
from app.sessions.schemas import AnswerIn, SessionCreate

__all__ = [
    "PostedResponse",
    "conflicting_answer",
    "contained_questionnaire",
    "find_item",
    "read_next_question_input",
]

Json = dict[str, Any]

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


@dataclass(frozen=True)
class PostedResponse:
    """A validated QR posted to ``$next-question``, and what it says."""

    response: Json
    session_id: uuid.UUID | None

    @property
    def questionnaire(self) -> Json:
        return contained_questionnaire(self.response)

    @property
    def completed(self) -> bool:
        """The caller ends the interview (status ``completed``)."""
        return self.response.get("status") == "completed"

    def answer(self, link_id: str, asked: Asked | None = None) -> str | None:
        """The text the QR answers the top-level item ``link_id`` with (several: joined); a
        ``valueCoding`` naming one of ``asked``'s options by code reads as its display text."""
        item = find_item(self.response.get("item"), link_id)
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
        item = find_item(self.response.get("item"), link_id)
        if item is not None and item.get("answer"):
            return list(_values(item["answer"]))
        definition = find_item(self.questionnaire.get("item"), link_id)
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
        definition = find_item(self.questionnaire.get("item"), CANDIDATES)
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
    contained_questionnaire(response)


def contained_questionnaire(response: Json) -> Json:
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


def find_item(items: Any, link_id: str) -> Json | None:
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
