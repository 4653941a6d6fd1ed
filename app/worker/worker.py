"""``pursuit worker``: a loop that claims calibration runs and executes them.

Any number of workers may run against one database (PostgreSQL, or the embedded SQLite
file for one machine), and any number work on one run together: the first to claim a run
owns it (its lease, its status, its thresholds); the others join it as helpers and claim
its cases one at a time beside the owner (``execute_run`` / ``help_run``). A worker only claims runs made for its own provider (model and
prompt version), so a worker pointed at another model never computes thresholds that
serving would mislabel. SIGTERM/SIGINT give the current run back to the queue; a worker
killed outright leaves a stale heartbeat, and another worker reclaims the run after
``lease_timeout_s`` and resumes it from its stored cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.calibrations.executor import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_LEASE_TIMEOUT_S,
    RunOutcome,
    claim_next,
    execute_run,
    help_run,
    join_next,
)
from app.engine.types import PosteriorProvider
from app.patients.protocol import SimulatedPatient
from app.settings import Settings
from app.worker.providers import open_run_provider

__all__ = ["Worker", "default_worker_name", "run_worker"]

log = structlog.get_logger(__name__)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Worker:
    """Claims and executes calibration runs for one provider."""

    sessionmaker: async_sessionmaker[AsyncSession]
    provider: PosteriorProvider
    patient: SimulatedPatient
    name: str = field(default_factory=default_worker_name)
    poll_s: float = 2.0
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    heartbeat_s: float = DEFAULT_HEARTBEAT_S

    async def run_once(self) -> RunOutcome | None:
        """Own a claimable run, else help a running one; None when there is neither."""
        info = self.provider.info
        claimed = await claim_next(
            self.sessionmaker,
            worker=self.name,
            model=info.model,
            prompt_version=info.prompt_version,
            lease_timeout_s=self.lease_timeout_s,
        )
        if claimed is not None:
            calibration_id, token = claimed
            return await execute_run(
                self.sessionmaker,
                calibration_id,
                token,
                provider=self.provider,
                patient=self.patient,
                heartbeat_s=self.heartbeat_s,
                lease_timeout_s=self.lease_timeout_s,
                worker=self.name,
            )
        joinable = await join_next(
            self.sessionmaker,
            model=info.model,
            prompt_version=info.prompt_version,
            lease_timeout_s=self.lease_timeout_s,
        )
        if joinable is None:
            return None
        return await help_run(
            self.sessionmaker,
            joinable,
            provider=self.provider,
            patient=self.patient,
            worker=self.name,
            heartbeat_s=self.heartbeat_s,
            lease_timeout_s=self.lease_timeout_s,
        )

    async def run(self, *, once: bool = False) -> None:
        """Work until cancelled (or, with ``once``, until nothing is left to claim)."""
        log.info("worker.start", worker=self.name, model=self.provider.info.model)
        while True:
            try:
                outcome = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or the LLM server is down: retry later
                log.warning("worker.error", error=type(exc).__name__)
                outcome = None
                if once:
                    raise
            if outcome is not None:
                log.info(
                    "worker.finished",
                    calibration_id=str(outcome.calibration_id),
                    status=outcome.status,
                    computed=outcome.computed_cases,
                    resumed=outcome.skipped_cases,
                )
                # A helper that got nothing done (a failing case, a race for the last one)
                # waits like an idle worker rather than spinning on the same run.
                if outcome.status != "helped" or outcome.computed_cases:
                    continue
            if once:
                return
            await asyncio.sleep(self.poll_s)


async def run_worker(
    settings: Settings,
    *,
    once: bool = False,
    poll_s: float = 2.0,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
) -> None:
    """The ``pursuit worker`` process: the serving provider, signals, the loop."""
    resources, provider, patient = open_run_provider(settings)
    try:
        worker = Worker(
            sessionmaker=resources.sessionmaker,
            provider=provider,
            patient=patient,
            poll_s=poll_s,
            lease_timeout_s=lease_timeout_s,
            heartbeat_s=heartbeat_s,
        )
        task = asyncio.create_task(worker.run(once=once))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("worker.stop", worker=worker.name)
    finally:
        await resources.close()
