"""All SQL for audit events. Append-only: there is no update or delete here by design."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import request_id_var
from app.db.keyset import newest_first
from app.db.models import AuditEvent
from app.pagination import Position

SUCCESS = "success"
NOT_FOUND = "not_found"

_TABLE = cast(sa.Table, AuditEvent.__table__)
_INSERT = sa.insert(_TABLE)
# What the caller says of an event (the id and time come from the columns' defaults).
_GIVEN = ("action", "resource_type", "resource_id", "request_id", "actor_key_id", "tenant")


def _given(
    action: str,
    resource_type: str,
    resource_id: str | None,
    actor_key_id: str | None,
    tenant: str | None,
) -> dict[str, Any]:
    """The ``_GIVEN`` fields of an event, the request id taken from context."""
    return {
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "request_id": request_id_var.get(),
        "actor_key_id": actor_key_id,
        "tenant": tenant,
    }


def audited_read(found: sa.ScalarSelect[Any]) -> sa.Insert:
    """A read and its audit event as one statement: one round trip instead of two on the most
    frequent request (a GET). It appends an event whose outcome is "success" when ``found`` (a
    scalar subquery with bound parameters of its own) finds a value and "not_found" when it
    does not, and returns that value. Build it once per query; run it as a ``Lookup`` (with
    ``Auditor.lookup``).

    PostgreSQL and SQLite (3.35 or later) both take INSERT ... SELECT ... RETURNING with a
    scalar subquery, and both reads of ``found`` see the one statement's snapshot.
    """
    outcome = sa.case((found.is_(None), NOT_FOUND), else_=SUCCESS)
    given = (sa.bindparam(f"event_{name}", type_=_TABLE.c[name].type) for name in _GIVEN)
    return (
        _TABLE.insert()
        .from_select([*_GIVEN, "outcome"], sa.select(*given, outcome))
        .returning(found)
    )


@dataclass(frozen=True)
class Lookup:
    """An ``audited_read`` statement with the parameters of its ``found`` query."""

    statement: sa.Insert
    params: Mapping[str, Any]


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
        given = _given(action, resource_type, resource_id, actor_key_id, tenant)
        await connection.execute(_INSERT, {**given, "outcome": outcome})

    async def lookup(
        self,
        lookup: Lookup,
        *,
        action: str,
        resource_type: str,
        resource_id: str | None,
        actor_key_id: str | None = None,
        tenant: str | None = None,
    ) -> Any:
        """Run an ``audited_read``: the value it found (None: not found), with its event
        appended within the caller's transaction as ``record`` appends one."""
        connection = await self._session.connection()
        given = _given(action, resource_type, resource_id, actor_key_id, tenant)
        params = {**lookup.params, **{f"event_{k}": v for k, v in given.items()}}
        return (await connection.execute(lookup.statement, params)).scalar_one()

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
