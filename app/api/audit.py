"""Read the audit trail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api.deps import DbSession
from app.api.paging import Cursor
from app.api.problems import PROBLEM_RESPONSES, problem_doc
from app.api.security import AuditReader
from app.audit.repository import AuditRepository
from app.pagination import Position, decode_cursor, encode_cursor, page_of
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
    """One page of the tenant's audit events, newest first."""

    events: list[AuditEventOut]
    next_cursor: str | None = Field(
        default=None,
        description="Send as ``cursor`` for the next page; null: this is the last page.",
    )


LISTING = "audit"  # the cursor namespace of GET /v1/audit


def _in_utc_range(value: datetime | None) -> datetime | None:
    """An aware instant as UTC; refused when UTC has no such date (e.g. 0001-01-01T00:00+14:00)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range in UTC") from None


@router.get(
    "",
    operation_id="audit_list",
    summary="Audit events of the caller's tenant, newest first",
    description="Pages: send the reply's `next_cursor` as `cursor` until it is null. "
    "`before` (deprecated) still filters by time; `cursor` is exact where events share "
    "a timestamp.",
)
async def list_audit_events(
    db: DbSession,
    principal: AuditReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
    before: Annotated[
        datetime | None,
        Query(
            deprecated=True,
            description="Deprecated, use `cursor`: only events older than this instant "
            "(events sharing the last event's timestamp are skipped).",
        ),
        AfterValidator(_in_utc_range),
    ] = None,
    resource_id: Annotated[str | None, Query(max_length=64), AfterValidator(reject_nul)] = None,
) -> AuditPage:
    after = decode_cursor(LISTING, cursor) if cursor is not None else None
    events = await AuditRepository(db).list(
        limit=limit, before=before, after=after, resource_id=resource_id, tenant=principal.tenant
    )
    page = page_of(list(events), limit=limit, position=lambda e: Position.of(e.occurred_at, e.id))
    return AuditPage(
        events=[AuditEventOut.model_validate(e) for e in page.rows],
        next_cursor=encode_cursor(LISTING, page.next) if page.next else None,
    )
