"""Turns run in the background (``Prefer: respond-async``) and the state a poll reads.

A turn job is a row of ``turn_jobs`` (so a poll may land on any API process) and, while it
runs, a task in the process that accepted it. That process writes the job's progress and a
heartbeat every ``heartbeat_s``; it writes the reply *inside the turn's own apply
transaction* (the session service's ``commit`` hook), so the session changes and the job
succeeds together or neither does; and it writes a failure as the problem the synchronous
call would have returned.

A job whose heartbeat is older than ``stale_s`` is ``abandoned``: its process died or was
stopped before the turn applied. The read that finds it marks it so (a conditional update),
and a turn of that job that commits after all fails its ``commit`` hook and rolls back: an
abandoned job never has an applied turn, so the client may simply send the request again.

A job holds no patient text except its reply (the same body the synchronous call returns),
which is erased with the session. Progress is counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.context import request_id_var
from app.db.base import utcnow
from app.db.engine import DATABASE_ERRORS, database_unavailable
from app.db.models import TurnJob
from app.db.status import TurnJobStatus
from app.engine.progress import ProgressFn, Stage, TurnProgress
from app.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    NotFoundError,
    PursuitError,
    TurnAbandonedError,
)
from app.sessions.schemas import SessionOut
from app.sessions.service import TurnCommit

log = structlog.get_logger("pursuit.jobs")

ABANDONED_DETAIL = (
    "The process running this turn stopped before the turn was applied; the session is "
    "unchanged. Send the request again (with the same Idempotency-Key it runs as this job)."
)
# A turn's work, given the progress callback and the commit hook to pass to the service.
TurnWork = Callable[[ProgressFn, TurnCommit], Awaitable[SessionOut]]


class JobKind(StrEnum):
    CREATE = "create"
    ANSWER = "answer"


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as a poll sees it; ``result`` is the reply, or the problem's fields."""

    id: uuid.UUID
    kind: JobKind
    status: TurnJobStatus
    session_id: uuid.UUID | None
    progress: TurnProgress | None
    status_code: int | None
    result: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: TurnJob) -> JobState:
        progress = None
        if row.progress:
            progress = TurnProgress(
                stage=Stage(row.progress["stage"]),
                done=int(row.progress["done"]),
                total=int(row.progress["total"]),
            )
        return cls(
            id=row.id,
            kind=JobKind(row.kind),
            status=TurnJobStatus(row.status),
            session_id=row.session_id,
            progress=progress,
            status_code=row.status_code,
            result=row.result,
            created_at=row.created_at,
        )


def problem_fields(exc: PursuitError) -> dict[str, Any]:
    """What a failed job keeps of its error: the problem the API would have rendered."""
    return {
        "type_slug": exc.type_slug,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "request_id": request_id_var.get(),
        "headers": exc.headers,
    }


def _progress_json(progress: TurnProgress | None) -> dict[str, Any] | None:
    if progress is None:
        return None
    return {"stage": progress.stage.value, "done": progress.done, "total": progress.total}


