"""Engine and session factories; the lifespan owns the engine, services open sessions.

The one transaction rule (docs/conventions.md): a service opens a short
``sessionmaker.begin()`` transaction per step, never one held across an LLM call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout.

    Statement parameters are kept out of error messages: they hold patient text, and an
    unexpected database error is logged with its traceback. PostgreSQL keeps ``pool_size``
    connections and opens no more: a request that finds them all busy waits for one (up to
    30 s, then 503), which is cheaper than the connection opened and closed per request that
    an overflow beyond the pool costs under a burst of reads.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=0, hide_parameters=True
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def statement_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose every statement commits on its own: no BEGIN and no COMMIT round trip.

    For reads where each statement is consistent by itself (one SELECT per question asked)
    and writes that are atomic alone (one INSERT); never for work that must all land or none.
    PostgreSQL's default READ COMMITTED gives each statement its own snapshot inside a
    transaction too, so such reads see nothing different.
    """
    async with sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


# SQLSTATE classes that mean "no usable connection", whatever SQLAlchemy class wraps them:
# 08 connection exception; 57P01-57P03 admin/crash shutdown, cannot connect now (a restart).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
_LOST_CONNECTION = (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError)
# What to catch where a database failure is expected; ``database_unavailable`` then tells an
# unavailable database from a bug (re-raise those).
DATABASE_ERRORS = (DBAPIError, PoolTimeoutError, ConnectionError)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be used (a lost or refused connection, a
    restart under way, a full pool): the statement did nothing and a retry may succeed.

    Besides SQLAlchemy's OperationalError/InterfaceError, asyncpg reports a server that is
    shutting down as a plain DBAPIError (SQLSTATE 57P0x) and a connection the restart left
    mid-protocol as an InternalClientError; both are unavailability, not server bugs.
    """
    if isinstance(exc, _LOST_CONNECTION):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    for cause in (exc.orig, getattr(exc.orig, "__cause__", None)):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        if isinstance(cause, asyncpg.exceptions.InternalClientError):
            return True
    return False
