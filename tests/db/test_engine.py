"""Engine settings that matter beyond the database: what its errors say."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.db.engine import create_engine


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
