"""The query parameters of every cursor-paged listing (the scheme: app.pagination)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from app.pagination import MAX_CURSOR_LENGTH

__all__ = ["Cursor", "Limit"]

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="The next_cursor of the previous page (opaque); leave out for the first.",
    ),
]
