"""FastAPI dependencies: the resources of the running app.

No database session here: services open their own short transactions (docs/conventions.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.resources import Resources


async def get_resources(request: Request) -> Resources:
    # async: FastAPI would run a sync dependency in its threadpool, a thread hop per request.
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]
