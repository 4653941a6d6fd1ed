"""Background turns (``Prefer: respond-async``): poll a turn job, or stream its progress.

Poll ``GET /v1/turn-jobs/{id}``: 202 with the job (its progress) while it runs; then the
reply the synchronous call would have returned (200, the session with its ETag), or its
problem+json with that call's status. ``GET /v1/turn-jobs/{id}/events`` is a
``text/event-stream`` of ``progress`` events ending with one ``done`` event; the reply itself
is read from the poll URL, so the stream carries counts only. Any API process answers both:
the job's state is in the database (the process running the turn also wakes its own
streams at every step; the others read the row, written every few seconds).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import ResourcesDep
from app.api.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_RESPONSES,
    Problem,
    problem_doc,
)
from app.api.security import SessionsReader
from app.context import request_id_var
from app.db.status import TurnJobStatus
from app.errors import ProblemType, PursuitError
from app.sessions.jobs import JobState, TurnJobs
from app.sessions.schemas import SessionOut, TurnJobOut, TurnProgressOut

router = APIRouter(prefix="/v1/turn-jobs", tags=["sessions"])

PREFER_ASYNC = "respond-async"
# How soon a client should poll again while a turn runs (seconds).
POLL_AFTER_S = 1

ERRORS: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    401: problem_doc("No or an unknown API key"),
    403: problem_doc("The API key lacks the scope"),
    404: problem_doc("No such turn job for this tenant"),
    429: problem_doc(
        "Rate limit reached (on a poll, also: the turn failed because the tenant's "
        "concurrent-turn budget was full); see Retry-After"
    ),
}
# What a poll of a finished job can return besides the reply: the synchronous call's problem.
FAILED_TURN: dict[int | str, dict[str, Any]] = {
    409: problem_doc("The turn failed as the synchronous call would have: a conflict"),
    500: problem_doc("The turn failed with an unexpected error; nothing was applied"),
    502: problem_doc("The turn failed: the LLM server returned something unusable"),
    503: problem_doc(
        "The turn failed (LLM server or database unavailable) or was abandoned (its process "
        "stopped; type .../turn-abandoned): nothing was applied, send the request again"
    ),
}
ACCEPTED_DOC: dict[int | str, dict[str, Any]] = {
    202: {
        "model": TurnJobOut,
        "description": "Sent with `Prefer: respond-async`: the turn runs in the background. "
        "Poll `Location` (202 while it runs, then this call's reply or problem) or stream "
        "its progress from `events`. Checks that need no LLM (404, 409, 412, 422) are "
        "answered at once, as without the preference.",
        "headers": {
            "Location": {"description": "The turn job to poll", "schema": {"type": "string"}},
            "Preference-Applied": {"schema": {"type": "string", "enum": [PREFER_ASYNC]}},
        },
    }
}


def wants_async(prefer: str | None) -> bool:
    """Whether an RFC 7240 ``Prefer`` header asks for ``respond-async`` (other preferences,
    such as ``wait``, are ignored)."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        token = preference.split(";")[0].split("=")[0].strip().lower()
        if token == PREFER_ASYNC:
            return True
    return False


def _location(job_id: uuid.UUID) -> str:
    return f"{router.prefix}/{job_id}"


def job_out(state: JobState) -> TurnJobOut:
    progress = state.progress
    return TurnJobOut(
        id=str(state.id),
        kind=state.kind.value,
        status=state.status.value,
        session_id=str(state.session_id) if state.session_id else None,
        progress=None
        if progress is None
        else TurnProgressOut(
            stage=progress.stage.value,
            done=progress.done,
            total=progress.total,
            message=progress.message,
        ),
        location=_location(state.id),
        events=f"{_location(state.id)}/events",
    )


def accepted(state: JobState) -> JSONResponse:
    """The 202 of a request sent with ``Prefer: respond-async``."""
    return JSONResponse(
        job_out(state).model_dump(mode="json"),
        status_code=202,
        headers={
            "Location": _location(state.id),
            "Preference-Applied": PREFER_ASYNC,
            "Retry-After": str(POLL_AFTER_S),
            "Vary": "Prefer",
        },
    )


