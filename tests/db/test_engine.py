"""Engine settings that matter beyond the database: what its errors say."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
)

from app.db.engine import create_engine, database_unavailable


async def test_database_errors_do_not_carry_statement_parameters(database_url: str) -> None:
    # An unexpected database error is logged with its traceback; parameters hold patient text.
    engine = create_engine(database_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as raised:
            async with engine.connect() as conn:
                await conn.execute(
                    sa.text("SELECT :summary FROM no_such_table"), {"summary": "stiff neck 7731"}
                )
    finally:
        await engine.dispose()
    assert "stiff neck 7731" not in str(raised.value)


class _AdaptedError(Exception):
    """What SQLAlchemy's asyncpg dialect raises: the driver's exception as ``__cause__`` and
    its SQLSTATE copied (``sqlstate``)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.sqlstate = getattr(cause, "sqlstate", None)
        self.__cause__ = cause


def _wrapped(cause: Exception, cls: type[DBAPIError] = DBAPIError) -> DBAPIError:
    return cls("SELECT 1", None, _AdaptedError(cause))


def test_a_restarting_database_is_unavailable_other_errors_are_bugs() -> None:
    """Seen under load while PostgreSQL restarted: 'the database system is shutting down'
    (57P03, a plain DBAPIError) and a connection left mid-protocol (InternalClientError)
    were 500s; they are a 503 to retry. A constraint violation or bad SQL stays a bug."""
    shutting_down = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
    assert database_unavailable(_wrapped(shutting_down))
    assert database_unavailable(_wrapped(asyncpg.exceptions.AdminShutdownError("terminating")))
    broken = asyncpg.exceptions.InternalClientError("cannot switch to state 12")
    assert database_unavailable(_wrapped(broken, InternalError))
    assert database_unavailable(OperationalError("SELECT 1", None, Exception("refused")))
    assert database_unavailable(ConnectionRefusedError())
    unique = asyncpg.exceptions.UniqueViolationError("duplicate key")
    assert not database_unavailable(_wrapped(unique, IntegrityError))
    syntax = asyncpg.exceptions.PostgresSyntaxError("syntax error")
    assert not database_unavailable(_wrapped(syntax, ProgrammingError))
    assert not database_unavailable(ValueError("not a database error"))
