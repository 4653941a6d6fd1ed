"""Keyset pagination in SQL: newest first by (timestamp, id), continued after a position."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute

from app.pagination import Position

__all__ = ["newest_first"]


def newest_first(
    stmt: sa.Select[Any],
    *,
    at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[uuid.UUID],
    after: Position | None,
    limit: int,
) -> sa.Select[Any]:
    """``stmt`` ordered newest first, rows after ``after`` only, ``limit + 1`` of them (the
    extra one tells ``page_of`` that another page exists).

    Written as OR/AND rather than a row-value comparison, which reads the same on
    PostgreSQL and SQLite and lets either use an index on the timestamp.
    """
    if after is not None:
        stmt = stmt.where(
            sa.or_(at < after.at, sa.and_(at == after.at, row_id < after.id)),
        )
    return stmt.order_by(at.desc(), row_id.desc()).limit(limit + 1)
