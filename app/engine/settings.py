"""An interview's settings as stored: its question policy, its budget and its stop rules.

A session stores what it was asked by (``InterviewSettings.to_json``) and every later turn
rebuilds the engine's ``InterviewConfig`` from that JSON (``from_json``), so the two must
stay each other's inverse: ``from_json(s.to_json()) == s``. The policy keeps its own JSON
form (``QuestionPolicy.to_json``); the budget and stop rules sit beside it at the top
level, and other keys there (a session's own, e.g. its specialty) are ignored on reading.

Older rows kept a caller-supplied bank under ``"bank"`` (a list); ``from_json`` still reads
it. A ``"bank"`` that is no list is dropped (the policy's ``question_bank_name`` names the
bank).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.engine.config import InterviewConfig
from app.engine.policy import QuestionPolicy

__all__ = ["InterviewSettings"]


@dataclass(frozen=True, slots=True)
class InterviewSettings:
    """What an interview is run by: the question policy, the budget, the stop rules."""

    question: QuestionPolicy
    max_questions: int
    stop_on_no_gain: bool
    spread_epsilon: float | None

    def config(self) -> InterviewConfig:
        """The engine's configuration of these settings."""
        return self.question.interview_config(
            max_questions=self.max_questions,
            stop_on_no_gain=self.stop_on_no_gain,
            spread_epsilon=self.spread_epsilon,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form: the policy's fields, then the budget and the stop rules."""
        return {
            **self.question.to_json(),
            "max_questions": self.max_questions,
            "stop_on_no_gain": self.stop_on_no_gain,
            "spread_epsilon": self.spread_epsilon,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InterviewSettings:
        """Inverse of ``to_json`` (``data`` may hold other keys, and the older ``"bank"``)."""
        stored = dict(data)
        if isinstance(stored.get("bank"), list):
            stored["question_bank"] = stored.pop("bank")
        elif "bank" in stored:
            del stored["bank"]
        return cls(
            question=QuestionPolicy.from_json(stored),
            max_questions=stored["max_questions"],
            stop_on_no_gain=stored["stop_on_no_gain"],
            spread_epsilon=stored["spread_epsilon"],
        )
