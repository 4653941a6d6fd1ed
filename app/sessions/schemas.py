"""Wire models of the sessions API (v1). Strict on input; names are a published contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.db.status import SessionStatus
from app.engine.config import Policy, StopReason
from app.engine.policy import DEFAULT_MAX_QUESTIONS, QuestionPolicy
from app.validation import reject_nul

MAX_LABELS = 26

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# Why a session stopped: the engine's stop rule, or "finalized" (the clinician ended it).
SessionStopReason = StopReason | Literal["finalized"]

# Request examples, shown in the OpenAPI document (schema and request body).
SESSION_CREATE_EXAMPLE: dict[str, Any] = {
    "patient": {
        "summary": "A 34-year-old woman with two days of fever and a stiff neck.",
        "age": 34,
        "sex": "female",
    },
    "inquiry": "What is the most likely diagnosis?",
    "candidates": ["Bacterial meningitis", "Migraine", "Influenza", "Subarachnoid hemorrhage"],
}
ANSWER_EXAMPLE: dict[str, Any] = {
    "question_id": "0b6f3c1e-8a2d-4f5b-9c7e-1d2a3b4c5d6e",
    "answer": "Yes, my neck is very stiff.",
}
ANSWER_BY_OPTION_EXAMPLE: dict[str, Any] = {
    "question_id": "0b6f3c1e-8a2d-4f5b-9c7e-1d2a3b4c5d6e",
    "option": "yes",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return reject_nul(value)


class PatientIn(Strict):
    summary: Annotated[Text, StringConstraints(max_length=8000)] = Field(
        description="Initial information about the patient (free text)."
    )
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = None


class SessionCreate(QuestionPolicy, Strict):
    """Open an interview: the patient, the inquiry, the candidates, and the question policy
    (its fields are ``app.engine.policy.QuestionPolicy``'s, with its session defaults)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [SESSION_CREATE_EXAMPLE]}
    )

    patient: PatientIn
    inquiry: Annotated[Text, StringConstraints(max_length=1000)] = Field(
        description='The clinical question, e.g. "most likely diagnosis?"'
    )
    candidates: list[Annotated[Text, StringConstraints(max_length=200)]] = Field(
        min_length=2, max_length=MAX_LABELS, description="Distinct candidate answers (2-26)."
    )
    max_questions: int = Field(
        default=DEFAULT_MAX_QUESTIONS,
        ge=0,
        le=30,
        description="The budget; the default equals a default calibration run's steps 0..T.",
    )
    stop_on_no_gain: bool = Field(
        default=False,
        description="Stop when no candidate is expected to shrink the set or sharpen the "
        "posterior. Off by default: coverage is guaranteed at fixed steps, not at a step a "
        "data-dependent rule picks, and a weak model rarely gains.",
    )
    spread_epsilon: float | None = Field(
        default=None,
        gt=0,
        description="Optional: the paper's rule, stop when the candidates' objective spread "
        "(standard deviation) falls below this.",
    )
    specialty: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
        | None
    ) = Field(
        default=None,
        description="Optional: the patient's specialty (e.g. Neurology). When the active "
        "calibration has per-specialty (Mondrian) thresholds, this specialty's are used and "
        "coverage holds per specialty; otherwise the pooled ones are, and the reply says so.",
    )

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for position, label in enumerate(labels, start=1):
            key = " ".join(label.split()).casefold()
            if key in seen:
                # Name the entries, never echo them: a candidate may be patient-specific text.
                raise ValueError(
                    f"candidates {seen[key]} and {position} are the same (ignoring case and "
                    "spacing)"
                )
            seen[key] = position
        return labels


