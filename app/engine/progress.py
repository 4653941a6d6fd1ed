"""Progress of one planned turn, told as it happens: which stage, how much of it is done.

Pure: the engine calls a plain callback and knows nothing of who listens (the session
service turns it into a turn job's progress). Counts only, never question, answer or
patient text, so whatever shows them (logs, an event stream) shows no patient data.

Scoring is one ``label_posteriors`` call over every candidate answer; a provider that scores
in parts (the LLM gateway, chunk by chunk) tells how far it got through
``scoring_progress_var``, which ``plan_turn`` sets around that call only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ProgressFn", "Stage", "TurnProgress", "scoring_progress_var"]


class Stage(StrEnum):
    """The stages of a turn, in the order they run."""

    QUESTIONS = "questions"  # proposing (or reading the bank's) candidate questions
    ANSWERS = "answers"  # simulating plausible answers to each candidate question
    SCORING = "scoring"  # the posterior after every candidate answer


@dataclass(frozen=True, slots=True)
class TurnProgress:
    stage: Stage
    done: int
    total: int

    @property
    def message(self) -> str:
        """The progress in words (counts only)."""
        if self.stage is Stage.QUESTIONS:
            return "choosing candidate questions" if self.done < self.total else "questions chosen"
        if self.stage is Stage.ANSWERS:
            return f"simulated answers to {self.done} of {self.total} candidate questions"
        if self.total == 0:
            return "scoring the current differential"
        return f"scored {self.done} of {self.total} candidate answers"


ProgressFn = Callable[[TurnProgress], None]

# (parts scored so far, of how many parts): any unit, the engine reads the fraction.
scoring_progress_var: ContextVar[Callable[[int, int], None] | None] = ContextVar(
    "scoring_progress", default=None
)
