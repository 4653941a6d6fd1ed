"""FastAPI dependencies: the resources of the running app and a transactional DB session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import transactional_session
from app.resources import Resources


async def get_resources(request: Request) -> Resources:
    # async: FastAPI would run a sync dependency in its threadpool, a thread hop per request.
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_db(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed if the handler succeeds, rolled back otherwise."""
    async for session in transactional_session(resources.sessionmaker):
        yield session


DbSession = Annotated[AsyncSession, Depends(get_db)]
