"""All SQL for interview sessions, their turns and idempotency records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import IdempotencyRecord, InterviewSession, Turn


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, session_id: uuid.UUID, *, tenant: str | None) -> InterviewSession | None:
        """The session if it exists and belongs to ``tenant`` (None: tenancy not enforced)."""
        row = await self._session.get(InterviewSession, session_id, populate_existing=True)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

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
        """Erase the session and everything hanging off it."""
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
