"""Execute a calibration run: its owner and any number of helpers share its cases.

Used by ``pursuit worker`` and by ``pursuit calibrate`` alike. One worker owns a run: it
claimed it (``claim_next`` / ``claim_run``) and holds its lease token. Any other worker on
the same provider may help (``join_next`` / ``help_run``) while it runs. Execution:

1. rebuild the ``RunSpec`` from ``Calibration.params``; check that the provider is the one
   the run was made for (model, prompt version) and that the dataset file still has the
   recorded hash;
2. the owner seeds one claim row per case (``calibration_case_claims``); cases already
   stored in ``calibration_cases`` start done (a resumed run redoes nothing);
3. every worker on the run claims cases one at a time, ``spec.concurrency`` at once, and
   stores each finished case in one short transaction that also marks its claim done, only
   while its claim is still its own (so a case is stored once);
4. heartbeats renew each worker's case claims (and the owner's run lease); a claim whose
   heartbeat is older than the lease timeout is claimed again by whoever asks next, so a
   killed worker's in-flight cases are redone once. When the owner's run lease is lost
   (another worker reclaimed a run it thought dead), the owner stops writing at once;
5. the owner waits until every case is stored (helpers may still hold some), then computes
   the per-step thresholds once and marks the run ``succeeded`` (and active when asked), or
   ``failed`` with the error (never patient text). Only the lease holder can write the
   result, so exactly one worker finalises.

Cancellation (a worker shutting down) gives its case claims back, and the owner's run back
to the queue; a process that dies leaves stale heartbeats, and other workers reclaim its
cases (and its run) after the lease timeout. A helper never changes a run's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.auditor import Auditor, ResourceType
from app.calibrations.answers import EstimationAnswers
from app.calibrations.interviews import CaseResult, compute_calibration, run_cases
from app.calibrations.patients import patient_for
from app.calibrations.repository import (
    CalibrationRepository,
    CaseClaimRepository,
)
from app.calibrations.results import thresholds_from_result
from app.calibrations.selection import check_selection, selection_payload
from app.calibrations.service import record_activation
from app.calibrations.spec import AnswerSource, RunSpec, serving_refusal
from app.context import request_id_var
from app.datasets import MediQCase
from app.db.base import utcnow
from app.db.models import Calibration, CalibrationCase
from app.db.status import CalibrationStatus
from app.engine.types import PosteriorProvider
from app.errors import InvalidInputError, PursuitError
from app.patients.protocol import SimulatedPatient

__all__ = [
    "LeaseLostError",
    "RunOutcome",
    "claim_next",
    "claim_run",
    "execute_run",
    "help_run",
    "join_next",
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
                stale_before=None if status == CalibrationStatus.QUEUED else stale_before,
                new_token=new_token,
                worker=worker,
                now=_now(),
            )
            if won:
                await _audit(
                    db,
                    calibration_id,
                    "calibration.claim"
                    if status == CalibrationStatus.QUEUED
                    else "calibration.reclaim",
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
    if row.status == CalibrationStatus.SUCCEEDED:
        raise InvalidInputError(f"calibration {calibration_id} has already succeeded")
    stale_before = _now() - timedelta(seconds=lease_timeout_s)
    new_token = uuid.uuid4()
    async with sessionmaker.begin() as db:
        won = await CalibrationRepository(db).try_claim(
            calibration_id,
            expected_token=lease.token,
            # A failed or queued run is nobody's; a running one only when its worker is silent.
            stale_before=stale_before
            if row.status not in (CalibrationStatus.QUEUED, CalibrationStatus.FAILED)
            else None,
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


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What every worker on a run needs to interview its cases."""

    spec: RunSpec
    cases: tuple[MediQCase, ...]
    provider: PosteriorProvider  # the worker's, or EstimationAnswers over it
    patient: SimulatedPatient
    selection: dict[str, Any] | None  # the selection calibration's result payload
    estimation: EstimationAnswers | None


