"""All SQL for interview sessions, their turns and idempotency records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only

from app.audit.repository import Lookup, audited_read
from app.db.keyset import newest_first
from app.db.models import IdempotencyRecord, InterviewSession, Turn, TurnJob
from app.pagination import Position

_SESSIONS = cast(sa.Table, InterviewSession.__table__)
_VERSION = sa.select(_SESSIONS.c.version).where(_SESSIONS.c.id == sa.bindparam("session_id"))
# Core, built once: every GET runs one (the ORM's per-statement overhead was most of a GET).
_AUDITED_VERSION = audited_read(_VERSION.scalar_subquery())
_AUDITED_VERSION_OF_TENANT = audited_read(
    _VERSION.where(_SESSIONS.c.tenant == sa.bindparam("session_tenant")).scalar_subquery()
)


def version_lookup(session_id: uuid.UUID, *, tenant: str | None) -> Lookup:
    """The session's version if it exists and belongs to ``tenant`` (any tenant's for a
    caller without one), read by the statement that also appends the read's audit event
    (``Auditor.lookup``)."""
    if tenant is None:
        return Lookup(_AUDITED_VERSION, {"session_id": session_id})
    return Lookup(_AUDITED_VERSION_OF_TENANT, {"session_id": session_id, "session_tenant": tenant})


# What a listing reads of a session: no patient text (summary, inquiry, candidates, turns).
SUMMARY_COLUMNS = (
    "id",
    "tenant",
    "status",
    "version",
    "step",
    "created_at",
    "updated_at",
    "config",
    "model",
    "prompt_version",
    "calibration_id",
    "stop_reason",
)


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, session_id: uuid.UUID, *, tenant: str | None) -> InterviewSession | None:
        """The session if it exists and belongs to ``tenant`` (None: tenancy not enforced)."""
        row = await self._session.get(InterviewSession, session_id, populate_existing=True)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    async def page(
        self, *, tenant: str | None, status: str | None, after: Position | None, limit: int
    ) -> Sequence[InterviewSession]:
        """The tenant's sessions (None: tenancy not enforced), newest first, after ``after``;
        ``limit + 1`` rows (see ``newest_first``). Only the columns of a summary are read:
        patient text stays in the database (touching it raises)."""
        stmt = sa.select(InterviewSession).options(
            load_only(*(getattr(InterviewSession, c) for c in SUMMARY_COLUMNS), raiseload=True)
        )
        if tenant is not None:
            stmt = stmt.where(InterviewSession.tenant == tenant)
        if status is not None:
            stmt = stmt.where(InterviewSession.status == status)
        stmt = newest_first(
            stmt,
            at=InterviewSession.created_at,
            row_id=InterviewSession.id,
            after=after,
            limit=limit,
        )
        return (await self._session.scalars(stmt)).all()

    async def with_turns(
        self, session_id: uuid.UUID, *, tenant: str | None
    ) -> tuple[InterviewSession, list[Turn]] | None:
        """The session and its turns in step order, read by one statement, so from one
        snapshot: never a turn committed after the session row that was read."""
        stmt = (
            sa.select(InterviewSession, Turn)
            .join(Turn, Turn.session_id == InterviewSession.id)
            .where(InterviewSession.id == session_id)
            .order_by(Turn.step)
            .execution_options(populate_existing=True)
        )
        rows = (await self._session.execute(stmt)).all()
        if not rows or (tenant is not None and rows[0][0].tenant != tenant):
            return None
        return rows[0][0], [turn for _, turn in rows]

    async def turns(self, session_id: uuid.UUID) -> Sequence[Turn]:
        stmt = sa.select(Turn).where(Turn.session_id == session_id).order_by(Turn.step)
        return (await self._session.scalars(stmt)).all()

    async def current_turn(self, session_id: uuid.UUID, step: int) -> Turn | None:
        stmt = sa.select(Turn).where(Turn.session_id == session_id, Turn.step == step)
        return (await self._session.scalars(stmt)).first()

    async def add(self, row: InterviewSession | Turn | IdempotencyRecord) -> None:
        self._session.add(row)
        await self._session.flush()

    async def bump_version(
        self, session_id: uuid.UUID, *, expected_version: int, values: dict[str, Any]
    ) -> bool:
        """Apply ``values`` and bump the version only if nobody changed the session meanwhile."""
        result = await self._session.execute(
            sa.update(InterviewSession)
            .where(
                InterviewSession.id == session_id,
                InterviewSession.version == expected_version,
            )
            .values(version=expected_version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def record_answer(self, turn_id: uuid.UUID, answer: str) -> None:
        await self._session.execute(
            sa.update(Turn)
            .where(Turn.id == turn_id)
            .values(answer=answer, answered_at=sa.func.now())
        )

    async def delete(self, session_id: uuid.UUID) -> None:
        """Erase the session and everything hanging off it (its turn jobs' replies too)."""
        await self._session.execute(sa.delete(TurnJob).where(TurnJob.session_id == session_id))
        for model in (IdempotencyRecord, Turn):
            await self._session.execute(sa.delete(model).where(model.session_id == session_id))
        await self._session.execute(
            sa.delete(InterviewSession).where(InterviewSession.id == session_id)
        )

    async def idempotency_record(self, session_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        stmt = sa.select(IdempotencyRecord).where(
            IdempotencyRecord.session_id == session_id, IdempotencyRecord.key == key
        )
        return (await self._session.scalars(stmt)).first()
