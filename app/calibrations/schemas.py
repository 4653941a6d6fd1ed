"""Request and response models of the calibrations API (strict on what we accept)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.calibrations.spec import PatientKind, Purpose
from app.engine.config import Policy
from app.engine.policy import DEFAULT_MAX_QUESTIONS, QuestionPolicy
from app.validation import reject_nul

__all__ = [
    "CALIBRATION_CREATE_EXAMPLES",
    "CalibrationCreate",
    "CalibrationList",
    "CalibrationOut",
    "LeaseOut",
    "ProgressOut",
    "ResultOut",
]

DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


# Request examples, shown in the OpenAPI document (schema and request body).
CALIBRATION_CREATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "display": {
        "name": "cip-a0.1-T5",
        "dataset": "imedqa_dev",
        "policy": "cip",
        "alpha": 0.1,
        "max_questions": 5,
        "cases": 100,
        "seed": 0,
        "question_source": "bank",
        "question_bank_name": "internal_medicine",
        "n_candidate_questions": 4,
        "n_answers": 2,
        "activate": True,
    },
    "selection": {
        "name": "selection-T5",
        "dataset": "imedqa_dev",
        "purpose": "selection",
        "alpha": 0.1,
        "max_questions": 5,
        "cases": 100,
        "question_bank_name": "internal_medicine",
    },
}


def _examples_in_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = list(CALIBRATION_CREATE_EXAMPLES.values())


class CalibrationCreate(QuestionPolicy):
    """Start a calibration run; a worker (``pursuit worker``) executes it.

    The question policy's fields and defaults are ``app.engine.policy.QuestionPolicy``'s, the
    same as a session's. ``n_questions`` and ``bank`` are still read as older names of
    ``n_candidate_questions`` and ``question_bank_name``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_examples_in_schema)

    name: str | None = Field(default=None, max_length=128, description="A label for people.")
    dataset: str = Field(
        pattern=DATASET_NAME,
        description="A dataset name: <data dir>/datasets/NAME.jsonl, else the shipped "
        "app/data/mediq/NAME.jsonl (e.g. imedqa_dev). Paths are not accepted.",
    )
    purpose: Purpose = Field(
        default=Purpose.DISPLAY,
        description="display: thresholds of the shown sets, for interviews asked by this "
        "policy. selection: thresholds inside C-IP's objective, from interviews that ask the "
        "bank's questions in random order (steps 0..T+1; the choice rule is ignored). Name a "
        "selection run in a C-IP display run's selection_calibration_id.",
    )
    max_questions: int = Field(
        default=DEFAULT_MAX_QUESTIONS, ge=0, le=30, description="Steps 0..T calibrated."
    )
    cases: int = Field(default=100, ge=1, le=10_000, description="Calibration cases.")
    seed: int = Field(default=0, ge=0, description="Seed of the splits and of the policy.")
    group_by: Literal["specialty"] | None = Field(
        default=None, description="Also compute Mondrian thresholds per specialty (stored)."
    )
    anytime: bool = Field(default=False, description="Spend alpha/(T+1) per step.")
    activate: bool = Field(default=False, description="Serve it once it succeeds.")
    patient: PatientKind = Field(
        default=PatientKind.LLM,
        description=(
            "Simulated patient answering from the case's facts: 'llm' (MediQ's fact-select), "
            "'retrieval' (the most similar fact by sentence embeddings; cheaper) or 'kb' (the "
            "answer lines of cases written by `pursuit kb-cases`, for the HPO provider)."
        ),
    )
    specialty: str | None = Field(
        default=None, max_length=128, description="Only cases of this specialty."
    )
    stratify: bool = Field(default=True, description="Stratify the splits by specialty.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Cases interviewed at once.")

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return reject_nul(value)

    def run_fields(self) -> dict[str, Any]:
        """Flat fields for ``RunSpec.create`` (the policy's and the run's)."""
        fields = self.model_dump(exclude={"name", "dataset", "activate", "stratify"})
        fields["stratify"] = "specialty" if self.stratify else None
        return fields


class ProgressOut(BaseModel):
    done: int
    total: int
    n_per_step: list[int] = Field(description="Calibration scores stored so far, per step 0..T.")
    stop_reasons: dict[str, int] = Field(default_factory=dict)


class ResultOut(BaseModel):
    thresholds: list[float | None] = Field(description="tau_k per step; null = +inf.")
    n_per_step: list[int]
    step_alpha: float
    insufficient_steps: list[int] = Field(default_factory=list)
    groups: list[dict[str, Any]] | None = None


class LeaseOut(BaseModel):
    worker: str | None
    heartbeat_at: datetime | None
    attempts: int


class CalibrationOut(BaseModel):
    id: str
    name: str | None
    # CalibrationStatus's values, spelled out: an enum would be a component of its own in the
    # OpenAPI document (tests/db/test_status.py checks they agree).
    status: Literal["queued", "running", "succeeded", "failed"]
    active: bool
    model: str
    prompt_version: str
    policy: Policy
    alpha: float
    anytime: bool
    max_questions: int
    dataset_hash: str | None
    owner: Literal["tenant", "platform"] = Field(
        description="'tenant': the caller's tenant's run (it serves that tenant's sessions); "
        "'platform': published by the operator for every tenant without an active run of its "
        "own (read-only to tenants)"
    )
    params: dict[str, Any] = Field(
        description="The run's definition: its question policy under the sessions API's "
        "names (question_bank_name, n_candidate_questions, ...) and the run's settings."
    )
    progress: ProgressOut
    result: ResultOut | None
    error: str | None
    lease: LeaseOut | None
    worker_note: str | None = Field(
        default=None,
        description="While queued: who will run it (this service's own worker, or a "
        "`pursuit worker` that must be started).",
    )
    created_at: datetime
    updated_at: datetime


class CalibrationList(BaseModel):
    """One page of the runs the caller may read (its own and the platform's), newest first."""

    calibrations: list[CalibrationOut]
    next_cursor: str | None = Field(
        default=None,
        description="Send as ``cursor`` for the next page; null: this is the last page.",
    )
