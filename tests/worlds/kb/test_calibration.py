"""An HPO deployment calibrated end to end with no LLM server: ``pursuit kb-cases`` writes labelled
cases, ``pursuit calibrate --patient kb`` calibrates C-IP on them under
``PURSUIT_PROVIDER=hpo`` (real PostgreSQL), a session with a held-out case's candidates is
served by that calibration, and the sets cover held-out patients as promised at every step
(Beta-binomial test; the same test rejects sets calibrated at the wrong alpha)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from app.calibrations.interviews import CaseResult, run_cases
from app.calibrations.repository import CalibrationRepository
from app.calibrations.spec import RunSpec
from app.cli.main import cli
from app.conformal.rank import conformal_rank
from app.datasets import MediQCase
from app.db.engine import create_engine, create_sessionmaker
from app.main import create_app
from app.research.report import coverage_p_value
from app.settings import Settings, get_settings
from app.worlds.kb.cases import KbCasePatient
from app.worlds.kb.hpo import HpoKb
from app.worlds.kb.provider import HpoProvider
from tests.conftest import make_key, open_client
from tests.ports import free_port

ALPHA = 0.1
T = 3
CAL_CASES = 100
POLICY = {
    "policy": "cip",
    "question_source": "generated",
    "n_candidate_questions": 3,
    "n_answers": 2,
}
# Per-step level of the coverage test: T + 1 steps, family-wise level 0.01.
LEVEL = 0.01 / (T + 1)


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


@pytest.fixture
def hpo_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The service's settings with the HPO provider; the CLI reads the same from the
    environment (database, data directory, provider; no LLM, no Redis)."""
    monkeypatch.setenv("PURSUIT_PROVIDER", "hpo")
    monkeypatch.setenv("PURSUIT_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("PURSUIT_DATA_DIR", str(settings.data_dir))
    for name in ("PURSUIT_REDIS_URL", "PURSUIT_LLM_BASE_URL", "PURSUIT_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    # No LLM server where the CLI would look for a local one: none is needed.
    monkeypatch.setenv("PURSUIT_LLM_PORT", str(free_port()))
    get_settings.cache_clear()
    yield settings.model_copy(update={"provider": "hpo"})
    get_settings.cache_clear()


async def _stored_result(settings: Settings, run_id: uuid.UUID) -> dict[str, Any]:
    """The run's stored result, scores included (the API shows thresholds only)."""
    engine = create_engine(settings.effective_database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            row = await CalibrationRepository(db).get(run_id)
    finally:
        await engine.dispose()
    assert row is not None and row.result is not None
    return row.result


async def _held_out(spec: RunSpec, test_cases: Sequence[MediQCase], hpo: HpoKb) -> list[CaseResult]:
    """The test split's cases interviewed as the calibration interviewed its own."""
    results: list[CaseResult] = []

    async def keep(result: CaseResult) -> None:
        results.append(result)

    await run_cases(
        list(enumerate(test_cases)),
        spec=spec,
        provider=HpoProvider(hpo),
        patient=KbCasePatient(),
        on_result=keep,
    )
    return results


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_hpo_deployment_is_calibrated_and_serves_calibrated_sets(
    hpo_settings: Settings, hpo: HpoKb, tmp_path: Path
) -> None:
    cases = tmp_path / "hpo.jsonl"
    written = _invoke(
        "kb-cases", "--cases", "300", "--worlds", "10", "--candidates", "10", "--out", str(cases)
    )
    assert written == str(cases)
    policy_flags = ["--policy", "cip", "--question-source", "generated"]
    policy_flags += ["--n-candidate-questions", "3", "--n-answers", "2"]
    run_id = uuid.UUID(
        await asyncio.to_thread(
            _invoke,
            "calibrate",
            "--dataset",
            str(cases),
            "--patient",
            "kb",
            *policy_flags,
            "--max-questions",
            str(T),
            "--cases",
            str(CAL_CASES),
            "--activate",
        )
    )

    key = await make_key(hpo_settings, tenant="clinic-a")
    async for client in open_client(create_app(hpo_settings), api_key=key):
        run = (await client.get(f"/v1/calibrations/{run_id}")).json()
        assert run["status"] == "succeeded" and run["active"] is True, run
        assert run["model"].startswith("hpo:") and run["params"]["patient"] == "kb"
        # The API names the dataset without its server path; the run read this file.
        spec = RunSpec.from_params({**run["params"], "dataset": str(cases)})
        test_cases = spec.splits(await asyncio.to_thread(spec.load_dataset)).test
        held_out = await _held_out(spec, test_cases, hpo)
        case = test_cases[0]
        body: dict[str, Any] = {
            "patient": {"summary": case.summary},
            "inquiry": case.inquiry,
            "candidates": list(case.labels),
            "max_questions": T,
            "stop_on_no_gain": False,
            **POLICY,
        }
        served = await client.post("/v1/sessions", json=body)
        assert served.status_code == 201, served.text
        differential = served.json()["differential"]
        assert differential["calibrated"] is True, differential
        assert served.json()["calibration_id"] == str(run_id)
        assert served.json()["next_question"]["text"].startswith("Does the patient have ")
        # Another policy has no calibration: served, labelled uncalibrated.
        other = await client.post("/v1/sessions", json={**body, "n_answers": 3})
        assert other.status_code == 201 and other.json()["differential"]["calibrated"] is False

    # The same cases and this calibration benchmark C-IP with no LLM either, in a report
    # titled as what the cases are.
    report = tmp_path / "bench"
    await asyncio.to_thread(
        _invoke,
        "bench",
        "--dataset",
        str(cases),
        "--patient",
        "kb",
        "--calibration",
        str(run_id),
        "--policies",
        "cip",
        *policy_flags[2:],
        "--max-questions",
        str(T),
        "--cases",
        "4",
        "--out",
        str(report),
    )
    assert (report / "report.md").read_text().startswith("# Knowledge-base (kb) case interviews")

    thresholds = run["result"]["thresholds"]
    assert len(thresholds) == T + 1 and len(held_out) == len(test_cases)
    scores = np.array([r.scores for r in held_out])  # (n_test, T + 1)
    n_test = len(held_out)
    for k in range(T + 1):
        covered = int((scores[:, k] <= thresholds[k]).sum())
        assert coverage_p_value(covered, n_test, CAL_CASES, ALPHA) >= LEVEL, (k, covered)

    # The test has power: thresholds at alpha 0.4 from the same calibration scores fail it
    # at the last step, where the posteriors have moved (step 0 is the uniform prior).
    cal = np.sort(np.asarray((await _stored_result(hpo_settings, run_id))["scores"][T]))
    assert len(cal) == CAL_CASES
    loose = cal[conformal_rank(CAL_CASES, 0.4) - 1]
    covered = int((scores[:, T] <= loose).sum())
    assert coverage_p_value(covered, n_test, CAL_CASES, ALPHA) < LEVEL
