"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import ResourcesDep
from app.api.problems import problem_doc, problem_response
from app.errors import NOT_READY
from app.llm import llm_ready
from app.resources import Resources

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


class Check(BaseModel):
    # "fail": the database, without which nothing is served (503); "degraded": Redis or the
    # LLM server, without which some routes are (reads and finalize still work).
    status: Literal["ok", "fail", "degraded", "not_configured"]
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


# The parts a pod can serve without: rate limits and caches fall back in-process or off
# (Redis); creating sessions and answering need the LLM (503 with Retry-After until it is
# back), while reading sessions, FHIR, audit and finalize do not. Taking the pod out of
# service for them would also stop what still works, so they degrade readiness, not fail it.
OPTIONAL = frozenset({"redis", "llm"})


@router.get("/healthz", operation_id="health_live", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check_database(resources: Resources) -> Check:
    async with resources.engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
    return Check(status="ok")


async def _check_redis(resources: Resources) -> Check:
    if resources.redis is None:
        return Check(status="not_configured")
    await resources.redis.ping()
    return Check(status="ok")


async def _check_llm(resources: Resources) -> Check:
    if resources.llm_http is None:
        return Check(status="not_configured", detail="PURSUIT_LLM_BASE_URL is not set")
    if resources.provider is None:
        return Check(status="fail", detail="PURSUIT_LLM_MODEL is not set")
    problem = await llm_ready(resources.llm_http)
    return Check(status="ok") if problem is None else Check(status="fail", detail=problem)


async def _guarded(name: str, check: asyncio.Task[Check]) -> tuple[str, Check]:
    try:
        return name, await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        return name, Check(status="fail", detail=f"no answer within {CHECK_TIMEOUT_S:g} s")
    except Exception as exc:  # readiness reports any failure, it never raises
        return name, Check(status="fail", detail=type(exc).__name__)


@router.get(
    "/readyz",
    operation_id="health_ready",
    summary="Readiness: 200 while the database answers ('degraded' when Redis or the LLM "
    "server does not), 503 when it does not",
    response_model=Readiness,
    responses={503: problem_doc("The database does not answer; `checks` says which part")},
)
async def readyz(resources: ResourcesDep) -> Readiness | JSONResponse:
    checks = dict(
        await asyncio.gather(
            _guarded("database", asyncio.ensure_future(_check_database(resources))),
            _guarded("redis", asyncio.ensure_future(_check_redis(resources))),
            _guarded("llm", asyncio.ensure_future(_check_llm(resources))),
        )
    )
    for name in OPTIONAL:
        if checks[name].status == "fail":
            checks[name] = checks[name].model_copy(update={"status": "degraded"})
    failed = [name for name, check in checks.items() if check.status == "fail"]
    if failed:
        return problem_response(
            NOT_READY,
            detail="Failing: " + ", ".join(failed),
            headers={"Retry-After": "5"},
            checks={name: check.model_dump() for name, check in checks.items()},
        )
    degraded = any(check.status == "degraded" for check in checks.values())
    return Readiness(status="degraded" if degraded else "ok", checks=checks)
