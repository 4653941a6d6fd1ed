"""Interview sessions over REST (v1). Thin: parse, call the service, shape headers."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response, status

from app.api.deps import resources_of
from app.api.paging import Cursor, Limit
from app.api.problems import (
    BODY_LIMIT_RESPONSES,
    JSON_BODY_RESPONSES,
    PROBLEM_RESPONSES,
    problem_doc,
)
from app.api.security import SessionsReader, SessionsWriter
from app.api.turn_jobs import ACCEPTED_DOC, JobsDep, accepted, wants_async
from app.auth.principal import Principal
from app.db.status import SessionStatus
from app.errors import InvalidInputError
from app.resources import Resources
from app.sessions.jobs import JobKind
from app.sessions.schemas import (
    ANSWER_EXAMPLE,
    SESSION_CREATE_EXAMPLE,
    AnswerIn,
    FinalOut,
    SessionCreate,
    SessionDetail,
    SessionList,
    SessionOut,
)
from app.sessions.service import SessionService, answer_hash

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


ERRORS = {
    **PROBLEM_RESPONSES,
    401: problem_doc("No or an unknown API key"),
    403: problem_doc("The API key lacks the scope"),
    429: problem_doc("Rate limit or the tenant's concurrent-turn budget reached; see Retry-After"),
    502: problem_doc("The LLM server returned something unusable"),
    503: problem_doc("The LLM server is unavailable or timed out; retry after Retry-After"),
}
CHANGE_ERRORS = {
    **ERRORS,
    **BODY_LIMIT_RESPONSES,
    409: problem_doc(
        "Not the current question, the session is not active, or a concurrent change won"
    ),
    412: problem_doc("If-Match names another version"),
}


def _service(resources: Resources, principal: Principal) -> SessionService:
    return SessionService(
        sessionmaker=resources.sessionmaker,
        provider=resources.provider,
        budget=resources.budget,
        metrics=resources.metrics,
        tenant=principal.tenant,
        actor_key_id=principal.key_id,
        details=resources.session_details,
        posterior_cache=resources.posterior_cache,
    )


# The dependencies are async (though they never await) because FastAPI runs sync ones in its
# threadpool: a thread hop per dependency per request, measurable on the GET path.
async def writer_service(request: Request, principal: SessionsWriter) -> SessionService:
    return _service(resources_of(request), principal)


async def reader_service(request: Request, principal: SessionsReader) -> SessionService:
    return _service(resources_of(request), principal)


WriterDep = Annotated[SessionService, Depends(writer_service)]
ReaderDep = Annotated[SessionService, Depends(reader_service)]

_ETAG = re.compile(r'^(?:W/)?"?v?(\d{1,9})"?$')


def _if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    match = _ETAG.match(value.strip())
    if match is None:
        raise InvalidInputError('If-Match must be an ETag this API sent, e.g. "3"')
    return int(match.group(1))


def _etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


IfMatch = Annotated[
    str | None,
    Header(description='Optional: the ETag (session version) the change is based on, e.g. "3".'),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=128,
        description="Optional: the same key and body return the same response; "
        "the same key with another body is a 422.",
    ),
]
CreateIdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=128,
        description="Optional, with `Prefer: respond-async` only: the same key and body "
        "return the same turn job (one session, never two); another body is a 422.",
    ),
]
Prefer = Annotated[
    str | None,
    Header(
        description="RFC 7240. `respond-async`: 202 Accepted at once with a `Location` to "
        "poll (and `Preference-Applied: respond-async`); the turn runs in the background. "
        "Without it the call answers when the turn is done, as always.",
        examples=["respond-async"],
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="sessions_create",
    summary="Open an interview: the first question and the differential",
    response_model=SessionOut,
    responses={**ERRORS, **JSON_BODY_RESPONSES, **ACCEPTED_DOC},
)
async def create_session(
    body: Annotated[
        SessionCreate,
        Body(
            openapi_examples={
                "bank": {"summary": "A bank interview", "value": SESSION_CREATE_EXAMPLE}
            }
        ),
    ],
    service: WriterDep,
    jobs: JobsDep,
    response: Response,
    prefer: Prefer = None,
    idempotency_key: CreateIdempotencyKey = None,
) -> SessionOut | Response:
    if wants_async(prefer):
        service.check_create(body)
        job = await jobs.submit(
            tenant=service.tenant,
            kind=JobKind.CREATE,
            target="create",
            idempotency_key=idempotency_key,
            request_hash=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
            session_id=None,
            success_status=status.HTTP_201_CREATED,
            work=lambda progress, commit: service.create(body, progress=progress, commit=commit),
        )
        return accepted(job)
    created = await service.create(body)
    response.headers["Location"] = f"/v1/sessions/{created.id}"
    _etag(response, created.version)
    return created


@router.get(
    "",
    operation_id="sessions_list",
    summary="The tenant's sessions, newest first (summaries: no patient text)",
    description="A page of the caller's tenant's sessions, newest first, optionally only "
    "those of one `status`. Each item is a summary (state, policy, step, version, times); "
    "GET a session for its transcript. Pages: send the reply's `next_cursor` as `cursor` "
    "until it is null.",
    responses=ERRORS,
)
async def list_sessions(
    service: ReaderDep,
    status: Annotated[
        SessionStatus | None, Query(description="Only sessions in this status.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SessionList:
    return await service.page(status=status, limit=limit, cursor=cursor)


@router.get(
    "/{session_id}",
    operation_id="sessions_get",
    summary="The whole state: transcript, current question, the differential at every step",
    response_model=SessionDetail,
    responses=ERRORS,
)
async def get_session(session_id: uuid.UUID, service: ReaderDep, response: Response) -> Response:
    # The most frequent request: an unchanged session's detail comes from the service's cache
    # with its JSON already rendered (``SessionDetail.json_bytes``), so it is sent as is; the
    # headers the dependencies set on ``response`` (rate limit) are carried over, which
    # FastAPI does only for the replies it builds itself.
    detail = await service.get(session_id)
    reply = Response(detail.json_bytes(), media_type="application/json")
    reply.headers.raw.extend(response.headers.raw)
    _etag(reply, detail.version)
    return reply


@router.post(
    "/{session_id}/answers",
    operation_id="sessions_answer",
    summary="Answer the current question: the next question and the differential",
    response_model=SessionOut,
    responses={**CHANGE_ERRORS, **JSON_BODY_RESPONSES, **ACCEPTED_DOC},
)
async def answer_question(
    session_id: uuid.UUID,
    body: Annotated[
        AnswerIn,
        Body(openapi_examples={"answer": {"summary": "An answer", "value": ANSWER_EXAMPLE}}),
    ],
    service: WriterDep,
    jobs: JobsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    prefer: Prefer = None,
) -> SessionOut | Response:
    version = _if_match(if_match)
    if wants_async(prefer):
        await service.check_answer(
            session_id, body, idempotency_key=idempotency_key, if_match=version
        )
        job = await jobs.submit(
            tenant=service.tenant,
            kind=JobKind.ANSWER,
            target=f"answer:{session_id}",
            idempotency_key=idempotency_key,
            request_hash=answer_hash(body),
            session_id=session_id,
            success_status=status.HTTP_200_OK,
            work=lambda progress, commit: service.answer(
                session_id,
                body,
                idempotency_key=idempotency_key,
                if_match=version,
                progress=progress,
                commit=commit,
            ),
        )
        return accepted(job)
    result = await service.answer(
        session_id, body, idempotency_key=idempotency_key, if_match=version
    )
    _etag(response, result.version)
    return result


@router.post(
    "/{session_id}/finalize",
    operation_id="sessions_finalize",
    summary="End the interview: the final top answer and set",
    responses=CHANGE_ERRORS,
)
async def finalize_session(
    session_id: uuid.UUID, service: WriterDep, response: Response, if_match: IfMatch = None
) -> FinalOut:
    result = await service.finalize(session_id, if_match=_if_match(if_match))
    _etag(response, result.version)
    return result


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="sessions_delete",
    summary="Erase the session and all its patient data",
    responses={**ERRORS, **BODY_LIMIT_RESPONSES},
)
async def delete_session(session_id: uuid.UUID, service: WriterDep) -> Response:
    await service.delete(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
