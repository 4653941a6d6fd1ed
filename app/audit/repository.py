"""All SQL for audit events. Append-only: there is no update or delete here by design."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import request_id_var
from app.db.keyset import newest_first
from app.db.models import AuditEvent
from app.pagination import Position

_INSERT = sa.insert(cast(sa.Table, AuditEvent.__table__))


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(
        self,
        *,
        action: str,
        resource_type: str,
        resource_id: str | None,
        outcome: str,
        actor_key_id: str | None = None,
        tenant: str | None = None,
    ) -> None:
        """Append one event within the caller's transaction; the request id is taken from context.

        A Core INSERT built once, not an ORM add + flush, run on the session's connection
        (its transaction) rather than through ``Session.execute``: it is on every request's
        path (reads too), and the ORM's unit of work and execution layer cost more than the
        rest of a cached read. The id and time come from the columns' defaults, as for the ORM.
        """
        connection = await self._session.connection()
        await connection.execute(
            _INSERT,
            {
                "action": action,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "outcome": outcome,
                "request_id": request_id_var.get(),
                "actor_key_id": actor_key_id,
                "tenant": tenant,
            },
        )

    async def list(
        self,
        *,
        limit: int,
        before: datetime | None = None,
        after: Position | None = None,
        tenant: str | None = None,
        resource_id: str | None = None,
    ) -> Sequence[AuditEvent]:
        """Newest first, after the position ``after``, optionally older than ``before``:
        ``limit + 1`` rows (see ``newest_first``)."""
        stmt = sa.select(AuditEvent)
        if before is not None:
            stmt = stmt.where(AuditEvent.occurred_at < before)
        if tenant is not None:
            stmt = stmt.where(AuditEvent.tenant == tenant)
        if resource_id is not None:
            stmt = stmt.where(AuditEvent.resource_id == resource_id)
        stmt = newest_first(
            stmt, at=AuditEvent.occurred_at, row_id=AuditEvent.id, after=after, limit=limit
        )
        return (await self._session.scalars(stmt)).all()
