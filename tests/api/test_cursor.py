"""The listings' cursor (app.pagination): pure, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import InvalidInputError
from app.pagination import Position, as_utc, decode_cursor, encode_cursor, page_of

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(at=instants, row_id=st.uuids())
def test_a_cursor_names_its_position_in_its_listing_only(at: datetime, row_id: uuid.UUID) -> None:
    cursor = encode_cursor("sessions", Position(at, row_id))
    assert decode_cursor("sessions", cursor) == Position(at, row_id)
    assert cursor.isascii() and "=" not in cursor
    with pytest.raises(InvalidInputError):
        decode_cursor("audit", cursor)


@pytest.mark.parametrize("cursor", ["", "x", "!!!!", "e30", "W10", "bnVsbA", "eyJ2IjoyfQ"])
def test_anything_else_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: "):
        decode_cursor("sessions", cursor)


def test_positions_are_utc_whatever_the_database_returns() -> None:
    naive = datetime(2026, 1, 1, 12, 0)  # SQLite: a naive datetime that is UTC
    shifted = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(naive) == as_utc(shifted) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert Position.of(shifted, uuid.UUID(int=1)).at.tzinfo is UTC


def test_a_page_says_there_is_more_only_when_an_extra_row_came() -> None:
    rows = [(datetime(2026, 1, 1, tzinfo=UTC), uuid.UUID(int=i)) for i in range(4)]

    def position(row: tuple[datetime, uuid.UUID]) -> Position:
        return Position(*row)

    full = page_of(rows, limit=3, position=position)
    assert full.rows == rows[:3] and full.next == Position(*rows[2])
    assert page_of(rows, limit=4, position=position).next is None
    assert page_of([], limit=3, position=position).next is None