async def _jobs(resources: ResourcesDep) -> TurnJobs:
    return resources.turn_jobs


JobsDep = Annotated[TurnJobs, Depends(_jobs)]


def _stored_problem(state: JobState) -> JSONResponse:
    fields = dict(state.result or {})
    headers = dict(fields.pop("headers", None) or {})
    request_id = request_id_var.get()
    problem = ProblemType(
        slug=str(fields.get("type_slug", PursuitError.type_slug)),
        status=int(fields.get("status", state.status_code or PursuitError.status)),
        title=str(fields.get("title", PursuitError.title)),
    )
    body = Problem(
        type=problem.uri,
        title=problem.title,
        status=problem.status,
        detail=str(fields.get("detail", "")),
        # The request that ran the turn (its log lines carry it); else this poll's.
        request_id=fields.get("request_id") or request_id,
    )
    if request_id:
        headers["X-Request-Id"] = request_id
    return JSONResponse(
        body.model_dump(), status_code=body.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


@router.get(
    "/{job_id}",
    operation_id="sessions_turn_job",
    summary="Poll a background turn: 202 while it runs, then the turn's reply or problem",
    response_model=SessionOut,
    responses={
        **ERRORS,
        **FAILED_TURN,
        200: {"description": "Done: the reply the synchronous call would have returned"},
        202: {
            "model": TurnJobOut,
            "description": "Still running: its progress. Poll again after `Retry-After`.",
        },
    },
)
async def poll_turn_job(
    job_id: uuid.UUID, jobs: JobsDep, principal: SessionsReader, response: Response
) -> Any:
    state = await jobs.get(job_id, tenant=principal.tenant)
    if state.status is TurnJobStatus.RUNNING:
        return JSONResponse(
            job_out(state).model_dump(mode="json"),
            status_code=202,
            headers={"Retry-After": str(POLL_AFTER_S)},
        )
    if state.status is TurnJobStatus.SUCCEEDED:
        reply = SessionOut.model_validate(state.result)
        response.headers["ETag"] = f'"{reply.version}"'
        return reply
    return _stored_problem(state)


def _event(name: str, data: dict[str, Any], event_id: int) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(first: JobState, jobs: TurnJobs, tenant: str) -> AsyncIterator[str]:
    yield f"retry: {POLL_AFTER_S * 1000}\n\n"
    sent = 0
    last_progress = None
    async for state in jobs.watch(first.id, tenant=tenant):
        # A finished job's stored progress is its last heartbeat's, older than the live
        # steps already sent: only "done" now.
        progress = None if state.status.finished else job_out(state).progress
        if progress is not None and progress != last_progress:
            sent += 1
            yield _event("progress", progress.model_dump(mode="json"), sent)
            last_progress = progress
        elif not state.status.finished:
            yield ": still running\n\n"  # keeps proxies from closing a quiet stream
        if state.status.finished:
            sent += 1
            done = {
                "status": state.status.value,
                "status_code": state.status_code,
                "location": _location(state.id),
            }
            yield _event("done", done, sent)


@router.get(
    "/{job_id}/events",
    operation_id="sessions_turn_job_events",
    summary="Server-sent events of a background turn's progress, ending with `done`",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`event: progress` with `{stage, done, total, message}` as the "
            "turn runs (e.g. `scored 12 of 32 candidate answers`), then one `event: done` "
            "with `{status, status_code, location}`; read the reply at `location`.",
        },
    },
)
async def turn_job_events(
    job_id: uuid.UUID, jobs: JobsDep, principal: SessionsReader
) -> StreamingResponse:
    first = await jobs.get(job_id, tenant=principal.tenant)  # 404 before the stream starts
    return StreamingResponse(
        _stream(first, jobs, principal.tenant),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
