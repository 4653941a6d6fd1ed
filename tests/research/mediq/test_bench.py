"""The MediQ bench with the scripted provider: stop rule replay, report shape, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from app.calibrations.executor import claim_run, execute_run
from app.calibrations.interviews import (
    case_rng,
    interview_case,
)
from app.calibrations.service import create_run
from app.calibrations.spec import RunSpec
from app.conformal import PerStepCalibration
from app.datasets import MediQCase, load_mediq
from app.db.engine import create_engine, create_sessionmaker
from app.engine import Policy, QuestionSource, StepwiseThresholds, run_interview
from app.errors import InvalidInputError
from app.research.mediq import (
    BenchSpec,
    HeldOutCase,
    _no_gain_flags,
    record_from_test,
    resolve_policies,
    run_bench,
)
from app.research.report import write_report
from tests.calibrations.fakes import StubPatient, scripted_provider, write_dataset

CAL = PerStepCalibration.from_scores([[0.5] * 20, [0.3] * 20, [0.2] * 20], 0.1)


def _case(policy: str, posteriors: list[list[float]], no_gain: list[bool]) -> HeldOutCase:
    return HeldOutCase(
        policy=policy,
        case_id="c",
        true_index=0,
        posteriors=tuple(tuple(p) for p in posteriors),
        no_gain=tuple(no_gain),
        exhausted=False,
    )


def test_the_serving_stop_rule_is_replayed_on_each_test_case() -> None:
    wide, sure = [0.45, 0.45, 0.05, 0.05], [0.8, 0.1, 0.05, 0.05]
    no_gain = record_from_test(
        _case("cip", [wide, sure, sure], [True, False, False]), CAL, max_questions=2
    )
    assert (no_gain.stop_step, no_gain.stop_reason) == (0, "no_gain")
    assert no_gain.steps[0].set_size == 0 and not no_gain.steps[0].covered

    singleton = record_from_test(
        _case("cip", [wide, sure, sure], [False] * 3), CAL, max_questions=2
    )
    assert (singleton.stop_step, singleton.stop_reason) == (1, "singleton")
    assert singleton.steps[1].correct and singleton.steps[1].covered

    budget = record_from_test(_case("random", [wide] * 3, [False] * 3), CAL, max_questions=2)
    assert (budget.stop_step, budget.stop_reason) == (2, "budget")
    exhausted = record_from_test(_case("ip", [wide] * 2, [False] * 2), CAL, max_questions=2)
    assert (exhausted.stop_step, exhausted.stop_reason) == (1, "exhausted")
    none = record_from_test(_case("none", [sure], [False]), CAL, max_questions=2)
    assert (none.stop_step, none.stop_reason, len(none.steps)) == (0, "policy_none", 1)


def _spec(path: Path, **overrides: object) -> BenchSpec:
    fields: dict[str, object] = {
        "dataset": path,
        "policies": ("cip", "random", "none", "all-facts"),
        "alpha": 0.1,
        "max_questions": 2,
        "cases": 8,
        "calibration_cases": 12,
        "question_source": QuestionSource.GENERATED,
        "n_questions": 3,
        "n_answers": 2,
        "calibrate_on": path,
    }
    fields.update(overrides)
    return BenchSpec.create(**fields)


async def test_a_bench_writes_a_consistent_report_and_resumes(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "tiny.jsonl", n=60)
    out = tmp_path / "out"
    provider, patient = scripted_provider(), StubPatient()
    ticks: list[int] = []

    def progress(total: int, already: int):  # type: ignore[no-untyped-def]
        ticks.append(total)
        return lambda n: ticks.append(-n)

    report = await run_bench(
        _spec(path), provider=provider, patient=patient, out_dir=out, progress=progress
    )
    assert ticks[0] == 4 * 12 + 4 * 8 and ticks.count(-1) == ticks[0]
    assert report["cases"] == 8 and report["alpha"] == 0.1 and report["model"] == "scripted"
    assert list(report["policies"]) == ["cip", "random", "none", "all-facts"]
    for name, summary in report["policies"].items():
        steps = summary["steps"]
        assert [s["step"] for s in steps] == list(range(1 if name in ("none", "all-facts") else 3))
        for s in [*steps, summary["final"]]:
            assert s["n"] == 8
            assert 0 <= s["coverage"] <= 1 and 0 <= s["accuracy"] <= 1
            low, high = s["coverage_ci"]
            assert 0 <= low <= s["coverage"] <= high <= 1
            assert 0 <= s["mean_set_size"] <= 4
        assert all(s["n_cal"] == 12 for s in steps)
    assert report["policies"]["none"]["final"]["stop_reasons"] == {"policy_none": 8}
    assert report["calibrations"]["cip"]["n_per_step"] == [12, 12, 12]
    assert report["interviews_computed"] == 80
    written = write_report(out, report, title="test", settings={"x": 1})
    names = {p.name for p in written}
    assert {"report.json", "report.md"} <= names and any(n.endswith(".png") for n in names)
    assert json.loads((out / "report.json").read_text())["policies"]["cip"]["steps"][0]["n"] == 8

    # A rerun finds every case in OUT/cases.jsonl and asks the provider nothing.
    again_provider, again_patient = scripted_provider(), StubPatient()
    again = await run_bench(
        _spec(path), provider=again_provider, patient=again_patient, out_dir=out
    )
    assert again_provider.posterior_calls == [] and again_patient.calls == []
    assert again["policies"] == report["policies"] and again["interviews_computed"] == 0

    with pytest.raises(InvalidInputError, match="other settings"):
        await run_bench(_spec(path, seed=1), provider=provider, patient=patient, out_dir=out)


async def test_test_cases_never_overlap_calibration_cases(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "tiny.jsonl", n=60)
    # Another file with the same cases under other ids: its calibration split holds
    # cases of the dataset's test split, which the fingerprints catch.
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    other = tmp_path / "renamed.jsonl"
    other.write_text("\n".join(json.dumps({**r, "id": f"x{r['id']}"}) for r in rows) + "\n")
    provider = scripted_provider()
    with pytest.raises(InvalidInputError, match="also calibration cases"):
        await run_bench(
            _spec(path, calibrate_on=other, calibration_cases=27, cases=27),
            provider=provider,
            patient=StubPatient(),
            out_dir=tmp_path / "o",
        )
    assert provider.posterior_calls == []


def test_bench_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="either"):
        _spec(tmp_path, calibrate_on=None)
    with pytest.raises(InvalidInputError, match="unknown policies"):
        resolve_policies("cip,oracle")
    assert resolve_policies(" cip, all-facts ") == ("cip", "all-facts")


async def test_a_bench_on_a_stored_calibration(clean_database: str, tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "tiny.jsonl", n=60)
    dataset = load_mediq(path)
    engine = create_engine(clean_database)
    maker = create_sessionmaker(engine)
    try:
        spec = RunSpec.create(
            dataset=str(path),
            dataset_hash=dataset.sha256,
            policy=Policy.CIP,
            alpha=0.1,
            max_questions=2,
            cases=12,
            question_source=QuestionSource.GENERATED,
            bank=None,
            n_questions=3,
            n_answers=2,
        )
        row = await create_run(
            maker, spec=spec, info=scripted_provider().info, name=None, activate=False
        )
        token = await claim_run(maker, row.id, worker="t")
        await execute_run(maker, row.id, token, provider=scripted_provider(), patient=StubPatient())

        stored = _spec(path, policies=("cip", "none"), calibrate_on=None, calibration_ids=(row.id,))
        report = await run_bench(
            stored,
            provider=scripted_provider(),
            patient=StubPatient(),
            out_dir=tmp_path / "out",
            sessionmaker=maker,
        )
        assert report["calibrations"]["cip"]["source"] == str(row.id)
        # The baseline is calibrated in-process on the stored run's own 12 cases.
        assert report["calibrations"]["none"]["n_per_step"] == [12, 12, 12]
        assert report["policies"]["cip"]["steps"][0]["n_cal"] == 12

        for overrides, message in (
            ({"n_answers": 3}, "n_answers=2"),
            ({"policies": ("cip", "ip")}, r"policies \['ip'\]"),
            ({"max_questions": 3}, "covers steps 0..2"),
        ):
            with pytest.raises(InvalidInputError, match=message):
                await run_bench(
                    _spec(path, calibrate_on=None, calibration_ids=(row.id,), **overrides),
                    provider=scripted_provider(),
                    patient=StubPatient(),
                    out_dir=tmp_path / "other",
                    sessionmaker=maker,
                )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("policy", [Policy.CIP, Policy.IP, Policy.RANDOM])
async def test_the_replayed_stop_matches_the_engine_with_serving_stops(
    tmp_path: Path, policy: Policy
) -> None:
    dataset = load_mediq(write_dataset(tmp_path / "tiny.jsonl", n=60))
    spec = RunSpec.create(
        dataset=str(dataset.path),
        dataset_hash=dataset.sha256,
        policy=policy,
        alpha=0.2,
        max_questions=3,
        cases=20,
        question_source=QuestionSource.GENERATED,
        bank=None,
        n_questions=3,
        n_answers=2,
    )
    provider = scripted_provider()
    # tau = 0.35 at every step: a 0.7 posterior makes a singleton, a flat one an empty set.
    calibration = PerStepCalibration.from_scores([[0.35] * 20] * 4, 0.2)
    served = StepwiseThresholds(alpha=0.2, thresholds=tuple(calibration.thresholds))
    serving = replace(spec.interview_config(), stop_on_singleton=True, stop_on_no_gain=True)
    reasons = set()
    for case in spec.splits(dataset).test[:15]:
        full = await interview_case(
            provider=provider,
            patient=StubPatient(),
            case=case,
            config=spec.interview_config(),
            seed=0,
        )
        held_out = HeldOutCase(
            policy=policy.value,
            case_id=case.case_id,
            true_index=case.answer_index,
            posteriors=tuple(tuple(t.differential.posterior) for t in full.turns),
            no_gain=_no_gain_flags(full),
            exhausted=False,
        )
        record = record_from_test(held_out, calibration, max_questions=3)

        async def answer(question: str, case: MediQCase = case) -> str:
            return await StubPatient().patient_reply(facts=case.facts, question=question)

        stopped = await run_interview(
            provider=provider,
            case=case.case_context,
            inquiry=case.inquiry,
            labels=case.labels,
            config=serving,
            thresholds=served,
            answer_fn=answer,
            rng=case_rng(0, case.case_id),
        )
        assert (record.stop_step, record.stop_reason) == (
            len(stopped.turns) - 1,
            stopped.stop_reason.value,
        )
        reasons.add(record.stop_reason)
    assert "singleton" in reasons and len(reasons) >= 2, reasons  # several rules exercised


async def test_the_paper_protocol_asks_each_cases_own_facts_to_its_budget(
    tmp_path: Path,
) -> None:
    path = write_dataset(tmp_path / "tiny.jsonl", n=60)
    spec = _spec(path, protocol="paper", policies=("cip", "ip"), calibration_cases=9, cases=4)
    assert spec.max_questions == 10 and spec.question.n_answers == 12
    assert spec.question.answer_source.value == "sampled"
    assert spec.question.objective.value == "entropy_bound"
    provider, patient = scripted_provider(), StubPatient()
    report = await run_bench(spec, provider=provider, patient=patient, out_dir=tmp_path / "o")
    assert report["settings"]["protocol"] == "paper"
    # Accuracy and coverage at every budget, C-IP paired with IP on the same cases.
    by_budget = report["by_budget"]
    longest = 1 + max(min(len(c.facts), 10) for c in load_mediq(path).cases)
    assert by_budget["budgets"] == list(range(longest)) and by_budget["baselines"] == ["ip"]
    vs_ip = by_budget["policies"]["cip"]["vs"]["ip"]
    assert vs_ip["n"] == 4 and len(vs_ip["accuracy"]["ci"]) == longest
    cases = [json.loads(line) for line in (tmp_path / "o" / "cases.jsonl").read_text().splitlines()]
    by_id = {c.case_id: c for c in load_mediq(path).cases}
    # Selection: random fact-questions of cases from the split's end, never the others'.
    selection = {c["case_id"] for c in cases if c["phase"] == "sel"}
    others = {c["case_id"] for c in cases if c["phase"] != "sel"}
    assert len(selection) == 9 and not selection & others
    for c in cases:
        if c["phase"] == "test":
            facts = len(by_id[c["case_id"]].facts)
            assert len(c["posteriors"]) == min(facts, 10) + 1  # budget, no early stop
    # Every question put to a patient (the interviewed one or a draw) is a case's own fact.
    asked = [question for _, question in patient.calls]
    assert asked and all(q.startswith("Can you tell me about this: ") for q in asked)
    for name in ("cip", "ip"):
        assert report["policies"][name]["final"]["stop_reasons"].keys() <= {"budget", "exhausted"}


async def test_sampled_answers_work_with_the_policys_own_candidates(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "tiny.jsonl", n=60)
    spec = _spec(path, policies=("cip", "ip"), answer_source="sampled", n_answers=3, cases=4)
    patient = StubPatient()
    report = await run_bench(
        spec, provider=scripted_provider(), patient=patient, out_dir=tmp_path / "o"
    )
    assert report["settings"]["answer_source"] == "sampled"
    assert report["policies"]["cip"]["final"]["n"] == 4
    # Estimation cases answered the candidates: the patient was asked from their facts.
    dataset = load_mediq(path)
    estimation = spec.run_spec("cip", dataset=dataset, cases=1).splits(dataset).estimation
    asked_from = {facts for facts, _ in patient.calls}
    assert any(tuple(c.facts) in asked_from for c in estimation)
