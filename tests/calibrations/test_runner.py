"""The calibration runner with the scripted provider: scores per step, thresholds."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from app.calibrations.answers import EstimationAnswers
from app.calibrations.interviews import (
    CaseResult,
    compute_calibration,
    interview_case,
    padded_scores,
    run_cases,
)
from app.calibrations.results import thresholds_from_result
from app.calibrations.spec import RunSpec
from app.conformal import conformal_threshold, lac_threshold
from app.datasets import MediQDataset, load_mediq
from app.engine import Policy, QuestionSource
from app.engine.policy import DEFAULT_BANK
from app.engine.types import CaseContext
from app.errors import InvalidInputError
from tests.calibrations.fakes import StubPatient, scripted_provider, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> MediQDataset:
    return load_mediq(write_dataset(tmp_path / "tiny.jsonl", n=40))


def spec_for(dataset: MediQDataset, **overrides: object) -> RunSpec:
    fields: dict[str, object] = {
        "dataset": str(dataset.path),
        "dataset_hash": dataset.sha256,
        "policy": Policy.CIP,
        "alpha": 0.1,
        "max_questions": 2,
        "cases": 12,
        "question_source": QuestionSource.GENERATED,
        "bank": None,
        "n_questions": 3,
        "n_answers": 2,
        "concurrency": 3,
    }
    fields.update(overrides)
    return RunSpec.create(**fields)


async def _run(spec: RunSpec, dataset: MediQDataset) -> list[CaseResult]:
    results: list[CaseResult] = []

    async def keep(r: CaseResult) -> None:
        results.append(r)

    cases = list(enumerate(spec.calibration_cases(dataset)))
    await run_cases(
        cases, spec=spec, provider=scripted_provider(), patient=StubPatient(), on_result=keep
    )
    return sorted(results, key=lambda r: r.position)


@pytest.mark.parametrize("policy", [Policy.CIP, Policy.IP, Policy.RANDOM])
async def test_scores_are_one_minus_the_true_label_posterior_at_every_step(
    dataset: MediQDataset, policy: Policy
) -> None:
    spec = spec_for(dataset, policy=policy)
    results = await _run(spec, dataset)
    cases = spec.calibration_cases(dataset)
    assert [r.case_id for r in results] == [c.case_id for c in cases]
    provider = scripted_provider()
    for result, case in zip(results, cases, strict=True):
        # Replay the same interview and read p(true | h_k) off the provider's table.
        trajectory = await interview_case(
            provider=provider,
            patient=StubPatient(),
            case=case,
            config=spec.interview_config(),
            seed=spec.seed,
        )
        history = trajectory.history
        assert len(history) == spec.max_questions and result.steps_run == 3
        expected = [1.0 - provider.posterior(history[:k])[case.answer_index] for k in range(3)]
        assert result.scores == pytest.approx(expected, abs=1e-12)
        assert result.stop_reason == "budget"
        # The patient's answers are what the history holds.
        assert {qa.answer for qa in history} == {"yes" if "38 C" in case.facts[0] else "no"}


async def test_thresholds_equal_the_conformal_core_on_the_same_scores(
    dataset: MediQDataset,
) -> None:
    spec = spec_for(dataset, cases=15)
    results = await _run(spec, dataset)
    per_step = [[r.scores[k] for r in results] for k in range(3)]
    provider = scripted_provider()
    calibration, result = compute_calibration(results, spec=spec, info=provider.info)
    assert result["thresholds"] == [float(lac_threshold(np.asarray(s), 0.1)) for s in per_step]
    assert list(calibration.thresholds) == result["thresholds"]
    assert result["n_per_step"] == [15, 15, 15] and result["scores"] == per_step
    assert result["selection"] is None and result["step_alpha"] == pytest.approx(0.1)
    assert result["conformal"]["metadata"]["policy"] == "cip"
    # Serving reads it back as engine thresholds.
    served = thresholds_from_result(result)
    assert served.alpha == 0.1 and served.thresholds == tuple(result["thresholds"])

    # Anytime: alpha / (T + 1) = 1/30 per step; 15 cases are too few (rank 16 > 15).
    anytime = spec_for(dataset, cases=15, anytime=True)
    _, any_result = compute_calibration(results, spec=anytime, info=provider.info)
    assert any_result["conformal"]["step_alpha_exact"] == "1/30"
    expected = [conformal_threshold(s, Fraction(1, 30)).value for s in per_step]
    assert any_result["thresholds"] == [None if math.isinf(v) else v for v in expected]
    assert any_result["insufficient_steps"] == [0, 1, 2]


async def test_mondrian_groups_are_stored_with_the_pooled_thresholds(
    dataset: MediQDataset,
) -> None:
    spec = spec_for(dataset, cases=18, group_by="specialty")
    results = await _run(spec, dataset)
    _, result = compute_calibration(results, spec=spec, info=scripted_provider().info)
    groups = result["groups"][0]["groups"]
    assert set(groups) == {"Internal Medicine", "Pediatrics", "Neurology"}
    assert sum(g["n"] for g in groups.values()) == 18
    assert result["conformal"]["steps"][0]["groups"] is not None


async def test_an_exhausted_case_repeats_its_last_row(dataset: MediQDataset) -> None:
    spec = spec_for(dataset, max_questions=6, n_questions=4)  # only 4 proposals exist
    case = spec.calibration_cases(dataset)[0]
    trajectory = await interview_case(
        provider=scripted_provider(),
        patient=StubPatient(),
        case=case,
        config=spec.interview_config(),
        seed=0,
    )
    assert trajectory.stop_reason.value == "exhausted" and len(trajectory.turns) == 5
    scores = padded_scores(trajectory, case.true_label, 6)
    assert len(scores) == 7 and scores[4:] == (scores[4],) * 3


def test_a_spec_round_trips_and_refuses_nonsense(dataset: MediQDataset) -> None:
    spec = spec_for(dataset, group_by="specialty", anytime=True, specialty="Pediatrics")
    assert RunSpec.from_params(spec.to_params()) == spec
    with pytest.raises(InvalidInputError, match="calibration split has"):
        spec_for(dataset, cases=500).calibration_cases(dataset)
    with pytest.raises(InvalidInputError):
        spec_for(dataset, alpha=1.5)
    with pytest.raises(InvalidInputError, match="bank"):
        spec_for(dataset, question_source=QuestionSource.BANK, bank="cardiology")
    # A bank source with no bank (null) is the default bank, as for sessions.
    defaulted = spec_for(dataset, question_source=QuestionSource.BANK, bank=None)
    assert defaulted.question.question_bank_name == DEFAULT_BANK


async def test_estimation_answers_come_from_estimation_patients(
    dataset: MediQDataset,
) -> None:
    pool = spec_for(dataset).splits(dataset).estimation
    patient = StubPatient()
    provider = EstimationAnswers(scripted_provider(), patient=patient, pool=pool, seed=3)
    case = CaseContext(summary="x")
    first = await provider.simulate_answers(
        case=case, history=(), question="Any cough?", labels=(), m=3
    )
    drawn = provider.draw("Any cough?", 3)
    assert len(drawn) == 3 and provider.draw("any  COUGH?", 3) == drawn
    replies = ["yes" if "38 C" in c.facts[0] else "no" for c in drawn]
    assert {a.text: a.weight for a in first} == {r: replies.count(r) / 3 for r in set(replies)}
    again = await provider.simulate_answers(
        case=case, history=(), question="Any cough?", labels=(), m=3
    )
    assert again == first and len(patient.calls) == 3  # cached, deterministic
    assert provider.info.extra["answers"] == "estimation"
