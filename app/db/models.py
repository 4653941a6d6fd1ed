"""ORM models: the one place the schema is described (migrations are generated from here)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, JSONType, new_id, utcnow

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Calibration",
    "CalibrationCaseClaim",
    "IdempotencyRecord",
    "InterviewSession",
    "Turn",
    "TurnJob",
]


class AuditEvent(Base):
    """An append-only record of an action on a resource. Never holds patient text."""

    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    occurred_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, index=True
    )
    action: Mapped[str] = mapped_column(sa.String(64))
    resource_type: Mapped[str] = mapped_column(sa.String(64))
    resource_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(32))
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
    actor_key_id: Mapped[str | None] = mapped_column(sa.String(64))
    tenant: Mapped[str | None] = mapped_column(sa.String(64), index=True)


class InterviewSession(Base):
    """One guided interview. Patient text lives here and in its turns, nowhere else."""

    __tablename__ = "interview_sessions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    tenant: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))  # a SessionStatus (app.db.status)
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    step: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    patient_summary: Mapped[str] = mapped_column(sa.Text)
    patient_age: Mapped[int | None] = mapped_column(sa.Integer)
    patient_sex: Mapped[str | None] = mapped_column(sa.String(32))
    inquiry: Mapped[str] = mapped_column(sa.Text)
    candidates: Mapped[list[str]] = mapped_column(JSONType)
    # The interview configuration (policy, alpha, budget, question source and bank, ...).
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    model: Mapped[str] = mapped_column(sa.String(128))
    prompt_version: Mapped[str] = mapped_column(sa.String(64))
    calibration_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    current_question_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    stop_reason: Mapped[str | None] = mapped_column(sa.String(32))
    final: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Turn(Base):
    """Step k of a session: the differential after k answers, and the question asked next."""

    __tablename__ = "interview_turns"
    __table_args__ = (sa.UniqueConstraint("session_id", "step"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    session_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("interview_sessions.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    differential: Mapped[dict[str, Any]] = mapped_column(JSONType)
    question_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, unique=True)
    question: Mapped[str | None] = mapped_column(sa.Text)
    # Why this question: the chosen candidate's scores and the runner-ups.
    rationale: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    posterior_evaluations: Mapped[int] = mapped_column(sa.Integer, default=0)
    answer: Mapped[str | None] = mapped_column(sa.Text)
    answered_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class IdempotencyRecord(Base):
    """A replayable response for an ``Idempotency-Key`` on one session's answers."""

    __tablename__ = "idempotency_records"
    __table_args__ = (sa.UniqueConstraint("session_id", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    session_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("interview_sessions.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(sa.String(128))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int] = mapped_column(sa.Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)


class TurnJob(Base):
    """A turn run in the background (``Prefer: respond-async``): its state, then its reply.

    Written by the process running it (progress and a heartbeat every few seconds; the reply
    in the same transaction as the turn itself), read by any process a poll lands on. A job
    whose heartbeat stops is ``abandoned``; its turn was never applied. ``result`` is the
    reply the synchronous call would have sent, or its problem+json, never anything else.
    """

    __tablename__ = "turn_jobs"
    # One job per tenant, target and Idempotency-Key (NULL keys never collide).
    __table_args__ = (sa.UniqueConstraint("tenant", "target", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    tenant: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    # "create", or "answer:<session id>": what an Idempotency-Key is scoped to.
    target: Mapped[str] = mapped_column(sa.String(64))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(128))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    # The session it changes (a create's once it exists): erased with the session.
    session_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, index=True)
    status: Mapped[str] = mapped_column(sa.String(16))  # a TurnJobStatus (app.db.status)
    owner: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # {"stage", "done", "total"}: counts only.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status_code: Mapped[int | None] = mapped_column(sa.Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Calibration(Base):
    """A calibration run: per-step conformal thresholds for one (model, prompts, policy, alpha)."""

    __tablename__ = "calibrations"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    # The tenant that owns the run; None: the platform's (made by an operator, with the CLI
    # or a platform:admin key), which serves every tenant that has no active run of its own.
    tenant: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    name: Mapped[str | None] = mapped_column(sa.String(128))
    # A CalibrationStatus (app.db.status).
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    model: Mapped[str] = mapped_column(sa.String(128))
    prompt_version: Mapped[str] = mapped_column(sa.String(64))
    policy: Mapped[str] = mapped_column(sa.String(16))
    alpha: Mapped[float] = mapped_column(sa.Float)
    anytime: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    max_questions: Mapped[int] = mapped_column(sa.Integer)
    dataset_hash: Mapped[str | None] = mapped_column(sa.String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    progress_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    progress_total: Mapped[int] = mapped_column(sa.Integer, default=0)
    # The serialised per-step calibration (thresholds, n and scores per step).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(sa.Text)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=False, index=True)


class ApiKey(Base):
    """An API key of a tenant. Only the SHA-256 of the key is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_id)
    lookup: Mapped[str] = mapped_column(sa.String(16), unique=True)
    digest: Mapped[str] = mapped_column(sa.String(64))
    tenant: Mapped[str] = mapped_column(sa.String(64), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    name: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # None: never expires. A key past it is refused like a revoked one.
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # When a request last authenticated with it (written at most once a minute per key).
    last_used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class CalibrationCase(Base):
    """One finished case of a calibration run: its true-label score at every step 0..T.

    Written as each case finishes, so a run that crashes resumes without redoing it.
    """

    __tablename__ = "calibration_cases"

    calibration_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("calibrations.id", ondelete="CASCADE"), primary_key=True
    )
    case_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer)
    group_key: Mapped[str | None] = mapped_column(sa.String(128))
    # 1 - p(true label | h_k) for k = 0..T (an exhausted case repeats its last row).
    scores: Mapped[list[float]] = mapped_column(JSONType)
    steps_run: Mapped[int] = mapped_column(sa.Integer)
    stop_reason: Mapped[str] = mapped_column(sa.String(32))
    posterior_evaluations: Mapped[int] = mapped_column(sa.Integer, default=0)
    seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)


class CalibrationLease(Base):
    """Who runs a calibration: claimed by compare-and-set on ``token``, kept by heartbeats."""

    __tablename__ = "calibration_leases"

    calibration_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("calibrations.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    worker: Mapped[str | None] = mapped_column(sa.String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)


class CalibrationCaseClaim(Base):
    """Who interviews one case of a run: any worker on the run claims it (a compare-and-set
    on ``token``, ``SKIP LOCKED`` on PostgreSQL) and keeps it by heartbeats; ``done_at`` is
    set in the transaction that stores the case, by the token holder only."""

    __tablename__ = "calibration_case_claims"

    calibration_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("calibrations.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(sa.String(128))
    token: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    worker: Mapped[str | None] = mapped_column(sa.String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    done_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
