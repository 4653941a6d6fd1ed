"""A first user's hour on the embedded default, against the real local vLLM server.

The embedded default (no database URL: a SQLite file in the data dir) installs the shipped
demo calibration, so a session sent with nothing but the patient, the inquiry and the
candidates is calibrated and says that its model is the demo model; and it runs a calibration
worker in the process, so a run queued over REST finishes without ``pursuit worker``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from app.calibrations.transfer import DEMO_CALIBRATION
from app.db.migrate import upgrade_head
from app.engine.policy import DEFAULT_BANK, named_bank
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_key, open_client

pytestmark = pytest.mark.llm

RUN_TIMEOUT_S = 1200.0


async def test_the_embedded_default_serves_a_calibrated_first_interview_and_runs_calibrations(
    tmp_path: Path, live_server: tuple[str, str]
) -> None:
    base_url, model = live_server
    demo = json.loads(DEMO_CALIBRATION.read_text(encoding="utf-8"))
    if model != demo["model"]:
        pytest.fail(f"the local server serves {model}, the demo calibration is {demo['model']}")
    settings = Settings(data_dir=tmp_path, llm_base_url=base_url, llm_model=model)
    assert settings.is_embedded_default and settings.runs_inprocess_worker
    await asyncio.to_thread(upgrade_head, settings.effective_database_url)  # as `serve` does
    key = await make_key(settings, tenant="local")
    async for client in open_client(create_app(settings), api_key=key):
        created = await client.post(
            "/v1/sessions",
            json={
                "patient": {"summary": "A 34-year-old woman with two days of fever and headache."},
                "inquiry": "What is the most likely diagnosis?",
                "candidates": ["Bacterial meningitis", "Migraine", "Influenza", "Sinusitis"],
            },
        )
        assert created.status_code == 201, created.text
        session = created.json()
        assert session["model_note"] and "Demo model" in session["model_note"]
        differential = session["differential"]
        assert differential["calibrated"] is True, differential["calibration_note"]
        assert differential["calibration_id"] == demo["id"]
        assert differential["calibration_n"] == demo["result"]["n_per_step"][0]
        assert differential["min_calibration_n"] == 9
        assert differential["trivial"] is False
        assert session["next_question"]["text"] in named_bank(DEFAULT_BANK)

        queued = await client.post(
            "/v1/calibrations",
            json={"dataset": "imedqa_dev", "cases": 2, "max_questions": 1, "patient": "retrieval"},
        )
        assert queued.status_code == 202, queued.text
        run = queued.json()
        assert run["status"] in ("queued", "running")
        if run["status"] == "queued":
            assert "own worker" in run["worker_note"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while run["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"the in-process worker left the run {run}"
            await asyncio.sleep(2)
            response = await client.get(f"/v1/calibrations/{run['id']}")
            run = response.json()
        assert run["status"] == "succeeded", run["error"]
        assert run["progress"]["done"] == 2 and run["worker_note"] is None
        # Two cases are too few for a finite threshold at alpha 0.1: stored as such.
        assert run["result"]["thresholds"] == [None, None]


async def test_a_service_without_its_own_worker_says_a_queued_run_waits_for_one(
    tmp_path: Path, live_server: tuple[str, str]
) -> None:
    base_url, model = live_server
    settings = Settings(
        data_dir=tmp_path, llm_base_url=base_url, llm_model=model, inprocess_worker=False
    )
    await asyncio.to_thread(upgrade_head, settings.effective_database_url)
    key = await make_key(settings, tenant="local")
    async for client in open_client(create_app(settings), api_key=key):
        queued = await client.post("/v1/calibrations", json={"dataset": "imedqa_dev", "cases": 2})
        assert queued.status_code == 202, queued.text
        assert "pursuit worker" in queued.json()["worker_note"]
        await asyncio.sleep(3)
        assert (await client.get(f"/v1/calibrations/{queued.json()['id']}")).json()[
            "status"
        ] == "queued"
