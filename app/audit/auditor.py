"""The one way to write the audit trail: an ``Auditor`` bound to who acts and in whose trail.

An event is who (the API key, or none: the CLI, a worker), in which tenant's trail (none: the
operator's), did what (``action``, e.g. ``calibration.create``) to which resource, with what
outcome; the request id comes from the request's context (``app.context``). A service builds
its ``Auditor`` once from the caller it serves and records within its own short transaction,
so an event is written exactly when the change it describes is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.repository import NOT_FOUND, SUCCESS, AuditRepository, Lookup

__all__ = ["NOT_FOUND", "SUCCESS", "Auditor", "ResourceType"]


class ResourceType(StrEnum):
    """What an event is about (its ``resource_type``)."""

    SESSION = "session"
    CALIBRATION = "calibration"
    API_KEY = "api_key"
    ROUTE = "route"  # a refused request (app.audit.refusals)


@dataclass(frozen=True)
class Auditor:
    """Records one actor's events on one kind of resource, in one tenant's trail."""

    resource_type: ResourceType
    tenant: str | None = None
    actor_key_id: str | None = None

    async def record(
        self,
        db: AsyncSession,
        *,
        action: str,
        resource_id: uuid.UUID | str | None,
        outcome: str = SUCCESS,
    ) -> None:
        """Append the event within ``db``'s transaction."""
        await AuditRepository(db).record(
            action=action,
            resource_type=self.resource_type.value,
            resource_id=None if resource_id is None else str(resource_id),
            outcome=outcome,
            actor_key_id=self.actor_key_id,
            tenant=self.tenant,
        )

    async def lookup(
        self, db: AsyncSession, lookup: Lookup, *, action: str, resource_id: uuid.UUID | str
    ) -> Any:
        """Run an ``audited_read`` (a read and its event, one statement) within ``db``'s
        transaction: the value found, or None, recorded as "not_found"."""
        return await AuditRepository(db).lookup(
            lookup,
            action=action,
            resource_type=self.resource_type.value,
            resource_id=str(resource_id),
            actor_key_id=self.actor_key_id,
            tenant=self.tenant,
        )

    def in_trail_of(self, tenant: str | None) -> Auditor:
        """The same actor, recording in another tenant's trail."""
        return replace(self, tenant=tenant)
