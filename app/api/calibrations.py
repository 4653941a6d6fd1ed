"""Calibration runs over REST (v1). Thin: parse, call the service, shape headers.

Runs are executed asynchronously by ``pursuit worker`` processes: POST only queues one.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response, status

from app.api.deps import ResourcesDep
from app.api.paging import Cursor, Limit
from app.api.problems import (
    BODY_LIMIT_RESPONSES,
    JSON_BODY_RESPONSES,
    PROBLEM_RESPONSES,
    problem_doc,
)
from app.api.security import CalibrationsAdmin
from app.calibrations.schemas import (
    CALIBRATION_CREATE_EXAMPLES,
    CalibrationCreate,
    CalibrationList,
    CalibrationOut,
)
from app.calibrations.service import CalibrationService

router = APIRouter(prefix="/v1/calibrations", tags=["calibrations"])


ERRORS = {
    **PROBLEM_RESPONSES,
    401: problem_doc("No or an unknown API key"),
    403: problem_doc(
        "The API key lacks the scope calibrations:admin (or platform:admin), or the run is "
        "the platform's and the key is a tenant's"
    ),
    429: problem_doc("Rate limit reached; see Retry-After"),
}


async def admin_service(
    resources: ResourcesDep, principal: CalibrationsAdmin
) -> CalibrationService:
    return CalibrationService(
        sessionmaker=resources.sessionmaker,
        provider=resources.provider,
        data_dir=resources.settings.data_dir,
        tenant=principal.tenant,
        actor_key_id=principal.key_id,
        owner=principal.calibration_owner,
        runs_worker=resources.runs_worker,
    )


AdminDep = Annotated[CalibrationService, Depends(admin_service)]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="calibrations_create",
    summary="Queue a calibration run (a `pursuit worker` executes it)",
    responses={
        **ERRORS,
        **JSON_BODY_RESPONSES,
        503: problem_doc("No LLM server is configured, so the run's model is unknown"),
    },
)
async def create_calibration(
    body: Annotated[
        CalibrationCreate,
        Body(
            openapi_examples={
                name: {"summary": f"A {name} run", "value": value}
                for name, value in CALIBRATION_CREATE_EXAMPLES.items()
            }
        ),
    ],
    service: AdminDep,
    response: Response,
) -> CalibrationOut:
    created = await service.create(body)
    response.headers["Location"] = f"/v1/calibrations/{created.id}"
    return created


@router.get(
    "",
    operation_id="calibrations_list",
    summary="Calibration runs, newest first",
    description="The caller's runs and the platform's, newest first. Pages: send the "
    "reply's `next_cursor` as `cursor` until it is null.",
    responses=ERRORS,
)
async def list_calibrations(
    service: AdminDep, limit: Limit = 50, cursor: Cursor = None
) -> CalibrationList:
    return await service.list(limit=limit, cursor=cursor)


@router.get(
    "/{calibration_id}",
    operation_id="calibrations_get",
    summary="One run: status, progress (done/total, n per step), thresholds when done",
    responses=ERRORS,
)
async def get_calibration(calibration_id: uuid.UUID, service: AdminDep) -> CalibrationOut:
    return await service.get(calibration_id)


@router.post(
    "/{calibration_id}/activate",
    operation_id="calibrations_activate",
    summary="Serve this calibration for its model, prompt version, alpha and question policy",
    responses={
        **ERRORS,
        **BODY_LIMIT_RESPONSES,
        409: problem_doc("The run has not succeeded, or cannot serve sessions"),
    },
)
async def activate_calibration(calibration_id: uuid.UUID, service: AdminDep) -> CalibrationOut:
    return await service.activate(calibration_id)


@router.post(
    "/{calibration_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="calibrations_resume",
    summary="Queue a failed or interrupted run again; a worker continues it",
    description="A failed run, or a running one whose worker stopped heartbeating (60 s), "
    "goes back to the queue. The worker that claims it keeps the cases already finished and "
    "interviews only the rest, then computes the thresholds from all of them.",
    responses={
        **ERRORS,
        **BODY_LIMIT_RESPONSES,
        409: problem_doc(
            "The run is queued, succeeded, or running with a live worker: nothing to resume"
        ),
    },
)
async def resume_calibration(
    calibration_id: uuid.UUID, service: AdminDep, response: Response
) -> CalibrationOut:
    resumed = await service.resume(calibration_id)
    response.headers["Location"] = f"/v1/calibrations/{resumed.id}"
    return resumed