class TurnJobRepository:
    """All SQL of turn jobs."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, job_id: uuid.UUID, *, tenant: str | None) -> TurnJob | None:
        row = await self._session.get(TurnJob, job_id, populate_existing=True)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    async def by_key(self, *, tenant: str | None, target: str, key: str) -> TurnJob | None:
        stmt = sa.select(TurnJob).where(
            TurnJob.tenant == tenant, TurnJob.target == target, TurnJob.idempotency_key == key
        )
        return (await self._session.scalars(stmt.execution_options(populate_existing=True))).first()

    async def add(self, row: TurnJob) -> None:
        self._session.add(row)
        await self._session.flush()

    async def _update(self, job_id: uuid.UUID, *where: Any, **values: Any) -> bool:
        result = await self._session.execute(
            sa.update(TurnJob)
            .where(TurnJob.id == job_id, *where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def heartbeat(
        self, job_id: uuid.UUID, *, owner: str, progress: TurnProgress | None
    ) -> bool:
        return await self._update(
            job_id,
            TurnJob.status == TurnJobStatus.RUNNING.value,
            TurnJob.owner == owner,
            heartbeat_at=utcnow(),
            progress=_progress_json(progress),
        )

    async def finish(
        self,
        job_id: uuid.UUID,
        *,
        owner: str,
        status: TurnJobStatus,
        status_code: int,
        result: dict[str, Any],
        session_id: uuid.UUID | None = None,
    ) -> bool:
        """Record the outcome, only if this owner still runs the job."""
        values: dict[str, Any] = {
            "status": status.value,
            "status_code": status_code,
            "result": result,
            "finished_at": utcnow(),
        }
        if session_id is not None:
            values["session_id"] = session_id
        return await self._update(
            job_id,
            TurnJob.status == TurnJobStatus.RUNNING.value,
            TurnJob.owner == owner,
            **values,
        )

    async def abandon(
        self, job_id: uuid.UUID, *, stale_before: datetime | None, owner: str | None = None
    ) -> bool:
        """Mark a running job abandoned: its heartbeat older than ``stale_before``, or (with
        ``owner``) whatever its heartbeat, because that owner is stopping."""
        where: list[Any] = [TurnJob.status == TurnJobStatus.RUNNING.value]
        if stale_before is not None:
            where.append(TurnJob.heartbeat_at < stale_before)
        if owner is not None:
            where.append(TurnJob.owner == owner)
        error = TurnAbandonedError(ABANDONED_DETAIL, retry_after_s=1)
        return await self._update(
            job_id,
            *where,
            status=TurnJobStatus.ABANDONED.value,
            status_code=error.status,
            result={**problem_fields(error), "request_id": None},
            finished_at=utcnow(),
        )

    async def restart(self, job_id: uuid.UUID, *, owner: str) -> bool:
        """Run a failed or abandoned job again (its turn never applied)."""
        return await self._update(
            job_id,
            TurnJob.status.in_([TurnJobStatus.FAILED.value, TurnJobStatus.ABANDONED.value]),
            status=TurnJobStatus.RUNNING.value,
            owner=owner,
            heartbeat_at=utcnow(),
            progress=None,
            status_code=None,
            result=None,
            finished_at=None,
        )


@dataclass
class _Live:
    """A job running in this process: its latest progress and a wake-up for watchers."""

    task: asyncio.Task[None] | None = None
    progress: TurnProgress | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def tell(self, progress: TurnProgress | None) -> None:
        self.progress = progress
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class TurnJobs:
    """The turn jobs of this process, and the reads of anyone's (by the database)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        heartbeat_s: float = 2.0,
        stale_s: float = 30.0,
        watch_poll_s: float = 1.0,
        owner: str | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self.watch_poll_s = watch_poll_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._live: dict[uuid.UUID, _Live] = {}

    async def submit(
        self,
        *,
        tenant: str | None,
        kind: JobKind,
        target: str,
        idempotency_key: str | None,
        request_hash: str,
        session_id: uuid.UUID | None,
        success_status: int,
        work: TurnWork,
    ) -> JobState:
        """Start the turn in the background; with a used Idempotency-Key, that key's job.

        The same key and body give the same job (running or done, never a second turn); a
        failed or abandoned one runs again, as a failed synchronous call may be retried.
        """
        if idempotency_key is not None:
            existing = await self._by_key(tenant, target, idempotency_key, request_hash)
            if existing is not None:
                if existing.status in (TurnJobStatus.FAILED, TurnJobStatus.ABANDONED):
                    return await self._restart(existing, success_status, work)
                return existing
        row = TurnJob(
            tenant=tenant,
            kind=kind.value,
            target=target,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            session_id=session_id,
            status=TurnJobStatus.RUNNING.value,
            owner=self.owner,
        )
        try:
            async with self._sessionmaker.begin() as db:
                await TurnJobRepository(db).add(row)
        except IntegrityError:
            # The same key was submitted concurrently and that one won: it is this job.
            assert idempotency_key is not None
            existing = await self._by_key(tenant, target, idempotency_key, request_hash)
            if existing is None:
                raise
            return existing
        self._start(row.id, success_status, work)
        return JobState.of(row)

    async def get(self, job_id: uuid.UUID, *, tenant: str | None) -> JobState:
        """The job as stored; a running one with a stale heartbeat is abandoned first."""
        async with self._sessionmaker.begin() as db:
            repo = TurnJobRepository(db)
            row = await repo.get(job_id, tenant=tenant)
            if row is None:
                raise NotFoundError(f"no turn job {job_id}")
            state = JobState.of(row)
            stale = state.status is TurnJobStatus.RUNNING and job_id not in self._live
            if stale and await repo.abandon(job_id, stale_before=self._stale_before()):
                log.warning("turn_job.abandoned", job_id=str(job_id), kind=state.kind.value)
                row = await repo.get(job_id, tenant=tenant)
                assert row is not None
                state = JobState.of(row)
        live = self._live.get(job_id)
        if live is not None and state.status is TurnJobStatus.RUNNING:
            state = replace(state, progress=live.progress or state.progress)
        return state

    async def watch(
        self, job_id: uuid.UUID, *, tenant: str | None, keepalive_s: float = 15.0
    ) -> AsyncIterator[JobState]:
        """The job's state each time it changes (and, unchanged, every ``keepalive_s``),
        ending with the finished job.

        In the process running it, every progress step as it happens; in any other, the
        stored state (written every ``heartbeat_s``), read every ``watch_poll_s``.
        """
        last: JobState | None = None
        said = time.monotonic()
        live = self._live.get(job_id)
        changed = live.changed if live is not None else None
        state = await self.get(job_id, tenant=tenant)
        while True:
            quiet = time.monotonic() - said > keepalive_s
            moved = last is None or (state.status, state.progress) != (last.status, last.progress)
            if moved or quiet:
                yield state
                last, said = state, time.monotonic()
            if state.status.finished:
                return
            if changed is not None:
                # Woken by the next progress step; the timeout only says "still running".
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), keepalive_s)
            else:
                await asyncio.sleep(self.watch_poll_s)
            live = self._live.get(job_id)
            if live is not None:  # running here: its progress as it is, no database read
                changed = live.changed
                state = replace(state, progress=live.progress or state.progress)
            else:
                changed = None
                state = await self.get(job_id, tenant=tenant)

    def running(self) -> int:
        return len(self._live)

    async def close(self) -> None:
        """Stop this process's jobs: each is abandoned (its turn was not applied)."""
        live = list(self._live.items())
        for _, job in live:
            if job.task is not None:
                job.task.cancel()
        for job_id, job in live:
            if job.task is not None:
                await asyncio.gather(job.task, return_exceptions=True)
            try:
                async with self._sessionmaker.begin() as db:
                    await TurnJobRepository(db).abandon(job_id, stale_before=None, owner=self.owner)
            except DATABASE_ERRORS as exc:
                if not database_unavailable(exc):
                    raise
                # the heartbeat goes stale instead, and a poll marks it
        self._live.clear()

    # -- running ----------------------------------------------------------------------------

    def _stale_before(self) -> datetime:
        return utcnow() - timedelta(seconds=self.stale_s)

    async def _by_key(
        self, tenant: str | None, target: str, key: str, request_hash: str
    ) -> JobState | None:
        async with self._sessionmaker() as db:
            row = await TurnJobRepository(db).by_key(tenant=tenant, target=target, key=key)
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise InvalidInputError("this Idempotency-Key was used with a different request body")
        return await self.get(row.id, tenant=tenant)

    async def _restart(self, state: JobState, success_status: int, work: TurnWork) -> JobState:
        async with self._sessionmaker.begin() as db:
            restarted = await TurnJobRepository(db).restart(state.id, owner=self.owner)
        if restarted:
            self._start(state.id, success_status, work)
        return await self.get(state.id, tenant=None)

    def _start(self, job_id: uuid.UUID, success_status: int, work: TurnWork) -> None:
        live = _Live()
        self._live[job_id] = live
        # The task copies this context: its logs carry the request id of the request that
        # submitted it.
        live.task = asyncio.create_task(self._run(job_id, live, success_status, work))

    async def _run(
        self, job_id: uuid.UUID, live: _Live, success_status: int, work: TurnWork
    ) -> None:
        started = time.perf_counter()
        committed = False

        async def commit(db: AsyncSession, session_id: uuid.UUID, reply: SessionOut) -> None:
            nonlocal committed
            if not await TurnJobRepository(db).finish(
                job_id,
                owner=self.owner,
                status=TurnJobStatus.SUCCEEDED,
                status_code=success_status,
                result=reply.model_dump(mode="json"),
                session_id=session_id,
            ):
                raise TurnAbandonedError(ABANDONED_DETAIL, retry_after_s=1)
            committed = True

        beat = asyncio.create_task(self._heartbeat(job_id, live))
        status, code = TurnJobStatus.SUCCEEDED, success_status
        try:
            reply = await work(live.tell, commit)
            if not committed:  # a replayed Idempotency-Key: no turn was applied now
                async with self._sessionmaker.begin() as db:
                    await TurnJobRepository(db).finish(
                        job_id,
                        owner=self.owner,
                        status=status,
                        status_code=code,
                        result=reply.model_dump(mode="json"),
                        session_id=uuid.UUID(reply.id),
                    )
        except asyncio.CancelledError:
            status, code = TurnJobStatus.ABANDONED, TurnAbandonedError.status
            raise
        except Exception as exc:
            error = _as_pursuit_error(exc)
            status, code = TurnJobStatus.FAILED, error.status
            await self._fail(job_id, error)
        finally:
            beat.cancel()
            self._live.pop(job_id, None)
            live.tell(live.progress)
            log.info(
                "turn_job.finished",
                job_id=str(job_id),
                status=status.value,
                status_code=code,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def _fail(self, job_id: uuid.UUID, error: PursuitError) -> None:
        try:
            async with self._sessionmaker.begin() as db:
                await TurnJobRepository(db).finish(
                    job_id,
                    owner=self.owner,
                    status=TurnJobStatus.FAILED,
                    status_code=error.status,
                    result=problem_fields(error),
                )
        except DATABASE_ERRORS as exc:
            if not database_unavailable(exc):
                raise
            # Unrecorded: the heartbeat stops with the task, and a poll finds it abandoned.
            log.warning("turn_job.unrecorded_failure", job_id=str(job_id))

    async def _heartbeat(self, job_id: uuid.UUID, live: _Live) -> None:
        while True:
            try:
                async with self._sessionmaker.begin() as db:
                    await TurnJobRepository(db).heartbeat(
                        job_id, owner=self.owner, progress=live.progress
                    )
            except DATABASE_ERRORS as exc:
                if not database_unavailable(exc):
                    raise
                log.warning("turn_job.heartbeat_failed", job_id=str(job_id))
            await asyncio.sleep(self.heartbeat_s)


def _as_pursuit_error(exc: Exception) -> PursuitError:
    """The problem the synchronous call would have returned for ``exc``."""
    if isinstance(exc, PursuitError):
        return exc
    if database_unavailable(exc):
        return DatabaseUnavailableError()
    # Like the request middleware's 500: the type in the log, never the message (it may
    # quote patient text).
    log.error("turn_job.unhandled_error", error=type(exc).__name__)
    return PursuitError("An unexpected error ended this turn; the session is unchanged.")
