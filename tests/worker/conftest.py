"""The calibrations API with a worker: the app on a tiny dataset, the scripted provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.engine import create_engine, create_sessionmaker
from app.main import create_app
from app.settings import Settings
from app.worker import Worker
from tests.calibrations.fakes import StubPatient, scripted_provider, write_dataset
from tests.engine.scripted import ScriptedProvider

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def provider() -> ScriptedProvider:
    return scripted_provider()


@pytest.fixture
async def app(settings: Settings, provider: ScriptedProvider) -> FastAPI:
    write_dataset(settings.data_dir / "datasets" / "tiny.jsonl", n=40)
    return create_app(settings, provider=provider)


@pytest.fixture
async def maker(settings: Settings) -> AsyncIterator[Maker]:
    engine = create_engine(settings.effective_database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def make_worker(maker: Maker, provider: ScriptedProvider, **kw: Any) -> Worker:
    """A worker named "w" (a stub patient unless ``patient`` is given)."""
    patient = kw.pop("patient", StubPatient())
    return Worker(sessionmaker=maker, provider=provider, patient=patient, name="w", **kw)