async def _prepare(
    sessionmaker: async_sessionmaker[AsyncSession],
    row: Calibration,
    *,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
) -> _Prepared:
    """Rebuild the run from its params; refuse a provider the run was not made for."""
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
    estimation = None
    used: PosteriorProvider = provider
    if spec.question.answer_source is AnswerSource.ESTIMATION:
        estimation = EstimationAnswers(
            provider, patient=patient, pool=spec.splits(dataset).estimation, seed=spec.seed
        )
        used = estimation
    selection = None
    if spec.question.selection_calibration_id is not None:
        async with sessionmaker() as db:
            chosen = await check_selection(CalibrationRepository(db), spec, info, owner=row.tenant)
        assert chosen is not None
        selection = selection_payload(chosen)
    return _Prepared(
        spec=spec,
        cases=spec.calibration_cases(dataset),
        provider=used,
        patient=patient,
        selection=selection,
        estimation=estimation,
    )


StoredFn = Callable[[AsyncSession, int], Awaitable[None]]  # (transaction, cases stored)
CommittedFn = Callable[[int], None]  # (cases stored), once the case is committed


async def _work_cases(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    prepared: _Prepared,
    *,
    token: uuid.UUID,
    worker: str,
    lease_timeout_s: float,
    on_stored: StoredFn,
    on_committed: CommittedFn,
) -> None:
    """Claim, interview and store cases, ``spec.concurrency`` at a time, until none is left
    to claim. The first failure cancels the others."""
    spec = prepared.spec
    selection = thresholds_from_result(prepared.selection) if prepared.selection else None
    one_at_a_time = asyncio.Lock()  # concurrent stores would report progress out of order

    async def store(result: CaseResult) -> None:
        async with one_at_a_time:
            async with sessionmaker.begin() as db:
                claims = CaseClaimRepository(db)
                if not await claims.finish_case(
                    _case_row(calibration_id, result), token=token, now=_now()
                ):
                    # Our claim went stale and another worker holds the case: its result counts.
                    log.warning("calibration.case_lost", calibration_id=str(calibration_id))
                    return
                done = await CalibrationRepository(db).case_count(calibration_id)
                await on_stored(db, done)
            on_committed(done)

    async def slot() -> None:
        while True:
            async with sessionmaker.begin() as db:
                claimed = await CaseClaimRepository(db).claim_case(
                    calibration_id,
                    token=token,
                    worker=worker,
                    now=_now(),
                    stale_before=_now() - timedelta(seconds=lease_timeout_s),
                )
            if claimed is None:
                return
            position, attempts = claimed
            if attempts > 1:
                log.info("calibration.case_reclaimed", position=position, attempts=attempts)
            # A case's LLM requests carry one id, so a load balancer hashing on it keeps the
            # case's prompts (which share their prefix) on one vLLM replica.
            request_id = request_id_var.set(f"cal-{calibration_id.hex[:12]}-{position}")
            try:
                await run_cases(
                    [(position, prepared.cases[position])],
                    spec=spec,
                    provider=prepared.provider,
                    patient=prepared.patient,
                    on_result=store,
                    selection=selection,
                )
            finally:
                request_id_var.reset(request_id)

    async with asyncio.TaskGroup() as group:
        for _ in range(spec.concurrency):
            group.create_task(slot())


