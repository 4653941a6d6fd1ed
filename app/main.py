"""The app factory. Nothing but settings exists at import; the lifespan owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from app import __version__
from app.api import (
    audit,
    calibrations,
    fhir,
    health,
    metrics_endpoint,
    plots,
    sessions,
    turn_jobs,
)
from app.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.api.openapi import SERVERS, install_openapi, operation_id
from app.api.page import mount_page
from app.api.problems import install_problem_handlers
from app.engine.types import PosteriorProvider
from app.logging import configure_logging
from app.observability.metrics import Metrics
from app.resources import Resources
from app.settings import Settings, get_settings
from app.worker.embedded import embedded_services

log = structlog.get_logger("pursuit")

DESCRIPTION = """
Pursuit guides a clinician's interview by Conformal Information Pursuit: it proposes the next
question and shows a differential, a set of candidate answers that contains the right one with
probability at least 1 - alpha **marginally over patients like the calibration cases, at this
step of the interview**. It is decision support, not a diagnosis: the guarantee says nothing
about any single patient, and does not hold when the model, prompts, policy or population differ
from the calibration. Every error is `application/problem+json` (RFC 9457).
"""


def create_app(
    settings: Settings | None = None, *, provider: PosteriorProvider | None = None
) -> FastAPI:
    """Build the ASGI app; resources open in the lifespan, not here.

    ``provider`` replaces the LLM gateway as the source of posteriors (tests, tabular models).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.open(settings, metrics=metrics, provider=provider)
        app.state.resources = resources
        log.info(
            "startup",
            version=__version__,
            database=resources.engine.dialect.name,
            redis=resources.redis is not None,
            llm=resources.llm_http is not None,
        )
        try:
            async with embedded_services(resources):
                yield
        finally:
            await resources.close()
            log.info("shutdown")

    app = FastAPI(
        title="Pursuit",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN; ``mount_page`` serves
        # /docs from local assets instead.
        docs_url=None,
        redoc_url=None,
        servers=SERVERS,
        generate_unique_id_function=operation_id,
    )
    metrics = Metrics()
    install_problem_handlers(app)
    install_openapi(app, schemas={fhir.FHIR_RESOURCE: fhir.FHIR_RESOURCE_SCHEMA})
    # Added last = outermost: the request id exists before the body limit can refuse.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    # Outermost: FHIR clients' errors become OperationOutcomes, whichever layer raised them.
    app.add_middleware(fhir.FhirErrorsMiddleware)
    app.include_router(health.router)
    app.include_router(sessions.router)
    app.include_router(turn_jobs.router)
    app.include_router(audit.router)
    app.include_router(metrics_endpoint.router)
    app.include_router(calibrations.router)
    app.include_router(fhir.router)
    app.include_router(plots.router)
    mount_page(app)
    return app


def asgi_app() -> FastAPI:
    """Entry point for ``uvicorn --factory app.main:asgi_app``."""
    settings = get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    return create_app(settings)
