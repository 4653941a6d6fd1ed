"""Plots of calibration runs (PNG). Thin: authorise, call ``app.calibrations.plots``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from app.api.deps import ResourcesDep
from app.api.problems import PROBLEM_RESPONSES, problem_doc
from app.api.security import authenticate
from app.auth.keys import Scope
from app.auth.principal import Principal
from app.calibrations.plots import calibration_plot_png
from app.errors import ForbiddenError

router = APIRouter(prefix="/v1/calibrations", tags=["calibrations"])

PLOT_SCOPES = frozenset(
    {Scope.SESSIONS_READ.value, Scope.CALIBRATIONS_ADMIN.value, Scope.PLATFORM_ADMIN.value}
)


async def plot_reader(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Clinicians (sessions:read) see the calibrations behind their sets, admins their
    tenant's runs: both only their tenant's and the platform's."""
    if not PLOT_SCOPES & principal.scopes:
        raise ForbiddenError("this API key needs the scope 'sessions:read' or 'calibrations:admin'")
    return principal


PlotReader = Annotated[Principal, Depends(plot_reader)]


@router.get(
    "/{calibration_id}/plot.png",
    operation_id="calibrations_plot",
    summary="Coverage and set size per step of a calibration run (PNG)",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The plot",
        },
        **PROBLEM_RESPONSES,
        401: problem_doc("No or an unknown API key"),
        403: problem_doc("The key has neither sessions:read nor calibrations:admin"),
        409: problem_doc("The run has no result yet"),
        429: problem_doc("Rate limit reached; see Retry-After"),
    },
)
async def calibration_plot(
    calibration_id: uuid.UUID,
    resources: ResourcesDep,
    principal: PlotReader,
    candidates: Annotated[
        int | None,
        Query(
            ge=2,
            le=26,
            description="The interview's number of candidates: set sizes are capped at it "
            "('all' when the threshold allows every one).",
        ),
    ] = None,
) -> Response:
    png = await calibration_plot_png(
        resources.sessionmaker,
        calibration_id,
        owner=principal.calibration_owner,
        candidates=candidates,
    )
    # A run's result never changes once written, but keep it private: it is behind a key.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
