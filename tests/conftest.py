"""Shared fixtures: real PostgreSQL, real Redis and SQLite files, schemas made by Alembic."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.auth.keys import TENANT_SCOPES, Scope
from app.auth.service import create_key
from app.calibrations.results import calibration_result
from app.conformal import lac_threshold
from app.db.engine import create_engine
from app.db.migrate import upgrade_head
from app.db.models import Base, Calibration, CalibrationCase
from app.logging import configure_logging
from app.main import create_app
from app.settings import Settings
from app.worlds.kb.hpo import HpoKb, load_hpo

POSTGRES_ADMIN_URL = os.environ.get(
    "PURSUIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("PURSUIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

pytest_plugins = ["tests.live_llm"]  # the real local vLLM server's fixtures


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def hpo() -> HpoKb:
    """One HPO load per test session (the wheel's ontology, about 1.5 s)."""
    return load_hpo()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped at the end."""
    name = f"pursuit_test_{uuid.uuid4().hex[:10]}"
    admin = _libpq(POSTGRES_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade_head(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, migrated SQLite file for this test run."""
    path: Path = tmp_path_factory.mktemp("sqlite") / "pursuit.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_head(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # audit_events refuses DELETE (migration 0006); the test superuser switches
                # triggers off for this transaction only, which the service cannot.
                await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(sa.delete(table))
    finally:
        await engine.dispose()


@pytest.fixture
async def clean_database(database_url: str) -> AsyncIterator[str]:
    """The database URL, emptied after the test so tests never see each other's rows."""
    yield database_url
    await _truncate(database_url)


@pytest.fixture
def settings(clean_database: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=clean_database,
        redis_url=REDIS_URL,
        data_dir=tmp_path,
        llm_base_url=None,
        llm_model=None,
        auth_cache_ttl_s=0,  # every request re-checks its key, so revocation tests are exact
    )


async def open_client(
    app: FastAPI, *, api_key: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an HTTP client talking to it in-process."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://pursuit.test", headers=headers
        ) as client:
            yield client


async def make_key(
    settings: Settings, *, tenant: str, scopes: Sequence[Scope] = TENANT_SCOPES
) -> str:
    _, secret = await create_key(settings.effective_database_url, tenant=tenant, scopes=scopes)
    return secret


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def api_key(settings: Settings) -> str:
    """An all-scopes key of tenant ``clinic-a``."""
    return await make_key(settings, tenant="clinic-a")


@pytest.fixture
async def client(app: FastAPI, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running app, authenticated with ``api_key``."""
    async for c in open_client(app, api_key=api_key):
        yield c


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line emitted inside the block, as the service writes them (JSON)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="DEBUG", json=True, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# The question policy of a session with the default options (generated questions, 8 a turn,
# 4 simulated answers): a calibration serves only sessions run with its policy.
DEFAULT_SESSION_POLICY = {
    "question_source": "generated",
    "bank": None,
    "n_questions": 8,
    "n_answers": 4,
    "answer_source": "llm",
}


async def insert_calibration(
    settings: Settings,
    *,
    result: dict[str, Any],
    params: dict[str, Any],
    group_keys: list[str] | None = None,
    model: str = "scripted",
    prompt_version: str = "test",
    name: str | None = None,
) -> str:
    """An active, succeeded calibration (by default for the scripted provider) storing
    ``result``; ``group_keys`` adds one case row per key with its per-step scores."""
    engine = create_engine(settings.effective_database_url)
    row_id = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(Calibration).values(
                    id=row_id,
                    name=name,
                    status="succeeded",
                    model=model,
                    prompt_version=prompt_version,
                    policy="cip",
                    alpha=0.1,
                    anytime=bool(result.get("anytime")),
                    max_questions=len(result["thresholds"]) - 1,
                    params=params,
                    progress_done=result["n_per_step"][0],
                    progress_total=result["n_per_step"][0],
                    active=True,
                    result=result,
                )
            )
            for position, key in enumerate(group_keys or []):
                await conn.execute(
                    sa.insert(CalibrationCase).values(
                        calibration_id=row_id,
                        case_id=f"c{position}",
                        position=position,
                        group_key=key,
                        scores=[
                            result["scores"][k][position] for k in range(len(result["scores"]))
                        ],
                        steps_run=len(result["scores"]) - 1,
                        stop_reason="budget",
                    )
                )
    finally:
        await engine.dispose()
    return str(row_id)


async def insert_scripted_calibration(
    settings: Settings, **params: object
) -> tuple[str, list[float]]:
    """An active calibration for the scripted provider (cip, alpha 0.1, steps 0..3, n = 40
    uniform scores per step, seeded) made with the default session policy (``params``
    override it); returns its id and the per-step thresholds."""
    rng = np.random.default_rng(3)
    scores = [sorted(float(x) for x in rng.uniform(0, 1, 40)) for _ in range(4)]
    taus = [lac_threshold(np.asarray(s), 0.1) for s in scores]
    result = calibration_result(
        thresholds=taus, scores=scores, alpha=0.1, step_alpha=0.1, n_per_step=[40] * 4
    )
    row_id = await insert_calibration(
        settings, result=result, params={**DEFAULT_SESSION_POLICY, **params}
    )
    return row_id, taus
