"""Prometheus exposition at /metrics (counts and timings only; no patient data)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ResourcesDep
from app.api.problems import problem_doc
from app.api.security import authenticate_request
from app.auth.keys import Scope
from app.calibrations.service import unfinished_progress
from app.errors import ForbiddenError

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    operation_id="health_metrics",
    summary="Prometheus metrics (public, or with PURSUIT_METRICS_PUBLIC=false a key with "
    "metrics:read)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        401: problem_doc("Not public (PURSUIT_METRICS_PUBLIC=false) and no or an unknown key"),
        403: problem_doc("Not public and the key lacks the scope metrics:read"),
    },
)
async def metrics(resources: ResourcesDep, request: Request, response: Response) -> Response:
    if not resources.settings.metrics_public:
        principal = await authenticate_request(request, response, resources)
        if Scope.METRICS_READ.value not in principal.scopes:
            raise ForbiddenError("this API key lacks the scope 'metrics:read'")
    gauge = resources.metrics.calibration_progress
    gauge.clear()
    for calibration_id, share in (await unfinished_progress(resources.sessionmaker)).items():
        gauge.labels(str(calibration_id)).set(share)
    return Response(resources.metrics.render(), media_type=CONTENT_TYPE_LATEST)
