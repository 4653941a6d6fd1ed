"""A bare FastAPI app doing the single-row read of GET /v1/sessions/{id}: the yardstick.

    PURSUIT_DATABASE_URL=... .venv/bin/uvicorn benchmarks.load.bare_app:app --port P

No auth, no audit, no middleware, no cache: one ``SELECT`` of the session row by primary key
on the same SQLAlchemy async engine the service uses, returned as JSON. ``get_bench --bare``
serves it beside ``pursuit serve`` to report the service's API CPU per GET over this one's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException

from app.db.engine import create_engine
from app.db.models import InterviewSession


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(os.environ["PURSUIT_DATABASE_URL"])
    app.state.engine = engine
    yield
    await engine.dispose()


app = FastAPI(lifespan=_lifespan)
_COLUMNS = [c for c in InterviewSession.__table__.columns]


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/sessions/{session_id}")
async def get_session(session_id: uuid.UUID) -> dict[str, Any]:
    async with app.state.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(*_COLUMNS).where(InterviewSession.id == session_id))
        ).first()
    if row is None:
        raise HTTPException(404)
    return {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in row._mapping.items()}
