"""Read the audit trail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, ConfigDict

from app.api.deps import DbSession
from app.api.problems import PROBLEM_RESPONSES, problem_doc
from app.api.security import AuditReader
from app.audit.repository import AuditRepository
from app.validation import reject_nul

router = APIRouter(
    prefix="/v1/audit",
    tags=["audit"],
    responses={
        **PROBLEM_RESPONSES,
        401: problem_doc("No or an unknown API key"),
        403: problem_doc("The API key lacks the scope audit:read"),
        429: problem_doc("Rate limit reached; see Retry-After"),
    },
)


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


def _in_utc_range(value: datetime | None) -> datetime | None:
    """An aware instant as UTC; refused when UTC has no such date (e.g. 0001-01-01T00:00+14:00)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range in UTC") from None


@router.get("", summary="Audit events of the caller's tenant, newest first")
async def list_audit_events(
    db: DbSession,
    principal: AuditReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        datetime | None,
        Query(description="Only events older than this"),
        AfterValidator(_in_utc_range),
    ] = None,
    resource_id: Annotated[str | None, Query(max_length=64), AfterValidator(reject_nul)] = None,
) -> AuditPage:
    events = await AuditRepository(db).list(
        limit=limit, before=before, resource_id=resource_id, tenant=principal.tenant
    )
    return AuditPage(events=[AuditEventOut.model_validate(e) for e in events])
