"""Cursor pagination of listings (sessions, calibrations, audit events): one scheme for all.

A listing is ordered newest first by (timestamp, id), the id breaking ties between rows
written in the same microsecond, so a page boundary never drops or repeats a row. A cursor
is the position of the last row of a page, opaque to clients (base64url JSON) and bound to
its listing: one listing's cursor is refused by another. It carries no tenant: the
repository's tenant filter applies to every page, so a cursor cannot reach another
tenant's rows. Keyset, not offset: a page costs the same however deep it is, and rows
written meanwhile do not shift later pages.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from app.errors import InvalidInputError

__all__ = [
    "MAX_CURSOR_LENGTH",
    "Page",
    "Position",
    "as_utc",
    "decode_cursor",
    "encode_cursor",
    "page_of",
]

T = TypeVar("T")

MAX_CURSOR_LENGTH = 200
_VERSION = 1


def as_utc(moment: datetime) -> datetime:
    """An aware UTC instant (SQLite returns naive datetimes for timezone-aware columns: UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last row's timestamp (UTC) and id."""

    at: datetime
    id: uuid.UUID

    @classmethod
    def of(cls, at: datetime, row_id: uuid.UUID) -> Position:
        return cls(as_utc(at), row_id)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of rows and the position to continue after (None: the last page)."""

    rows: list[T]
    next: Position | None


def page_of(rows: list[T], *, limit: int, position: Callable[[T], Position]) -> Page[T]:
    """A page from ``limit + 1`` fetched rows: the extra row only says there is more.

    ``position`` maps a row to its ``Position``.
    """
    shown = rows[:limit]
    more = len(rows) > limit and bool(shown)
    return Page(rows=shown, next=position(shown[-1]) if more else None)


def encode_cursor(listing: str, position: Position) -> str:
    """The opaque cursor of ``position`` in ``listing``."""
    payload = {"v": _VERSION, "l": listing, "t": position.at.isoformat(), "id": str(position.id)}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(listing: str, cursor: str) -> Position:
    """The position a cursor of ``listing`` names; anything else is an ``InvalidInputError``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if payload["v"] != _VERSION or payload["l"] != listing:
            raise ValueError("another listing's cursor")
        at = datetime.fromisoformat(payload["t"])
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        return Position(at.astimezone(UTC), uuid.UUID(payload["id"]))
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError, OverflowError):
        # Never echo it: a cursor is the caller's input.
        raise InvalidInputError(
            "cursor: not a cursor of this listing; send the next_cursor of a previous page, "
            "or leave it out for the first page"
        ) from None