class AnswerIn(Strict):
    """The answer to the current question: free text, or the code of one of its options."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [ANSWER_EXAMPLE, ANSWER_BY_OPTION_EXAMPLE]},
    )

    question_id: str = Field(max_length=64, description="The id of the current question.")
    answer: Annotated[Text, StringConstraints(max_length=2000)] | None = Field(
        default=None, description="The patient's answer as text (always possible)."
    )
    option: Annotated[Text, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description="Instead of answer: the code of one of the question's answer_options. "
        "It is stored and scored as that option's display text, as if typed.",
    )

    @model_validator(mode="after")
    def _one_answer(self) -> AnswerIn:
        if (self.answer is None) == (self.option is None):
            raise ValueError("give the answer as text (answer) or as an option code (option)")
        return self


class LabelOut(BaseModel):
    label: str
    probability: float
    p_value: float | None = Field(
        description="Conformal p-value against the step's calibration scores; null if none."
    )
    in_set: bool


class CalibrationMismatch(BaseModel):
    """A session option that differs from the closest active calibration's."""

    field: str = Field(
        description="e.g. n_answers, question_source, question_bank_name, answer_source."
    )
    session: str | int | float | None
    calibration: str | int | float | None = Field(description="null: not recorded.")


class DifferentialOut(BaseModel):
    """The differential at one step: the prediction set and what its guarantee covers."""

    labels: list[LabelOut] = Field(description="The labels in the set, most probable first.")
    all_labels: list[LabelOut] = Field(description="Every candidate, most probable first.")
    set_size: int
    top: str = Field(description="The most probable label (not a diagnosis).")
    alpha: float
    coverage_target: float
    step: int
    calibrated: bool
    calibration_id: str | None
    calibration_n: int | None = Field(description="Calibration cases at this step.")
    trivial: bool = Field(
        default=False,
        description="Calibrated, but the threshold admits every candidate whatever the model "
        "says (too few cases, or scores near 1): the set is the full list and says nothing.",
    )
    min_calibration_n: int | None = Field(
        default=None,
        description="The fewest calibration cases that give a finite threshold at this "
        "step's alpha (9 at 0.1; an anytime calibration spends alpha/(T+1) per step).",
    )
    threshold: float | None
    entropy: float
    guarantee: str
    coverage_scope: Literal["pooled", "group"] | None = Field(
        default=None,
        description="pooled: coverage marginal over all calibration cases; group: over the "
        "calibration cases of calibration_group only; null: uncalibrated.",
    )
    calibration_group: str | None = Field(
        default=None, description="The group (specialty) whose own thresholds gave this set."
    )
    calibration_max_step: int | None = Field(
        default=None, description="T: the calibration covers steps 0..T."
    )
    calibration_note: str | None = Field(
        default=None,
        description="Why no calibration applies, or why a declared group got pooled thresholds.",
    )
    calibration_mismatches: list[CalibrationMismatch] = Field(
        default_factory=list,
        description="When no calibration applies: how the closest active one differs.",
    )


class CandidateOut(BaseModel):
    question: str
    expected_set_size: float
    expected_entropy: float
    entropy_bound: float


class AnswerOptionOut(BaseModel):
    code: str = Field(description="What to send as AnswerIn.option.", examples=["yes"])
    display: str = Field(
        description="The button's text; the answer is stored and scored as this text.",
        examples=["Yes"],
    )


