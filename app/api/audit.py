"""Read the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from app.api.deps import ResourcesDep
from app.api.paging import Cursor
from app.api.problems import PROBLEM_RESPONSES, problem_doc
from app.api.security import AuditReader
from app.audit.schemas import AuditPage
from app.audit.service import list_events
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
    resources: ResourcesDep,
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
    return await list_events(
        resources.sessionmaker,
        tenant=principal.tenant,
        limit=limit,
        cursor=cursor,
        before=before,
        resource_id=resource_id,
    )
