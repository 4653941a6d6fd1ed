"""Execute one claimed calibration run: interview its cases, persist each, finish or fail.

Used by ``pursuit worker`` and by ``pursuit calibrate`` alike. The caller has claimed the
run (``claim_next`` / ``claim_run``) and holds its lease token. Execution:

1. rebuild the ``RunSpec`` from ``Calibration.params``; check that the provider is the one
   the run was made for (model, prompt version) and that the dataset file still has the
   recorded hash;
2. skip the cases already stored in ``calibration_cases`` (a resumed run redoes nothing);
3. interview the rest, ``spec.concurrency`` at a time; each finished case is stored with
   the run's progress in one short transaction guarded by the lease token;
4. a heartbeat task renews the lease every ``heartbeat_s``; when the lease is lost (another
   worker reclaimed a run it thought dead), the run stops writing at once;
5. compute the per-step thresholds from every stored case and mark the run ``succeeded``
   (and active when asked), or ``failed`` with the error (never patient text).

Cancellation (a worker shutting down) gives the run back to the queue; a process that dies
leaves a stale heartbeat, and another worker reclaims the run after the lease timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.repository import AuditRepository
from app.calibrations.answers import EstimationAnswers
from app.calibrations.patients import patient_for
from app.calibrations.repository import FAILED, QUEUED, SUCCEEDED, CalibrationRepository
from app.calibrations.runner import CaseResult, SimulatedPatient, compute_calibration, run_cases
from app.calibrations.selection import check_selection, selection_payload
from app.calibrations.service import record_activation
from app.calibrations.spec import AnswerSource, RunSpec, serving_refusal
from app.calibrations.thresholds import thresholds_from_result
from app.db.base import utcnow
from app.db.models import CalibrationCase
from app.engine.types import PosteriorProvider
from app.errors import InvalidInputError, PursuitError

__all__ = [
    "LeaseLostError",
    "RunOutcome",
    "claim_next",
    "claim_run",
    "execute_run",
]

log = structlog.get_logger(__name__)

DEFAULT_LEASE_TIMEOUT_S = 60.0
DEFAULT_HEARTBEAT_S = 10.0
_ERROR_MAX = 2000


class LeaseLostError(Exception):
    """Another worker took over this run; stop without writing."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How an execution ended: succeeded, failed, released or lost."""

    calibration_id: uuid.UUID
    status: str
    computed_cases: int
    skipped_cases: int
    seconds: float
    error: str | None = None


ProgressFn = Callable[[int, int], None]  # (done, total)


def _now() -> datetime:
    return datetime.now(UTC)


