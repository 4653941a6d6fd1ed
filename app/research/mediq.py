"""The MediQ benchmark: interview held-out cases with the simulated patient, report.

For every policy:

1. calibration (per step, 0..T): a stored calibration run for that policy
   (``--calibration ID``), or an in-process one on the calibration split of
   ``--calibrate-on PATH`` (same runner as ``pursuit calibrate``). The baselines ``none``
   (ask nothing: the lower bound) and ``all-facts`` (every fact given up front as history:
   the upper bound) are always calibrated in-process on the same calibration cases; each is
   one posterior per case.
2. test: the first ``cases`` cases of the dataset's test split are interviewed to the
   budget without early stops; the serving stop rule is then replayed on each case: the
   first step whose calibrated set is a singleton, else the budget (or running out of
   candidates), else the first step where C-IP/IP expect no gain (as serving's
   ``stop_on_no_gain``). One ``app.research.report.CaseRecord`` per (policy, case).

Test and calibration cases never overlap: both come from seeded disjoint splits, and the
bench checks the case fingerprints (inquiry, options, context) of the two sets anyway.

Every finished case (calibration or test) is appended to ``OUT/cases.jsonl`` and a rerun
with the same settings skips it, so a crashed bench resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.calibrations.answers import EstimationAnswers
from app.calibrations.interviews import (
    CaseResult,
    compute_calibration,
    interview_case,
    padded_scores,
)
from app.calibrations.patients import patient_for
from app.calibrations.repository import CalibrationRepository
from app.calibrations.spec import AnswerSource, PatientKind, RunSpec
from app.conformal import PerStepCalibration
from app.datasets import MediQCase, MediQDataset, SplitFractions, load_mediq, shared_cases
from app.db.status import CalibrationStatus
from app.engine import Policy, QuestionSource, StepwiseThresholds, Trajectory
from app.engine.policy import QuestionPolicy, split_policy_fields
from app.engine.types import QA, PosteriorProvider, ProviderInfo
from app.errors import InvalidInputError
from app.patients.protocol import SimulatedPatient
from app.research.report import BASELINES, CaseRecord, StepOutcome, build_report

__all__ = [
    "ALL_FACTS",
    "ALL_FACTS_QUESTION",
    "BENCH_POLICIES",
    "BenchSpec",
    "CaseLog",
    "HeldOutCase",
    "record_from_test",
    "resolve_policies",
    "run_bench",
]

ALL_FACTS = "all-facts"
# --protocol paper (the official code's MediQ runs, src/mediq/mediq_conformal.py): each case's
# own facts are its candidate questions, 12 estimation cases drawn per step answer every
# candidate (the paper's n_ent_samples), its entropy bound, budget min(#facts, 10), no stop.
PAPER_POLICY = {"answer_source": "sampled", "n_answers": 12, "objective": "entropy_bound"}
PAPER_BUDGET = 10
FACT_QUESTION = "Can you tell me about this: {fact}"
BENCH_POLICIES = ("cip", "ip", "random", "fixed", "none", ALL_FACTS)
ALL_FACTS_QUESTION = "Please tell me everything about your condition."

Progress = Callable[[int], None]
# run_spec() only reads the path and hash of a dataset when checking settings.
_NO_DATASET = MediQDataset(path=Path("-"), sha256="", cases=())


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """Everything that defines a bench run (recorded in report.json)."""

    dataset: Path
    policies: tuple[str, ...]
    max_questions: int = 3
    cases: int = 30
    calibration_cases: int = 60
    seed: int = 0
    anytime: bool = False
    # The question policy every interview policy of the run shares (its ``policy`` is
    # replaced by each of ``policies``).
    question: QuestionPolicy = field(default_factory=lambda: QuestionPolicy.build())
    patient: PatientKind = PatientKind.LLM
    specialty: str | None = None
    stratify: bool = True
    fractions: SplitFractions = field(default_factory=SplitFractions)
    concurrency: int = 4
    calibrate_on: Path | None = None
    calibration_ids: tuple[uuid.UUID, ...] = ()
    protocol: str = "default"  # "paper": PAPER below, the official code's MediQ runs

    def __post_init__(self) -> None:
        object.__setattr__(self, "patient", PatientKind(self.patient))
        if not self.policies:
            raise InvalidInputError("need at least one policy")
        unknown = [p for p in self.policies if p not in BENCH_POLICIES]
        if unknown:
            raise InvalidInputError(
                f"unknown policies {unknown}; choose from {', '.join(BENCH_POLICIES)}"
            )
        if len(set(self.policies)) != len(self.policies):
            raise InvalidInputError("policies repeat")
        if (self.calibrate_on is None) == (not self.calibration_ids):
            raise InvalidInputError("give either --calibration ID(s) or --calibrate-on PATH")
        if self.cases < 1 or self.calibration_cases < 1:
            raise InvalidInputError("cases and calibration cases must be >= 1")
        if self.protocol not in ("default", "paper"):
            raise InvalidInputError(f"protocol must be default or paper, got {self.protocol!r}")
        if self.protocol == "paper" and self.calibrate_on is None:
            raise InvalidInputError("--protocol paper calibrates in-process: give --calibrate-on")
        if self.question.selection_calibration_id is not None:
            raise InvalidInputError(
                "the MediQ bench does not load selection calibrations yet: its C-IP uses the "
                "nominal selection rule"
            )

    @classmethod
    def create(cls, **fields: Any) -> BenchSpec:
        """From flat fields: the question policy's (its defaults where missing;
        ``policy`` is per interview policy, see ``policies``) and the bench's own."""
        policy, own = split_policy_fields(fields)
        if own.get("protocol") == "paper":
            policy = {**policy, **PAPER_POLICY}
            own["max_questions"] = PAPER_BUDGET
        return cls(question=QuestionPolicy.build(**policy), **own)

    @property
    def alpha(self) -> float:
        return self.question.alpha

    @property
    def paper(self) -> bool:
        return self.protocol == "paper"

    @property
    def _unused_fields(self) -> tuple[str, ...]:
        """Question-policy fields the settings leave out: per policy, or (paper) not used."""
        per_policy = ("policy", "alpha")
        if not self.paper:
            return per_policy
        return (
            *per_policy,
            "question_source",
            "question_bank_name",
            "question_bank",
            "n_candidate_questions",
        )

    @property
    def stop_rule(self) -> str:
        """The stop rule the "at the stop" tables replay, in words."""
        if self.paper:
            return (
                "none but the budget (paper protocol): read the per-budget tables; the "
                "at-the-stop tables replay serving's rule on the same interviews"
            )
        return "singleton set under tau_k, budget, no gain (cip/ip)"

    def run_spec(self, policy: str, *, dataset: MediQDataset, cases: int) -> RunSpec:
        """The calibration/test interview definition of one policy on one file."""
        engine_policy = Policy.NONE if policy == ALL_FACTS else Policy(policy)
        update: dict[str, Any] = {"policy": engine_policy}
        if engine_policy is not Policy.CIP:
            update["selection_calibration_id"] = None
        return RunSpec(
            dataset=str(dataset.path),
            dataset_hash=dataset.sha256,
            question=QuestionPolicy.build(**{**self.question.to_json(), **update}),
            max_questions=self.max_questions,
            cases=cases,
            seed=self.seed,
            anytime=self.anytime,
            patient=self.patient,
            specialty=self.specialty,
            stratify="specialty" if self.stratify else None,
            fractions=self.fractions,
            concurrency=self.concurrency,
        )

    def settings(self) -> dict[str, Any]:
        """JSON-safe summary (report.json ``settings``; also the resume fingerprint)."""
        return {
            "dataset": str(self.dataset),
            "policies": list(self.policies),
            "alpha": self.alpha,
            "max_questions": self.max_questions,
            "test_cases": self.cases,
            "calibration_cases": self.calibration_cases,
            "seed": self.seed,
            "anytime": self.anytime,
            **{k: v for k, v in self.question.to_json().items() if k not in self._unused_fields},
            "patient": self.patient.value,
            "specialty": self.specialty,
            "stratify": "specialty" if self.stratify else None,
            "fractions": self.fractions.as_dict(),
            "calibrate_on": None if self.calibrate_on is None else str(self.calibrate_on),
            "protocol": self.protocol,
            "candidate_questions": "the case's own facts" if self.paper else "the policy's",
            "calibration_ids": [str(i) for i in self.calibration_ids],
        }


