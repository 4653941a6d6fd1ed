"""What the audit trail looks like in replies (``GET /v1/audit``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


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