async def claim_next(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    worker: str,
    model: str,
    prompt_version: str,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Claim the oldest queued run (or a running one with a stale heartbeat) for this model.

    Returns (calibration id, lease token), or None when nothing is claimable.
    """
    stale_before = _now() - timedelta(seconds=lease_timeout_s)
    async with sessionmaker() as db:
        candidates = await CalibrationRepository(db).claimable(
            model=model, prompt_version=prompt_version, stale_before=stale_before
        )
    for calibration_id, status, token in candidates:
        new_token = uuid.uuid4()
        async with sessionmaker.begin() as db:
            won = await CalibrationRepository(db).try_claim(
                calibration_id,
                expected_token=token,
                stale_before=None if status == QUEUED else stale_before,
                new_token=new_token,
                worker=worker,
                now=_now(),
            )
            if won:
                await _audit(
                    db,
                    calibration_id,
                    "calibration.claim" if status == QUEUED else "calibration.reclaim",
                    "success",
                )
        if won:
            log.info("calibration.claimed", calibration_id=str(calibration_id), worker=worker)
            return calibration_id, new_token
    return None


async def claim_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    *,
    worker: str,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
) -> uuid.UUID:
    """Claim one given run (the CLI's own or ``--resume``): queued, failed, or stale running.

    Raises InvalidInputError when it is finished or another worker is alive on it.
    """
    async with sessionmaker() as db:
        repo = CalibrationRepository(db)
        row = await repo.get(calibration_id)
        lease = await repo.lease(calibration_id)
    if row is None or lease is None:
        raise InvalidInputError(f"no calibration run {calibration_id}")
    if row.status == SUCCEEDED:
        raise InvalidInputError(f"calibration {calibration_id} has already succeeded")
    stale_before = _now() - timedelta(seconds=lease_timeout_s)
    new_token = uuid.uuid4()
    async with sessionmaker.begin() as db:
        won = await CalibrationRepository(db).try_claim(
            calibration_id,
            expected_token=lease.token,
            # A failed or queued run is nobody's; a running one only when its worker is silent.
            stale_before=stale_before if row.status not in (QUEUED, FAILED) else None,
            new_token=new_token,
            worker=worker,
            now=_now(),
        )
        if won:
            await _audit(db, calibration_id, "calibration.claim", "success")
    if not won:
        raise InvalidInputError(
            f"calibration {calibration_id} is being run by {lease.worker or 'another worker'} "
            f"(heartbeat within {lease_timeout_s:g} s); try again later"
        )
    return new_token


async def execute_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    token: uuid.UUID,
    *,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    progress: ProgressFn | None = None,
) -> RunOutcome:
    """Run a claimed calibration to the end (see the module docstring)."""
    started = time.perf_counter()
    async with sessionmaker() as db:
        repo = CalibrationRepository(db)
        row = await repo.get(calibration_id)
        done_ids = await repo.case_ids(calibration_id)
    if row is None:
        raise InvalidInputError(f"no calibration run {calibration_id}")
    computed = 0
    main = asyncio.current_task()
    assert main is not None
    lost = asyncio.Event()
    beat = asyncio.create_task(_heartbeat(sessionmaker, calibration_id, token, heartbeat_s, lost))
    beat.add_done_callback(lambda t: main.cancel() if lost.is_set() else None)
    try:
        spec = RunSpec.from_params(row.params)
        patient = await patient_for(spec.patient, patient)
        info = provider.info
        if (info.model, info.prompt_version) != (row.model, row.prompt_version):
            raise InvalidInputError(
                f"this worker runs model {info.model!r} with prompt version "
                f"{info.prompt_version!r}; the run was made for {row.model!r} / "
                f"{row.prompt_version!r}"
            )
        dataset = await asyncio.to_thread(spec.load_dataset)  # file I/O off the loop
        cases = spec.calibration_cases(dataset)
        todo = [(i, c) for i, c in enumerate(cases) if c.case_id not in done_ids]
        skipped = len(cases) - len(todo)
        total = len(cases)
        if progress is not None:
            progress(skipped, total)
        used: PosteriorProvider = provider
        if spec.question.answer_source is AnswerSource.ESTIMATION:
            used = EstimationAnswers(
                provider, patient=patient, pool=spec.splits(dataset).estimation, seed=spec.seed
            )
        log.info(
            "calibration.run",
            calibration_id=str(calibration_id),
            cases=total,
            resumed=skipped,
            policy=spec.policy.value,
        )

        one_at_a_time = asyncio.Lock()  # concurrent stores would report progress out of order

        async def store(result: CaseResult) -> None:
            nonlocal computed
            async with one_at_a_time, sessionmaker.begin() as db:
                repo = CalibrationRepository(db)
                await repo.add_case(_case_row(calibration_id, result))
                done = await repo.case_count(calibration_id)
                if not await repo.guarded_update(
                    calibration_id, token, progress_done=done, progress_total=total
                ):
                    raise LeaseLostError(str(calibration_id))
            computed += 1
            if progress is not None:
                progress(done, total)

        selection = None
        if spec.question.selection_calibration_id is not None:
            async with sessionmaker() as db:
                chosen = await check_selection(
                    CalibrationRepository(db), spec, info, owner=row.tenant
                )
            assert chosen is not None
            selection = selection_payload(chosen)
        fallbacks = await run_cases(
            todo,
            spec=spec,
            provider=used,
            patient=patient,
            on_result=store,
            selection=thresholds_from_result(selection) if selection else None,
        )
        if isinstance(used, EstimationAnswers):
            fallbacks += used.fallbacks

        async with sessionmaker.begin() as db:
            repo = CalibrationRepository(db)
            wanted = {c.case_id for c in cases}
            stored = await repo.cases(calibration_id)
            results = [_case_result(c) for c in stored if c.case_id in wanted]
            _, result = compute_calibration(results, spec=spec, info=info, selection=selection)
            # Patient replies that were unusable model output and became "cannot answer"
            # (this execution only: a resumed run does not know the earlier ones').
            result["patient_fallbacks"] = fallbacks
            finished = await repo.guarded_update(
                calibration_id,
                token,
                status=SUCCEEDED,
                result=result,
                progress_done=len(results),
                progress_total=total,
                error=None,
            )
            if not finished:
                raise LeaseLostError(str(calibration_id))
            await repo.heartbeat(calibration_id, token, _now())
            fresh = await repo.get(calibration_id)
            assert fresh is not None
            activated = bool(row.params.get("activate")) and not serving_refusal(spec.to_params())
            if activated:
                await repo.activate(fresh)
            await _audit(db, calibration_id, "calibration.succeeded", "success")
            if activated:
                requested = row.params.get("requested_by") or {}
                await record_activation(
                    db,
                    fresh,
                    actor_key_id=requested.get("key_id"),
                    actor_tenant=_requester(row.params),
                )
        log.info(
            "calibration.succeeded",
            calibration_id=str(calibration_id),
            computed=computed,
            resumed=skipped,
            seconds=round(time.perf_counter() - started, 1),
        )
        return RunOutcome(calibration_id, SUCCEEDED, computed, skipped, _elapsed(started))
    except asyncio.CancelledError:
        if lost.is_set():
            main.uncancel()  # our own cancellation (the heartbeat saw the lease go), handled
            log.warning("calibration.lease_lost", calibration_id=str(calibration_id))
            return RunOutcome(calibration_id, "lost", computed, 0, _elapsed(started))
        with contextlib.suppress(Exception):
            async with sessionmaker.begin() as db:
                await CalibrationRepository(db).release(calibration_id, token)
        log.info("calibration.released", calibration_id=str(calibration_id))
        raise
    except Exception as exc:
        leaves = _leaves(exc)
        if any(isinstance(e, LeaseLostError) for e in leaves):
            log.warning("calibration.lease_lost", calibration_id=str(calibration_id))
            return RunOutcome(calibration_id, "lost", computed, 0, _elapsed(started))
        error = _describe(leaves[0])
        async with sessionmaker.begin() as db:
            repo = CalibrationRepository(db)
            if await repo.guarded_update(calibration_id, token, status=FAILED, error=error):
                await repo.heartbeat(calibration_id, token, _now())
                await _audit(db, calibration_id, "calibration.failed", "failure")
        log.warning("calibration.failed", calibration_id=str(calibration_id), error=error[:200])
        return RunOutcome(calibration_id, FAILED, computed, 0, _elapsed(started), error)
    finally:
        beat.cancel()
        with contextlib.suppress(BaseException):
            await beat


def _requester(params: dict[str, Any]) -> str | None:
    """The tenant that asked for the run (its audit events go there)."""
    requested = params.get("requested_by") or {}
    tenant = requested.get("tenant") if isinstance(requested, dict) else None
    return str(tenant) if tenant else None


async def _audit(db: AsyncSession, calibration_id: uuid.UUID, action: str, outcome: str) -> None:
    row = await CalibrationRepository(db).get(calibration_id)
    await AuditRepository(db).record(
        action=action,
        resource_type="calibration",
        resource_id=str(calibration_id),
        outcome=outcome,
        tenant=_requester(row.params) if row is not None else None,
    )


def _elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 3)


async def _heartbeat(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    token: uuid.UUID,
    every_s: float,
    lost: asyncio.Event,
) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            async with sessionmaker.begin() as db:
                alive = await CalibrationRepository(db).heartbeat(calibration_id, token, _now())
        except Exception as exc:  # a database hiccup: try again next beat
            log.warning("calibration.heartbeat_failed", error=type(exc).__name__)
            continue
        if not alive:
            lost.set()
            return


def _case_row(calibration_id: uuid.UUID, r: CaseResult) -> CalibrationCase:
    return CalibrationCase(
        calibration_id=calibration_id,
        case_id=r.case_id,
        position=r.position,
        group_key=r.group,
        scores=list(r.scores),
        steps_run=r.steps_run,
        stop_reason=r.stop_reason,
        posterior_evaluations=r.posterior_evaluations,
        seconds=round(r.seconds, 3),
        created_at=utcnow(),
    )


def _case_result(c: CalibrationCase) -> CaseResult:
    return CaseResult(
        case_id=c.case_id,
        position=c.position,
        group=c.group_key,
        scores=tuple(float(s) for s in c.scores),
        steps_run=c.steps_run,
        stop_reason=c.stop_reason,
        posterior_evaluations=c.posterior_evaluations,
        seconds=c.seconds,
    )


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    """'Type: detail' (domain errors carry no patient text)."""
    detail = exc.detail if isinstance(exc, PursuitError) else str(exc)
    return f"{type(exc).__name__}: {detail}"[:_ERROR_MAX]