@dataclass(frozen=True, slots=True)
class HeldOutCase:
    """One test interview: posteriors at steps 0..S-1, where C-IP/IP expected no gain."""

    policy: str
    case_id: str
    true_index: int
    posteriors: tuple[tuple[float, ...], ...]
    no_gain: tuple[bool, ...]
    exhausted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": "test",
            "policy": self.policy,
            "case_id": self.case_id,
            "true_index": self.true_index,
            "posteriors": [list(p) for p in self.posteriors],
            "no_gain": list(self.no_gain),
            "exhausted": self.exhausted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeldOutCase:
        return cls(
            policy=data["policy"],
            case_id=data["case_id"],
            true_index=int(data["true_index"]),
            posteriors=tuple(tuple(float(x) for x in p) for p in data["posteriors"]),
            no_gain=tuple(bool(x) for x in data["no_gain"]),
            exhausted=bool(data["exhausted"]),
        )


class CaseLog:
    """``OUT/cases.jsonl``: every finished case, appended; read back on resume.

    ``OUT/run.json`` holds the settings fingerprint; a directory with another run's cases
    is refused (use another ``--out`` or ``--fresh``).
    """

    def __init__(self, out_dir: Path, fingerprint: str, *, fresh: bool = False) -> None:
        self.path = out_dir / "cases.jsonl"
        marker = out_dir / "run.json"
        out_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.path.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
        if marker.exists():
            recorded = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
            if recorded != fingerprint and self.path.exists():
                raise InvalidInputError(
                    f"{out_dir} holds a bench run with other settings; use another --out or --fresh"
                )
        marker.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")
        self.entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: that case is simply redone
                self.entries[(entry["phase"], entry["policy"], entry["case_id"])] = entry
        self._lock = asyncio.Lock()

    def get(self, phase: str, policy: str, case_id: str) -> dict[str, Any] | None:
        return self.entries.get((phase, policy, case_id))

    async def add(self, entry: dict[str, Any]) -> None:
        async with self._lock:
            self.entries[(entry["phase"], entry["policy"], entry["case_id"])] = entry
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, allow_nan=False) + "\n")


