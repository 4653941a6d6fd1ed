"""Calibration files: export, import (once, as the platform's, audited), the shipped demo."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.calibrations.transfer import (
    DEMO_CALIBRATION,
    FORMAT,
    export_calibration,
    import_calibration,
    install_demo,
)
from app.conformal.rank import min_calibration_size
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade_head
from app.db.models import AuditEvent, Calibration
from app.engine.policy import DEFAULT_MAX_QUESTIONS, QuestionPolicy
from app.engine.types import ProviderInfo
from app.errors import InvalidInputError
from app.llm import prompts
from app.llm.demo import MODELS
from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _provider
from tests.conftest import insert_scripted_calibration, make_key, open_client

SCRIPTED = ProviderInfo(model="scripted", prompt_version="test")


async def _fresh_sqlite(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    await asyncio.to_thread(upgrade_head, url)  # Alembic runs its own event loop
    return url


async def _rows(url: str, model: type[Any]) -> list[Any]:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as db:
            return list((await db.execute(sa.select(model))).scalars())
    finally:
        await engine.dispose()


async def _export(settings: Settings) -> dict[str, Any]:
    run_id, _ = await insert_scripted_calibration(settings)
    engine = create_engine(settings.effective_database_url)
    try:
        return await export_calibration(
            create_sessionmaker(engine), uuid.UUID(run_id), made_with={"note": "test"}
        )
    finally:
        await engine.dispose()


async def test_an_exported_run_imports_once_as_the_platforms_and_serves(
    settings: Settings, tmp_path: Path
) -> None:
    data = await _export(settings)
    assert data["format"] == FORMAT and "requested_by" not in data["params"]
    json.dumps(data)  # a file: plain JSON
    target = await _fresh_sqlite(tmp_path)
    engine = create_engine(target)
    try:
        maker = create_sessionmaker(engine)
        row, inserted = await import_calibration(maker, data, activate=True)
        again, inserted_again = await import_calibration(maker, data, activate=True)
    finally:
        await engine.dispose()
    assert inserted and not inserted_again and again.id == row.id
    (stored,) = await _rows(target, Calibration)
    assert str(stored.id) == data["id"] and stored.tenant is None and stored.active
    assert stored.status == "succeeded" and stored.result == data["result"]
    assert stored.params["imported"] == {"note": "test"}
    actions = sorted(e.action for e in await _rows(target, AuditEvent))
    assert actions == ["calibration.activate", "calibration.import"]

    # A session of the run's policy on the target database is served by it.
    served = Settings(database_url=target, data_dir=tmp_path, llm_base_url=None, auth_cache_ttl_s=0)
    key = await make_key(served, tenant="clinic")
    async for client in open_client(create_app(served, provider=_provider()), api_key=key):
        body = {
            "patient": {"summary": "fever"},
            "inquiry": "Most likely diagnosis?",
            "candidates": ["Meningitis", "Migraine", "Influenza", "Subarachnoid hemorrhage"],
            "question_source": "generated",
            "n_candidate_questions": 8,
            "n_answers": 4,
            "max_questions": 3,
        }
        response = await client.post("/v1/sessions", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["differential"]["calibration_id"] == data["id"]


@pytest.mark.parametrize(
    "damage",
    [
        {"format": "pursuit.calibration/0"},
        {"result": None},
        {"id": "not-a-uuid"},
        {"alpha": None, "model": None},
    ],
)
async def test_a_damaged_file_is_refused_and_writes_nothing(
    settings: Settings, tmp_path: Path, damage: dict[str, Any]
) -> None:
    data = {**await _export(settings), **damage}
    target = await _fresh_sqlite(tmp_path)
    engine = create_engine(target)
    try:
        with pytest.raises(InvalidInputError):
            await import_calibration(create_sessionmaker(engine), data, activate=True)
    finally:
        await engine.dispose()
    assert await _rows(target, Calibration) == []
    assert await _rows(target, AuditEvent) == []


async def test_the_demo_installs_only_for_its_own_model_and_never_displaces_an_active_run(
    settings: Settings, tmp_path: Path
) -> None:
    data = await _export(settings)
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(data))
    target = await _fresh_sqlite(tmp_path)
    engine = create_engine(target)
    try:
        maker = create_sessionmaker(engine)
        other = ProviderInfo(model="another-model", prompt_version="test")
        assert await install_demo(maker, other, path=demo) is None
        assert await _rows(target, Calibration) == []
        assert str(await install_demo(maker, SCRIPTED, path=demo)) == data["id"]
        (row,) = await _rows(target, Calibration)
        assert row.active  # nothing else served the model: the demo does

        # On a database where the platform already serves the model, the demo only lands.
        second = {**data, "id": str(uuid.uuid4())}
        demo.write_text(json.dumps(second))
        assert str(await install_demo(maker, SCRIPTED, path=demo)) == second["id"]
    finally:
        await engine.dispose()
    active = {str(r.id): r.active for r in await _rows(target, Calibration)}
    assert active == {data["id"]: True, second["id"]: False}


async def test_the_shipped_demo_imports_into_either_database(settings: Settings) -> None:
    """The file came out of SQLite (a naive time); PostgreSQL takes it as well."""
    data = json.loads(DEMO_CALIBRATION.read_text(encoding="utf-8"))
    engine = create_engine(settings.effective_database_url)
    try:
        row, inserted = await import_calibration(create_sessionmaker(engine), data, activate=True)
    finally:
        await engine.dispose()
    assert inserted and str(row.id) == data["id"]
    (stored,) = await _rows(settings.effective_database_url, Calibration)
    assert stored.active and stored.result == data["result"]


def test_the_shipped_demo_calibration_was_made_for_the_defaults_and_the_demo_model() -> None:
    """When the prompts, the defaults or the model change, this fails until the demo file is
    made again (README, "Calibrating for the defaults")."""
    data = json.loads(DEMO_CALIBRATION.read_text(encoding="utf-8"))
    assert data["format"] == FORMAT
    assert data["model"] == MODELS["smollm2"].served_name
    assert data["prompt_version"] == prompts.PROMPT_VERSION
    assert data["max_questions"] == DEFAULT_MAX_QUESTIONS
    assert QuestionPolicy.from_json(data["params"]) == QuestionPolicy.build()
    assert data["params"]["purpose"] == "display" and not data["anytime"]
    result = data["result"]
    needed = min_calibration_size(data["alpha"])
    assert len(result["thresholds"]) == DEFAULT_MAX_QUESTIONS + 1
    for tau, n in zip(result["thresholds"], result["n_per_step"], strict=True):
        # Not a trivial calibration: enough cases, and a threshold that excludes something.
        assert n >= 5 * needed
        assert tau is not None and math.isfinite(tau) and tau < 1
    assert "requested_by" not in data["params"]
