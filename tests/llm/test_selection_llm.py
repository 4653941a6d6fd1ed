"""Calibrated C-IP end to end on the real local vLLM server: a selection calibration, a
C-IP display calibration naming it (both with ``pursuit calibrate``), and sessions.

Small on purpose (9 + 3 cases, T = 1): it checks the plumbing, not the method's numbers.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.datasets import SHIPPED_DATASETS_DIR
from app.settings import Settings, get_settings

DATASET = SHIPPED_DATASETS_DIR / "imedqa_dev.jsonl"
POLICY = [
    "--bank",
    "internal_medicine",
    "--n-questions",
    "2",
    "--n-answers",
    "2",
    "--max-questions",
    "1",
    "--concurrency",
    "2",
]


async def _calibrate(*args: str) -> uuid.UUID:
    """``pursuit calibrate ARGS`` (in a thread: it runs its own event loop); its id."""
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["calibrate", "--dataset", str(DATASET), *POLICY, *args]
    )
    assert result.exit_code == 0, result.output
    return uuid.UUID(result.output.strip().splitlines()[-1])


async def _session(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/sessions",
        json={
            "patient": {"summary": "A 60-year-old man with chest pain on exertion."},
            "inquiry": "What is the most likely diagnosis?",
            "candidates": ["Stable angina", "Pneumonia", "Gastritis", "Pericarditis"],
            "policy": "cip",
            "question_source": "bank",
            "question_bank_name": "internal_medicine",
            "n_candidate_questions": 2,
            "n_answers": 2,
            "max_questions": 1,
            # The 135M model's answers rarely move its posterior: ask whatever the gain.
            "stop_on_no_gain": False,
            **overrides,
        },
    )
    assert response.status_code == 201, response.text
    reply: dict[str, Any] = response.json()
    return reply


@pytest.mark.llm
async def test_a_session_says_which_selection_calibration_chose_its_question(
    live_client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI writes to the database and data directory the app reads.
    monkeypatch.setenv("PURSUIT_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("PURSUIT_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("PURSUIT_REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        selection = await _calibrate("--purpose", "selection", "--cases", "9")
        display = await _calibrate(
            "--policy",
            "cip",
            "--selection-calibration",
            str(selection),
            "--cases",
            "3",
            "--activate",
        )
    finally:
        get_settings.cache_clear()

    runs = {r["id"]: r for r in (await live_client.get("/v1/calibrations")).json()["calibrations"]}
    assert runs[str(selection)]["params"]["purpose"] == "selection"
    assert len(runs[str(selection)]["result"]["thresholds"]) == 3  # tau_0..tau_{T+1}
    assert runs[str(display)]["params"]["selection_calibration_id"] == str(selection)
    assert runs[str(display)]["active"] is True

    served = await _session(live_client)
    assert served["calibration_id"] == str(display)
    question = served["next_question"]
    assert question is not None, served
    assert question["selection_rule"] == "calibrated"
    assert question["selection_calibration_id"] == str(selection)
    assert question["objective"] == "set_size"

    # No calibration with this policy (3 answers a candidate): the nominal rule, said so.
    unserved = await _session(live_client, n_answers=3)
    assert unserved["calibration_id"] is None
    assert unserved["next_question"]["selection_rule"] == "nominal"
    assert unserved["next_question"]["selection_calibration_id"] is None