@dataclass
class _Phase:
    """Cases of one file with the provider that interviews them, and how: ``paper`` (the
    case's own facts as candidates, see ``_interview``) and C-IP's selection thresholds."""

    dataset: MediQDataset
    cases: tuple[MediQCase, ...]
    provider: PosteriorProvider
    sampler: EstimationAnswers | None = None  # the estimation split, for sampled answers
    paper: bool = False
    selection: StepwiseThresholds | None = None


def _no_gain_flags(trajectory: Trajectory) -> tuple[bool, ...]:
    """Per step: would serving's ``stop_on_no_gain`` have stopped here (the engine's own
    ``TurnOutcome.gain``, recorded with the rule off; cip/ip only)."""
    return tuple(turn.gain is False for turn in trajectory.turns)


def record_from_test(
    test: HeldOutCase, calibration: PerStepCalibration, *, max_questions: int, stops: bool = True
) -> CaseRecord:
    """Outcomes at every step under tau_k, and the serving stop rule replayed (``stops``;
    off, the interview stops at its budget, as in the paper)."""
    posteriors = np.asarray(test.posteriors, dtype=np.float64)
    sets = calibration.prediction_sets(1.0 - posteriors)
    sizes = sets.sum(axis=1)
    top = posteriors.argmax(axis=1)
    last = len(test.posteriors) - 1
    stop, reason = last, "budget" if last >= max_questions else "exhausted"
    if test.policy == "none":
        reason = "policy_none"
    elif test.policy == ALL_FACTS:
        reason = "all_facts"
    elif stops:
        for k in range(last + 1):
            if sizes[k] == 1:
                stop, reason = k, "singleton"
                break
            if k == last:
                break
            if test.no_gain[k]:
                stop, reason = k, "no_gain"
                break
    return CaseRecord(
        policy=test.policy,
        case_id=test.case_id,
        steps=tuple(
            StepOutcome(
                correct=bool(top[k] == test.true_index),
                covered=bool(sets[k, test.true_index]),
                set_size=int(sizes[k]),
            )
            for k in range(last + 1)
        ),
        stop_step=stop,
        stop_reason=reason,
    )


