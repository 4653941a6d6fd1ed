"""Interview labelled cases against the simulated patient and compute per-step thresholds.

Pure orchestration over a ``PosteriorProvider`` and a ``SimulatedPatient``: no database.
Each case is interviewed with ``run_interview(thresholds=None)``, the selection thresholds
of the policy's selection calibration (None: the nominal rule) and a config whose early
stops are off (``RunSpec.interview_config``); its score at step k is
``1 - p(true label | h_k)`` for k = 0..T (T + 1 for a selection run), the last row repeated
when the case ran out of candidate questions. Cases run concurrently (bounded), each with its own seeded rng, so a
case's result does not depend on which other cases ran or in what order: a resumed run
computes exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from app.calibrations.results import calibration_result
from app.calibrations.spec import RunSpec
from app.conformal import CalibrationMetadata, PerStepCalibration
from app.datasets import MediQCase
from app.engine import DrawFn, InterviewConfig, StepwiseThresholds, Trajectory, run_interview
from app.engine.types import History, PosteriorProvider, ProviderInfo
from app.errors import UpstreamBadOutputError
from app.llm.prompts import CANNOT_ANSWER
from app.patients.protocol import SimulatedPatient

__all__ = [
    "CaseResult",
    "case_rng",
    "compute_calibration",
    "interview_case",
    "padded_scores",
    "patient_answer",
    "run_cases",
]


log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One calibration case: scores at steps 0..T and how its interview went."""

    case_id: str
    position: int
    group: str | None
    scores: tuple[float, ...]
    steps_run: int
    stop_reason: str
    posterior_evaluations: int
    seconds: float


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The case's own rng: the same (seed, case) always draws the same candidates."""
    return np.random.default_rng([seed, int(hashlib.sha256(case_id.encode()).hexdigest()[:15], 16)])


async def patient_answer(
    patient: SimulatedPatient,
    *,
    facts: Sequence[str],
    question: str,
    on_fallback: Callable[[], None] | None = None,
) -> str:
    """The patient's reply; an unusable model output becomes "cannot answer" (counted).

    The fact-select patient decodes greedily, so asking again would give the same output:
    one bad reply must not sink a run of hundreds of cases.
    """
    try:
        return await patient.patient_reply(facts=facts, question=question)
    except UpstreamBadOutputError:
        log.warning("calibration.patient_fallback")
        if on_fallback is not None:
            on_fallback()
        return CANNOT_ANSWER


async def interview_case(
    *,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
    case: MediQCase,
    config: InterviewConfig,
    seed: int,
    history: History = (),
    on_fallback: Callable[[], None] | None = None,
    selection: StepwiseThresholds | None = None,
    draws: DrawFn | None = None,
) -> Trajectory:
    """Run the interview of one case to its budget (or until its candidates run out)."""

    async def answer(question: str) -> str:
        return await patient_answer(
            patient, facts=case.facts, question=question, on_fallback=on_fallback
        )

    return await run_interview(
        provider=provider,
        case=case.case_context,
        inquiry=case.inquiry,
        labels=case.labels,
        config=config,
        thresholds=None,
        answer_fn=answer,
        rng=case_rng(seed, case.case_id),
        selection_thresholds=selection,
        history=history,
        draws=draws,
    )


def padded_scores(trajectory: Trajectory, true_label: str, max_questions: int) -> tuple[float, ...]:
    """``1 - p(true | h_k)`` for k = 0..T; steps after an early stop repeat the last one."""
    scores = [float(s) for s in trajectory.label_scores(true_label)]
    scores = scores[: max_questions + 1]
    scores += [scores[-1]] * (max_questions + 1 - len(scores))
    return tuple(scores)


