"""The session state the FHIR views read against and write: the asked questions and answers.

Built from the sessions API's wire models (``SessionDetail``, ``SessionOut``); both the
reading (``app.fhir.read``) and the writing (``app.fhir.write``) of a QuestionnaireResponse
use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from app.db.status import SessionStatus
from app.fhir.vocab import (
    ANSWER_OPTION_SYSTEM,
    OBJECTIVE_EXTENSION,
    SELECTION_CALIBRATION_EXTENSION,
    SELECTION_RULE_EXTENSION,
)
from app.sessions.schemas import DifferentialOut, QuestionOut, SessionDetail, SessionOut

__all__ = ["Asked", "SessionState"]

Json = dict[str, Any]


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
    status: SessionStatus
    stop_reason: str | None
    policy: str
    model: str
    differential: DifferentialOut
    asked: tuple[Asked, ...] = field(default=())

    @property
    def current(self) -> Asked | None:
        """The question awaiting an answer, if the session takes one."""
        if (
            self.status != SessionStatus.ACTIVE
            or not self.asked
            or self.asked[-1].answer is not None
        ):
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