async def _interview(
    policy: str,
    case: MediQCase,
    spec: RunSpec,
    phase: _Phase,
    patient: SimulatedPatient,
    on_fallback: Callable[[], None] | None = None,
    *,
    budget: int | None = None,
) -> Trajectory:
    """One interview to its budget; ``phase.paper``: the case's facts as its candidates,
    budget min(#facts, ``budget`` or T). Sampled answers: the step's estimation cases."""
    history: tuple[QA, ...] = ()
    if policy == ALL_FACTS:
        history = (QA(ALL_FACTS_QUESTION, " ".join(case.facts) or "Nothing else."),)
    config = spec.interview_config()
    draws = None
    if phase.paper:
        questions = tuple(FACT_QUESTION.format(fact=f) for f in case.facts)
        config = dataclasses.replace(
            config,
            question_source=QuestionSource.BANK,
            bank=questions or (ALL_FACTS_QUESTION,),
            max_candidates=None,
            max_questions=min(
                len(questions), budget if budget is not None else config.max_questions
            ),
            explain_baselines=False,
        )
    if phase.sampler is not None:  # answer source sampled: the step's estimation cases
        draws = functools.partial(phase.sampler.draws, case.case_id, m=config.n_answers)
    return await interview_case(
        provider=phase.provider,
        patient=patient,
        case=case,
        config=config,
        seed=spec.seed,
        history=history,
        on_fallback=on_fallback,
        selection=phase.selection,
        draws=draws,
    )


async def _paper_selection(
    spec: RunSpec,
    answers: _AnswerSources,
    dataset: MediQDataset,
    n: int,
    *,
    patient: SimulatedPatient,
    log: CaseLog,
    avoid: Sequence[MediQCase],
) -> StepwiseThresholds:
    """The paper's selection thresholds (src/mediq/mediq_conformal_thresholds.py): the last
    ``n`` cases of the calibration split each ask their own fact-questions in a seeded
    random order; tau_k from their true-label scores at k = 0..T+1. No case is shared with
    ``avoid`` (calibration and test cases; checked by fingerprint)."""
    cases = spec.selection_cases(dataset, n)
    shared = shared_cases(cases, avoid)
    if shared:
        raise InvalidInputError(
            f"{shared} selection case(s) are also calibration or test cases: use fewer "
            "--calibration-cases (the selection takes as many from the split's end)"
        )
    random_spec = dataclasses.replace(
        spec, question=spec.question.model_copy(update={"policy": Policy.RANDOM})
    )
    phase = answers.phase(dataset, cases, random_spec, paper=True)
    horizon = spec.max_questions + 1
    scores: dict[str, list[float]] = {}

    async def one(case: MediQCase) -> None:
        cached = log.get("sel", "random", case.case_id)
        if cached is None:
            trajectory = await _interview(
                "random", case, random_spec, phase, patient, budget=horizon
            )
            cached = {
                "phase": "sel",
                "policy": "random",
                "case_id": case.case_id,
                "scores": list(padded_scores(trajectory, case.true_label, horizon)),
            }
            await log.add(cached)
        scores[case.case_id] = [float(x) for x in cached["scores"]]

    await _bounded(cases, spec.concurrency, one)
    rows = [scores[c.case_id] for c in cases]
    return StepwiseThresholds.from_scores(
        [[r[k] for r in rows] for k in range(horizon + 1)], spec.alpha
    )


async def _bounded(
    items: Sequence[MediQCase], limit: int, fn: Callable[[MediQCase], Awaitable[None]]
) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(case: MediQCase) -> None:
        async with semaphore:
            await fn(case)

    async with asyncio.TaskGroup() as group:
        for case in items:
            group.create_task(one(case))


async def _calibrate(
    policy: str,
    phase: _Phase,
    spec: RunSpec,
    *,
    patient: SimulatedPatient,
    log: CaseLog,
    info: ProviderInfo,
    progress: Progress,
) -> PerStepCalibration:
    """Per-step thresholds of one policy from its calibration interviews (resumable)."""
    results: dict[str, CaseResult] = {}
    positions = {c.case_id: i for i, c in enumerate(phase.cases)}

    async def one(case: MediQCase) -> None:
        cached = log.get("cal", policy, case.case_id)
        if cached is None:
            started = time.perf_counter()
            fell_back: list[int] = []
            trajectory = await _interview(
                policy,
                case,
                spec,
                phase,
                patient,
                lambda: fell_back.append(1),
            )
            cached = {
                "phase": "cal",
                "policy": policy,
                "case_id": case.case_id,
                "scores": list(padded_scores(trajectory, case.true_label, spec.max_questions)),
                "steps_run": len(trajectory.turns),
                "stop_reason": trajectory.stop_reason.value,
                "posterior_evaluations": sum(t.posterior_evaluations for t in trajectory.turns),
                "seconds": round(time.perf_counter() - started, 3),
                "patient_fallbacks": len(fell_back),
            }
            await log.add(cached)
        results[case.case_id] = CaseResult(
            case_id=case.case_id,
            position=positions[case.case_id],
            group=None,
            scores=tuple(cached["scores"]),
            steps_run=int(cached["steps_run"]),
            stop_reason=str(cached["stop_reason"]),
            posterior_evaluations=int(cached["posterior_evaluations"]),
            seconds=float(cached["seconds"]),
        )
        progress(1)

    await _bounded(phase.cases, spec.concurrency, one)
    calibration, _ = compute_calibration(list(results.values()), spec=spec, info=info)
    return calibration


