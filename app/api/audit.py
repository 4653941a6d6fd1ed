"""Read the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from app.api.deps import DbSession
from app.api.problems import PROBLEM_RESPONSES
from app.api.security import AuditReader
from app.audit.repository import AuditRepository

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=PROBLEM_RESPONSES)


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    occurred_at: datetime
    action: str
    resource_type: str
    resource_id: str | None
    outcome: str
    request_id: str | None
    actor_key_id: str | None
    tenant: str | None


class AuditPage(BaseModel):
    events: list[AuditEventOut]


@router.get("", summary="Audit events of the caller's tenant, newest first")
async def list_audit_events(
    db: DbSession,
    principal: AuditReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[datetime | None, Query(description="Only events older than this")] = None,
    resource_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    events = await AuditRepository(db).list(
        limit=limit, before=before, resource_id=resource_id, tenant=principal.tenant
    )
    return AuditPage(events=[AuditEventOut.model_validate(e) for e in events])
