"""`pursuit calibrate` then `pursuit bench` end to end against the real local vLLM server.

Small on purpose (3 calibration cases, T = 1, 2 test cases, 2 policies): it checks the
plumbing and the report's consistency, not the method's numbers (docs/results-mediq.md).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.calibrations.repository import CalibrationRepository
from app.cli.main import cli
from app.datasets import SHIPPED_DATASETS_DIR, file_sha256
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import Calibration, CalibrationCase
from app.llm import PROMPT_VERSION
from app.settings import get_settings

DATASET = SHIPPED_DATASETS_DIR / "imedqa_dev.jsonl"
SMALL = ["--n-questions", "2", "--n-answers", "2", "--concurrency", "1", "--max-questions", "1"]


@pytest.fixture
def cli_env(
    live_server: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    monkeypatch.setenv("PURSUIT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PURSUIT_LLM_BASE_URL", live_server[0])
    monkeypatch.setenv("PURSUIT_LLM_MODEL", live_server[1])
    for name in ("PURSUIT_DATABASE_URL", "PURSUIT_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


async def _stored(calibration_id: uuid.UUID) -> tuple[Calibration, list[CalibrationCase]]:
    engine = create_engine(get_settings().effective_database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            repo = CalibrationRepository(db)
            row = await repo.get(calibration_id)
            assert row is not None
            return row, list(await repo.cases(calibration_id))
    finally:
        await engine.dispose()


@pytest.mark.llm
def test_calibrate_then_bench_end_to_end(cli_env: Path, live_server: tuple[str, str]) -> None:
    runner = CliRunner()
    calibrated = runner.invoke(
        cli,
        [
            "calibrate",
            "--dataset",
            str(DATASET),
            "--policy",
            "cip",
            "--cases",
            "3",
            *SMALL,
            "--activate",
            "--name",
            "llm-test",
        ],
    )
    assert calibrated.exit_code == 0, calibrated.output
    calibration_id = uuid.UUID(calibrated.output.strip().splitlines()[-1])

    row, cases = asyncio.run(_stored(calibration_id))
    assert row.status == "succeeded" and row.active and row.name == "llm-test"
    assert (row.model, row.prompt_version, row.policy) == (live_server[1], PROMPT_VERSION, "cip")
    assert row.dataset_hash == file_sha256(DATASET) and row.max_questions == 1
    assert row.result is not None and row.result["n_per_step"] == [3, 3]
    assert len(cases) == 3 and all(len(c.scores) == 2 for c in cases)
    assert all(0.0 <= s <= 1.0 for c in cases for s in c.scores)
    # Scores stored per case are the ones the thresholds were computed from.
    assert row.result["scores"] == [[c.scores[k] for c in cases] for k in range(2)]
    # 3 cases cannot give a finite threshold at alpha 0.1: the run says so.
    assert row.result["insufficient_steps"] == [0, 1]

    out = cli_env / "bench"
    benched = runner.invoke(
        cli,
        [
            "bench",
            "--dataset",
            str(DATASET),
            "--calibration",
            str(calibration_id),
            "--policies",
            "cip,none",
            "--cases",
            "2",
            *SMALL,
            "--out",
            str(out),
        ],
    )
    assert benched.exit_code == 0, benched.output
    assert benched.output.strip().splitlines()[-1] == str(out / "report.json")
    report = json.loads((out / "report.json").read_text())
    assert report["alpha"] == 0.1 and report["cases"] == 2
    assert (report["model"], report["prompt_version"]) == (live_server[1], PROMPT_VERSION)
    assert list(report["policies"]) == ["cip", "none"]
    cip, none = report["policies"]["cip"], report["policies"]["none"]
    assert [s["step"] for s in cip["steps"]] == [0, 1] and len(none["steps"]) == 1
    for entry in [*cip["steps"], cip["final"], *none["steps"], none["final"]]:
        assert entry["n"] == 2
        assert 0 <= entry["accuracy"] <= 1
        # Infinite thresholds (3 calibration cases): every set is the full label set.
        assert entry["coverage"] == 1.0 and entry["mean_set_size"] == 4.0
        low, high = entry["coverage_ci"]
        assert 0 <= low <= entry["coverage"] <= high <= 1
    assert 0 <= cip["final"]["mean_questions"] <= 1 and none["final"]["mean_questions"] == 0
    assert report["calibrations"]["cip"]["source"] == str(calibration_id)
    assert (out / "report.md").is_file() and list(out.glob("*.png"))
    test_ids = {
        json.loads(line)["case_id"]
        for line in (out / "cases.jsonl").read_text().splitlines()
        if json.loads(line)["phase"] == "test"
    }
    assert not test_ids & {c.case_id for c in cases}


@pytest.mark.llm
def test_bench_with_the_retrieval_patient_and_estimation_answers(
    cli_env: Path,
    live_server: tuple[str, str],
) -> None:
    """The cheap setting of docs/results-mediq.md: every patient reply is a fact or a refusal."""
    out = cli_env / "bench-retrieval"
    benched = CliRunner().invoke(
        cli,
        [
            "bench",
            "--dataset",
            str(DATASET),
            "--calibrate-on",
            str(DATASET),
            "--calibration-cases",
            "3",
            "--policies",
            "ip",
            "--cases",
            "2",
            "--patient",
            "retrieval",
            "--answer-source",
            "estimation",
            *SMALL,
            "--out",
            str(out),
        ],
    )
    assert benched.exit_code == 0, benched.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["patient"] == "retrieval"
    assert report["settings"]["answer_source"] == "estimation"
    ip = report["policies"]["ip"]
    assert [s["n"] for s in ip["steps"]] == [2, 2] and ip["final"]["n"] == 2
