"""Reading the audit trail: a tenant's events, one page at a time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.repository import AuditRepository
from app.audit.schemas import AuditEventOut, AuditPage
from app.pagination import Position, decode_cursor, encode_cursor, page_of

__all__ = ["LISTING", "list_events"]

LISTING = "audit"  # the cursor namespace of GET /v1/audit


async def list_events(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    tenant: str | None,
    limit: int,
    cursor: str | None = None,
    before: datetime | None = None,
    resource_id: str | None = None,
) -> AuditPage:
    """``tenant``'s events newest first, after ``cursor``, optionally older than ``before``
    or about one resource."""
    after = decode_cursor(LISTING, cursor) if cursor is not None else None
    async with sessionmaker.begin() as db:
        events = await AuditRepository(db).list(
            limit=limit, before=before, after=after, resource_id=resource_id, tenant=tenant
        )
    page = page_of(list(events), limit=limit, position=lambda e: Position.of(e.occurred_at, e.id))
    return AuditPage(
        events=[AuditEventOut.model_validate(e) for e in page.rows],
        next_cursor=encode_cursor(LISTING, page.next) if page.next else None,
    )