async def _test(
    policy: str,
    phase: _Phase,
    spec: RunSpec,
    *,
    patient: SimulatedPatient,
    log: CaseLog,
    progress: Progress,
) -> list[HeldOutCase]:
    """Test interviews of one policy to the budget (resumable)."""
    out: dict[str, HeldOutCase] = {}

    async def one(case: MediQCase) -> None:
        cached = log.get("test", policy, case.case_id)
        if cached is None:
            fell_back: list[int] = []
            trajectory = await _interview(
                policy,
                case,
                spec,
                phase,
                patient,
                lambda: fell_back.append(1),
            )
            test = HeldOutCase(
                policy=policy,
                case_id=case.case_id,
                true_index=case.answer_index,
                posteriors=tuple(tuple(t.differential.posterior) for t in trajectory.turns),
                no_gain=_no_gain_flags(trajectory),
                exhausted=trajectory.stop_reason.value == "exhausted",
            )
            await log.add({**test.to_json(), "patient_fallbacks": len(fell_back)})
        else:
            test = HeldOutCase.from_json(cached)
        out[case.case_id] = test
        progress(1)

    await _bounded(phase.cases, spec.concurrency, one)
    return [out[c.case_id] for c in phase.cases]


@dataclass
class _AnswerSources:
    """One estimation-answer wrapper per dataset file, shared by every policy of the run.

    The policies draw the same candidate questions at step 0 (each case's rng is seeded by
    the case), so sharing the wrapper's reply cache saves most of their patient calls.
    """

    provider: PosteriorProvider
    patient: SimulatedPatient
    wrappers: dict[str, EstimationAnswers] = field(default_factory=dict)

    def phase(
        self,
        dataset: MediQDataset,
        cases: tuple[MediQCase, ...],
        spec: RunSpec,
        *,
        paper: bool = False,
        selection: StepwiseThresholds | None = None,
    ) -> _Phase:
        """The cases with the provider (and sampler) their answer source needs."""
        source = spec.question.answer_source
        provider = self._wrapper(dataset, spec) if source is AnswerSource.ESTIMATION else None
        sampler = self._wrapper(dataset, spec) if source is AnswerSource.SAMPLED else None
        return _Phase(dataset, cases, provider or self.provider, sampler, paper, selection)

    def _wrapper(self, dataset: MediQDataset, spec: RunSpec) -> EstimationAnswers:
        key = dataset.sha256
        if key not in self.wrappers:
            self.wrappers[key] = EstimationAnswers(
                self.provider,
                patient=self.patient,
                pool=spec.splits(dataset).estimation,
                seed=spec.seed,
            )
        return self.wrappers[key]

    @property
    def fallbacks(self) -> int:
        return sum(w.fallbacks for w in self.wrappers.values())


def _check_same_policy(calibration_id: uuid.UUID, spec: RunSpec, bench: BenchSpec) -> None:
    """A stored calibration only holds for the question policy it was run with."""
    ours = bench.run_spec(spec.policy.value, dataset=_NO_DATASET, cases=1)
    theirs_json, ours_json = spec.question.to_json(), ours.question.to_json()
    theirs_json["patient"], ours_json["patient"] = spec.patient.value, ours.patient.value
    differ = [f for f in theirs_json if f != "policy" and theirs_json[f] != ours_json[f]]
    if differ:
        shown = ", ".join(f"{f}={theirs_json[f]!s}" for f in differ)
        raise InvalidInputError(
            f"calibration {calibration_id} was run with {shown}; pass the same to the bench"
        )


