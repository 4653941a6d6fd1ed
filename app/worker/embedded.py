"""What the API process runs beside its routes: the demo calibration and, in the embedded
default, a calibration worker.

``make run`` serves one process on a SQLite file with no ``pursuit worker`` beside it, so
without these a first user would see uncalibrated sets and calibration runs that stay
``queued``. Both are settings (``PURSUIT_DEMO_CALIBRATION``, ``PURSUIT_INPROCESS_WORKER``);
a deployment with PostgreSQL runs workers as their own processes and gets neither by
default.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from app.calibrations.transfer import DEMO_CALIBRATION, install_demo
from app.resources import Resources
from app.worker.providers import simulated_patient
from app.worker.worker import Worker, default_worker_name

__all__ = ["embedded_services"]

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def embedded_services(resources: Resources) -> AsyncIterator[None]:
    """Install the demo calibration and start the in-process worker, as the settings say;
    the worker stops (its run goes back to the queue) when the context exits."""
    settings, provider = resources.settings, resources.provider
    if settings.is_embedded_default and settings.demo_calibration and provider is not None:
        try:
            await install_demo(resources.sessionmaker, provider.info, path=DEMO_CALIBRATION)
        except Exception as exc:  # the service still serves, uncalibrated (and says so)
            log.warning("demo_calibration.failed", error=type(exc).__name__)
    task: asyncio.Task[None] | None = None
    # A worker needs the model the provider serves: the LLM server, or the HPO provider itself
    # (whose runs use the kb patient); a provider injected without either (tests) runs none.
    serves_runs = resources.llm_http is not None or not settings.needs_llm_server
    if settings.runs_inprocess_worker and provider is not None and serves_runs:
        worker = Worker(
            sessionmaker=resources.sessionmaker,
            provider=provider,
            patient=simulated_patient(resources),
            name=f"inprocess:{default_worker_name()}",
        )
        task = asyncio.create_task(worker.run(), name="pursuit-inprocess-worker")
        resources.runs_worker = True
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            resources.runs_worker = False