class QuestionOut(BaseModel):
    id: str
    text: str
    answer_options: list[AnswerOptionOut] | None = Field(
        default=None,
        description="Structured answers the question offers (yes / no / unsure, or its "
        "bank's own); null: free text only. Free text is always accepted.",
    )
    step: int
    policy: Policy | None = Field(description="The policy that chose it.")
    expected_set_size: float | None = Field(description="Chosen question: E[|C_{k+1}|].")
    expected_entropy: float | None
    entropy_bound: float | None = Field(
        description="Chosen question: the C-IP paper's entropy upper bound from its sets (nats)."
    )
    selection_rule: Literal["calibrated", "nominal"] | None = Field(
        description="Which sets scored the candidates: 'calibrated' (a selection "
        "calibration's step-(k+1) thresholds, random-question histories) or 'nominal' (the "
        "model's own top labels holding 1 - alpha; no selection calibration applies)."
    )
    selection_calibration_id: str | None = Field(
        description="The selection calibration whose thresholds scored the candidates "
        "(null when nominal)."
    )
    objective: Literal["set_size", "entropy_bound", "expected_entropy"] | None = Field(
        description="What the policy minimised (null for random/fixed, which do not optimise)."
    )
    tied: int = Field(
        default=0,
        description="How many other candidates had the same objective; ties are broken by "
        "expected entropy, then candidate order.",
    )
    tie_break: Literal["expected_entropy", "expected_set_size", "candidate_order"] | None = Field(
        default=None,
        description="What chose among the tied candidates: the policy's second key, or "
        "candidate_order when they tied on that too (then the choice among them is arbitrary).",
    )
    candidates_scored: int | None = Field(
        default=None, description="How many candidate questions were scored (this one included)."
    )
    runner_ups: list[CandidateOut]

    @field_validator("policy", mode="before")
    @classmethod
    def _unrecorded_policy(cls, value: Any) -> Any:
        # Turns stored before the policy was typed recorded "" when no rationale was made.
        return None if value == "" else value


class TurnOut(BaseModel):
    step: int
    question: QuestionOut | None
    answer: str | None
    differential: DifferentialOut


class SessionOut(BaseModel):
    id: str
    status: SessionStatus
    step: int
    version: int = Field(description="Bumped by every change; sent as the ETag.")
    next_question: QuestionOut | None
    should_stop: bool
    stop_reason: SessionStopReason | None
    stop_note: str | None = Field(
        default=None, description="The stop reason in words (null while the interview runs)."
    )
    differential: DifferentialOut
    model: str
    model_note: str | None = Field(
        default=None,
        description="Set when the model is the local demo model: it runs the machinery, not "
        "clinical reasoning; how to point Pursuit at a real vLLM.",
    )
    prompt_version: str
    policy: Policy
    calibration_id: str | None


class SessionDetail(SessionOut):
    patient: PatientIn
    inquiry: str
    candidates: list[str]
    transcript: list[TurnOut]

    _json: bytes | None = PrivateAttr(default=None)

    def json_bytes(self) -> bytes:
        """This reply as JSON (what FastAPI would send for it), rendered once and kept: a
        detail cached for an unchanged session (``DetailCache``) then serves every GET of its
        version without being validated and serialised again. A detail is never changed
        after it is built."""
        if self._json is None:
            self._json = self.model_dump_json(by_alias=True).encode()
        return self._json


class FinalOut(SessionOut):
    final_answer: str = Field(description="The top label at the last step (not a diagnosis).")
    final_set: list[str]


class SessionSummary(BaseModel):
    """A session in a listing: its state, never its patient text (GET the session for that)."""

    id: str
    status: SessionStatus
    step: int = Field(description="Questions answered so far.")
    version: int = Field(description="The session's ETag.")
    policy: Policy
    stop_reason: SessionStopReason | None
    model: str
    prompt_version: str
    calibration_id: str | None
    created_at: datetime
    updated_at: datetime


class SessionList(BaseModel):
    """One page of the tenant's sessions, newest first."""

    items: list[SessionSummary]
    next_cursor: str | None = Field(
        description="Send as ``cursor`` for the next page; null: this is the last page."
    )


class TurnProgressOut(BaseModel):
    """How far a background turn got: counts only, never patient text."""

    stage: Literal["questions", "answers", "scoring"]
    done: int
    total: int
    message: str = Field(examples=["scored 12 of 32 candidate answers"])


class TurnJobOut(BaseModel):
    """A turn running in the background (``Prefer: respond-async``), while it runs."""

    id: str
    kind: Literal["create", "answer"]
    status: Literal["running", "succeeded", "failed", "abandoned"]
    session_id: str | None = Field(description="The session it changes (a create's once done).")
    progress: TurnProgressOut | None
    location: str = Field(description="Poll here: 202 while running, then the turn's reply.")
    events: str = Field(description="Server-sent events of its progress, ending with `done`.")