async def _stored_calibrations(
    sessionmaker: async_sessionmaker[AsyncSession],
    ids: Sequence[uuid.UUID],
    *,
    bench: BenchSpec,
    info: ProviderInfo,
) -> tuple[dict[str, PerStepCalibration], dict[str, str], RunSpec, list[str]]:
    """Stored runs by policy, the first one's spec and its case ids (for the baselines)."""
    by_policy: dict[str, PerStepCalibration] = {}
    sources: dict[str, str] = {}
    first: tuple[RunSpec, list[str]] | None = None
    async with sessionmaker() as db:
        repo = CalibrationRepository(db)
        for calibration_id in ids:
            row = await repo.get(calibration_id)
            if row is None:
                raise InvalidInputError(f"no calibration {calibration_id}")
            if row.status != CalibrationStatus.SUCCEEDED or row.result is None:
                raise InvalidInputError(f"calibration {calibration_id} is {row.status}")
            if (row.model, row.prompt_version) != (info.model, info.prompt_version):
                raise InvalidInputError(
                    f"calibration {calibration_id} is for {row.model!r}/{row.prompt_version!r}; "
                    f"the LLM server runs {info.model!r}/{info.prompt_version!r}"
                )
            if abs(row.alpha - bench.alpha) > 1e-9 or row.anytime != bench.anytime:
                raise InvalidInputError(
                    f"calibration {calibration_id} has alpha {row.alpha}, anytime {row.anytime}"
                )
            if row.policy in by_policy:
                raise InvalidInputError(f"two calibrations for policy {row.policy!r}")
            spec = RunSpec.from_params(row.params)
            _check_same_policy(calibration_id, spec, bench)
            if spec.max_questions < bench.max_questions:
                raise InvalidInputError(
                    f"calibration {calibration_id} covers steps 0..{spec.max_questions}; the "
                    f"bench asks up to {bench.max_questions} questions"
                )
            by_policy[row.policy] = PerStepCalibration.from_dict(row.result["conformal"])
            sources[row.policy] = str(calibration_id)
            if first is None:
                cases = [c.case_id for c in await repo.cases(calibration_id)]
                first = (spec, cases)
    assert first is not None
    return by_policy, sources, first[0], first[1]