async def run_cases(
    cases: Sequence[tuple[int, MediQCase]],
    *,
    spec: RunSpec,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
    on_result: Callable[[CaseResult], Awaitable[None]],
    selection: StepwiseThresholds | None = None,
) -> int:
    """Interview ``(position, case)`` pairs, ``spec.concurrency`` at a time.

    ``selection``: the thresholds of ``spec.question.selection_calibration_id`` (loaded by
    the caller), inside C-IP's objective.

    ``on_result`` is awaited as each case finishes (persist it there). The first failure
    cancels the cases still running and propagates; finished cases stay delivered.
    Returns how many patient replies fell back to "cannot answer" (``patient_answer``).
    """
    config = spec.interview_config()
    semaphore = asyncio.Semaphore(spec.concurrency)
    fallbacks = 0

    def fell_back() -> None:
        nonlocal fallbacks
        fallbacks += 1

    async def one(position: int, case: MediQCase) -> None:
        async with semaphore:
            started = time.perf_counter()
            trajectory = await interview_case(
                provider=provider,
                patient=patient,
                case=case,
                config=config,
                seed=spec.seed,
                on_fallback=fell_back,
                selection=selection,
            )
            result = CaseResult(
                case_id=case.case_id,
                position=position,
                group=spec.group_of(case),
                scores=padded_scores(trajectory, case.true_label, spec.calibrated_steps),
                steps_run=len(trajectory.turns),
                stop_reason=trajectory.stop_reason.value,
                posterior_evaluations=sum(t.posterior_evaluations for t in trajectory.turns),
                seconds=time.perf_counter() - started,
            )
            await on_result(result)

    async with asyncio.TaskGroup() as group:
        for position, case in cases:
            group.create_task(one(position, case))
    return fallbacks


def compute_calibration(
    results: Sequence[CaseResult],
    *,
    spec: RunSpec,
    info: ProviderInfo,
    selection: dict[str, Any] | None = None,
) -> tuple[PerStepCalibration, dict[str, Any]]:
    """Per-step thresholds from every case's scores, and the ``Calibration.result`` JSON.

    The result keeps the format serving reads (``calibration_result``: alpha, step_alpha,
    thresholds, n_per_step, scores; ``selection``: the selection calibration's result with
    its ``calibration_id``, or null = the nominal selection rule) and adds
    ``conformal`` (the full ``PerStepCalibration``, with Mondrian groups when grouped),
    ``insufficient_steps`` and ``groups`` (per step: n and threshold per group). Serving
    uses the pooled thresholds only.
    """
    if not results:
        raise ValueError("no finished cases to calibrate on")
    ordered = sorted(results, key=lambda r: r.position)
    horizon = spec.calibrated_steps + 1
    scores_per_step = [[r.scores[k] for r in ordered] for k in range(horizon)]
    groups_per_step = None
    if spec.group_by is not None:
        keys = [r.group or "unknown" for r in ordered]
        groups_per_step = [keys for _ in range(horizon)]
    calibration = PerStepCalibration.from_scores(
        scores_per_step,
        spec.alpha,
        anytime=spec.anytime,
        metadata=CalibrationMetadata(
            model=info.model,
            prompt_version=info.prompt_version,
            policy=spec.policy.value,
            dataset_hash=spec.dataset_hash,
            extra={
                **{f"provider_{k}": v for k, v in info.extra.items()},
                **{k: "" if v is None else str(v) for k, v in spec.question.to_json().items()},
                "purpose": spec.purpose.value,
                "seed": str(spec.seed),
            },
        ),
        groups_per_step=groups_per_step,
    )
    result = calibration_result(
        thresholds=[float(t) for t in calibration.thresholds],
        scores=scores_per_step,
        alpha=spec.alpha,
        step_alpha=float(calibration.step_alpha),
        n_per_step=[s.n for s in calibration.steps],
    )
    result["selection"] = selection
    result["anytime"] = spec.anytime
    result["insufficient_steps"] = list(calibration.insufficient_steps)
    result["conformal"] = calibration.to_dict()
    result["groups"] = _group_summary(calibration)
    result["stop_reasons"] = _count(r.stop_reason for r in ordered)
    return calibration, result


def _group_summary(calibration: PerStepCalibration) -> list[dict[str, Any]] | None:
    if calibration.steps[0].groups is None:
        return None
    out: list[dict[str, Any]] = []
    for step in calibration.steps:
        assert step.groups is not None
        out.append(
            {
                "step": step.step,
                "groups": {
                    key: {
                        "n": g.own.n,
                        "threshold": None if not np.isfinite(g.value) else g.value,
                        "fallback": g.fallback,
                        "reason": g.reason,
                    }
                    for key, g in step.groups.groups.items()
                },
            }
        )
    return out


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))