async def execute_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    token: uuid.UUID,
    *,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
    worker: str = "owner",
    progress: ProgressFn | None = None,
) -> RunOutcome:
    """Run a claimed calibration to the end as its owner (see the module docstring)."""
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
    beat = asyncio.create_task(
        _heartbeat(sessionmaker, calibration_id, token, heartbeat_s, lost, owner=True)
    )
    beat.add_done_callback(lambda t: main.cancel() if lost.is_set() else None)
    try:
        prepared = await _prepare(sessionmaker, row, provider=provider, patient=patient)
        spec, cases, info = prepared.spec, prepared.cases, provider.info
        skipped = sum(1 for c in cases if c.case_id in done_ids)
        total = len(cases)
        async with sessionmaker.begin() as db:
            await CaseClaimRepository(db).seed(
                calibration_id, [(i, c.case_id) for i, c in enumerate(cases)]
            )
        if progress is not None:
            progress(skipped, total)
        log.info(
            "calibration.run",
            calibration_id=str(calibration_id),
            cases=total,
            resumed=skipped,
            policy=spec.policy.value,
        )

        async def stored(db: AsyncSession, done: int) -> None:
            if not await CalibrationRepository(db).guarded_update(
                calibration_id, token, progress_done=done, progress_total=total
            ):
                raise LeaseLostError(str(calibration_id))

        def committed(done: int) -> None:
            nonlocal computed
            computed += 1
            if progress is not None:
                progress(done, total)

        while True:
            await _work_cases(
                sessionmaker,
                calibration_id,
                prepared,
                token=token,
                worker=worker,
                lease_timeout_s=lease_timeout_s,
                on_stored=stored,
                on_committed=committed,
            )
            async with sessionmaker() as db:
                if await CaseClaimRepository(db).unfinished(calibration_id) == 0:
                    break
            # Helpers hold the rest; a dead helper's cases go stale and are claimed again.
            await asyncio.sleep(min(heartbeat_s, 1.0))
        fallbacks = prepared.estimation.fallbacks if prepared.estimation else 0

        async with sessionmaker.begin() as db:
            repo = CalibrationRepository(db)
            wanted = {c.case_id for c in cases}
            stored_rows = await repo.cases(calibration_id)
            results = [_case_result(c) for c in stored_rows if c.case_id in wanted]
            _, result = compute_calibration(
                results, spec=spec, info=info, selection=prepared.selection
            )
            # Patient replies that were unusable model output and became "cannot answer"
            # (the owner's estimation answers of this execution only).
            result["patient_fallbacks"] = fallbacks
            finished = await repo.guarded_update(
                calibration_id,
                token,
                status=CalibrationStatus.SUCCEEDED,
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
                requester = Auditor(
                    ResourceType.CALIBRATION,
                    tenant=_requester(row.params),
                    actor_key_id=requested.get("key_id"),
                )
                await record_activation(db, fresh, by=requester)
        log.info(
            "calibration.succeeded",
            calibration_id=str(calibration_id),
            computed=computed,
            resumed=skipped,
            seconds=round(time.perf_counter() - started, 1),
        )
        return RunOutcome(
            calibration_id, CalibrationStatus.SUCCEEDED, computed, skipped, _elapsed(started)
        )
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with sessionmaker.begin() as db:
                await CaseClaimRepository(db).release(calibration_id, token)
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
        with contextlib.suppress(Exception):
            async with sessionmaker.begin() as db:
                await CaseClaimRepository(db).release(calibration_id, token)
        leaves = _leaves(exc)
        if any(isinstance(e, LeaseLostError) for e in leaves):
            log.warning("calibration.lease_lost", calibration_id=str(calibration_id))
            return RunOutcome(calibration_id, "lost", computed, 0, _elapsed(started))
        error = _describe(leaves[0])
        async with sessionmaker.begin() as db:
            repo = CalibrationRepository(db)
            if await repo.guarded_update(
                calibration_id, token, status=CalibrationStatus.FAILED, error=error
            ):
                await repo.heartbeat(calibration_id, token, _now())
                await _audit(db, calibration_id, "calibration.failed", "failure")
        log.warning("calibration.failed", calibration_id=str(calibration_id), error=error[:200])
        return RunOutcome(
            calibration_id, CalibrationStatus.FAILED, computed, 0, _elapsed(started), error
        )
    finally:
        await _stop(beat)


async def join_next(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    model: str,
    prompt_version: str,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
) -> uuid.UUID | None:
    """A running run of this provider with a case nobody alive holds (for a helper)."""
    stale_before = _now() - timedelta(seconds=lease_timeout_s)
    async with sessionmaker() as db:
        runs = await CaseClaimRepository(db).joinable(
            model=model, prompt_version=prompt_version, stale_before=stale_before, limit=1
        )
    return runs[0] if runs else None


async def help_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    *,
    provider: PosteriorProvider,
    patient: SimulatedPatient,
    worker: str,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
) -> RunOutcome:
    """Interview a running run's unclaimed cases beside its owner, until none is left.

    A helper never changes the run's status: when a case fails here, its claim is given
    back and the helper leaves; the owner claims the case again (and fails the run if it
    fails there too). The owner computes the thresholds once every case is stored.
    """
    started = time.perf_counter()
    token = uuid.uuid4()
    async with sessionmaker() as db:
        row = await CalibrationRepository(db).get(calibration_id)
    if row is None or row.status != CalibrationStatus.RUNNING:
        return RunOutcome(calibration_id, "helped", 0, 0, _elapsed(started))
    lost = asyncio.Event()
    beat = asyncio.create_task(
        _heartbeat(sessionmaker, calibration_id, token, heartbeat_s, lost, owner=False)
    )
    computed = 0
    try:
        prepared = await _prepare(sessionmaker, row, provider=provider, patient=patient)
        total = len(prepared.cases)
        async with sessionmaker.begin() as db:
            await _audit(db, calibration_id, "calibration.join", "success")

        async def stored(db: AsyncSession, done: int) -> None:
            await CalibrationRepository(db).running_progress(
                calibration_id, progress_done=done, progress_total=total
            )

        def committed(done: int) -> None:
            nonlocal computed
            computed += 1

        log.info("calibration.help", calibration_id=str(calibration_id), worker=worker)
        await _work_cases(
            sessionmaker,
            calibration_id,
            prepared,
            token=token,
            worker=worker,
            lease_timeout_s=lease_timeout_s,
            on_stored=stored,
            on_committed=committed,
        )
        return RunOutcome(calibration_id, "helped", computed, 0, _elapsed(started))
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with sessionmaker.begin() as db:
                await CaseClaimRepository(db).release(calibration_id, token)
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            async with sessionmaker.begin() as db:
                await CaseClaimRepository(db).release(calibration_id, token)
        error = _describe(_leaves(exc)[0])
        log.warning("calibration.help_failed", calibration_id=str(calibration_id), error=error)
        return RunOutcome(calibration_id, "helped", computed, 0, _elapsed(started), error)
    finally:
        await _stop(beat)


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end, whatever it raises, without swallowing a
    cancellation of the caller itself: ``suppress(BaseException)`` around the wait once did,
    and a worker cancelled just as its run finished went on polling for ever."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _requester(params: dict[str, Any]) -> str | None:
    """The tenant that asked for the run (its audit events go there)."""
    requested = params.get("requested_by") or {}
    tenant = requested.get("tenant") if isinstance(requested, dict) else None
    return str(tenant) if tenant else None


async def _audit(db: AsyncSession, calibration_id: uuid.UUID, action: str, outcome: str) -> None:
    """The worker's event (no actor key) in the trail of the tenant that asked for the run."""
    row = await CalibrationRepository(db).get(calibration_id)
    tenant = _requester(row.params) if row is not None else None
    await Auditor(ResourceType.CALIBRATION, tenant=tenant).record(
        db, action=action, resource_id=calibration_id, outcome=outcome
    )


def _elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 3)


async def _heartbeat(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    token: uuid.UUID,
    every_s: float,
    lost: asyncio.Event,
    *,
    owner: bool,
) -> None:
    """Renew this worker's case claims (and, for the owner, the run lease) every beat."""
    while True:
        await asyncio.sleep(every_s)
        try:
            async with sessionmaker.begin() as db:
                await CaseClaimRepository(db).heartbeat(calibration_id, token, _now())
                alive = not owner or await CalibrationRepository(db).heartbeat(
                    calibration_id, token, _now()
                )
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