async def run_bench(
    bench: BenchSpec,
    *,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
    out_dir: Path,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    fresh: bool = False,
    progress: Callable[[int, int], Progress] | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Calibrate (or load) and test every policy; returns the report.json dict.

    ``progress(total, 0)`` returns a callback advanced by one per finished case (cached
    ones included, at once).
    """
    started = time.perf_counter()
    info = provider.info
    patient = await patient_for(bench.patient, patient)
    dataset = await asyncio.to_thread(load_mediq, bench.dataset, strict=False)
    for problem in dataset.problems:
        echo(f"skipped {bench.dataset} {problem}")
    base = bench.run_spec("none", dataset=dataset, cases=1)
    test_cases = base.splits(dataset).test[: bench.cases]
    if len(test_cases) < bench.cases:
        raise InvalidInputError(
            f"the test split has {len(base.splits(dataset).test)} cases, {bench.cases} asked"
        )

    stored: dict[str, PerStepCalibration] = {}
    sources: dict[str, str] = {}
    if bench.calibration_ids:
        if sessionmaker is None:
            raise InvalidInputError("--calibration needs the database")
        stored, sources, cal_spec, cal_ids = await _stored_calibrations(
            sessionmaker, bench.calibration_ids, bench=bench, info=info
        )
        cal_dataset = await asyncio.to_thread(load_mediq, cal_spec.dataset, strict=False)
        if cal_dataset.sha256 != cal_spec.dataset_hash:
            raise InvalidInputError(f"dataset {cal_spec.dataset} changed since calibration")
        by_id = cal_dataset.by_id()
        cal_cases = tuple(by_id[i] for i in cal_ids)
        missing = [p for p in bench.policies if p not in ("none", ALL_FACTS) and p not in stored]
        if missing:
            raise InvalidInputError(f"no --calibration given for policies {missing}")
    else:
        assert bench.calibrate_on is not None
        cal_dataset = await asyncio.to_thread(load_mediq, bench.calibrate_on, strict=False)
        cal_base = bench.run_spec("none", dataset=cal_dataset, cases=bench.calibration_cases)
        cal_cases = cal_base.calibration_cases(cal_dataset)
    overlap = shared_cases(test_cases, cal_cases)
    if overlap:
        raise InvalidInputError(f"{overlap} test case(s) are also calibration cases")

    # A case's interview does not depend on how many cases run: more or fewer cases (the
    # first N of the same splits) reuse the finished ones.
    reusable = {
        k: v
        for k, v in bench.settings().items()
        if k not in ("test_cases", "calibration_cases", "policies")
    }
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                **reusable,
                "model": info.model,
                "prompt_version": info.prompt_version,
                "dataset_hash": dataset.sha256,
                "calibration_hash": cal_dataset.sha256,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    log = CaseLog(out_dir, fingerprint, fresh=fresh)

    to_calibrate = [p for p in bench.policies if p not in stored]
    total = len(to_calibrate) * len(cal_cases) + len(bench.policies) * len(test_cases)
    cached = sum(
        1 for p in to_calibrate for c in cal_cases if log.get("cal", p, c.case_id) is not None
    ) + sum(
        1 for p in bench.policies for c in test_cases if log.get("test", p, c.case_id) is not None
    )
    # Every case ticks once when it is done, cached or not: the bar starts at 0.
    tick = progress(total, 0) if progress is not None else (lambda _: None)

    answers = _AnswerSources(provider, patient)
    calibrations = dict(stored)
    records: list[CaseRecord] = []
    seconds: dict[str, float] = {}
    for policy in bench.policies:
        t0 = time.perf_counter()
        selection: StepwiseThresholds | None = None
        if policy not in calibrations:
            spec = bench.run_spec(policy, dataset=cal_dataset, cases=len(cal_cases))
            if bench.paper and policy == "cip":
                selection = await _paper_selection(
                    spec,
                    answers,
                    cal_dataset,
                    len(cal_cases),
                    patient=patient,
                    log=log,
                    avoid=(*cal_cases, *test_cases),
                )
            phase = answers.phase(
                cal_dataset, cal_cases, spec, paper=bench.paper, selection=selection
            )
            calibrations[policy] = await _calibrate(
                policy,
                phase,
                spec,
                patient=patient,
                log=log,
                info=info,
                progress=tick,
            )
            sources[policy] = f"in-process on {len(cal_cases)} calibration cases"
        spec = bench.run_spec(policy, dataset=dataset, cases=len(test_cases))
        phase = answers.phase(dataset, test_cases, spec, paper=bench.paper, selection=selection)
        tests = await _test(policy, phase, spec, patient=patient, log=log, progress=tick)
        records += [
            record_from_test(
                t, calibrations[policy], max_questions=bench.max_questions, stops=not bench.paper
            )
            for t in tests
        ]
        seconds[policy] = round(time.perf_counter() - t0, 1)
        echo(f"{policy}: {seconds[policy]} s")

    wall = time.perf_counter() - started
    computed = total - cached
    first_cal = next(iter(calibrations.values()))
    report = build_report(
        records=records,
        baselines=[b for b in BASELINES if b in bench.policies],
        alpha=bench.alpha,
        model=info.model,
        prompt_version=info.prompt_version,
        calibration_n={p: [s.n for s in c.steps] for p, c in calibrations.items()},
        step_alpha=first_cal.step_alpha,
        extra={
            "step_alpha": float(first_cal.step_alpha),
            "anytime": bench.anytime,
            "dataset_hash": dataset.sha256,
            "calibration_dataset_hash": cal_dataset.sha256,
            "calibration_cases": len(cal_cases),
            "calibrations": {
                p: {
                    "source": sources[p],
                    "thresholds": [None if not np.isfinite(t) else float(t) for t in c.thresholds],
                    "n_per_step": [s.n for s in c.steps],
                }
                for p, c in calibrations.items()
            },
            "settings": bench.settings(),
            "seconds": seconds,
            "wall_seconds": round(wall, 1),
            "interviews_computed": computed,
            "interviews_per_minute": round(60 * computed / wall, 2) if wall > 0 else None,
            "provider": dict(info.extra),
            "patient_fallbacks": {
                "answers": sum(int(e.get("patient_fallbacks", 0)) for e in log.entries.values()),
                "estimation_answers_this_process": answers.fallbacks,
            },
        },
    )
    return report


def resolve_policies(text: str) -> tuple[str, ...]:
    """``cip,ip,none`` -> a tuple; unknown names are an error."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    spec_check = [p for p in names if p not in BENCH_POLICIES]
    if spec_check:
        raise InvalidInputError(
            f"unknown policies {spec_check}; choose from {', '.join(BENCH_POLICIES)}"
        )
    return names
