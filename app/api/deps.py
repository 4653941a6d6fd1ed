"""FastAPI dependencies: the resources of the running app.

No database session here: services open their own short transactions (docs/conventions.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.resources import Resources


def resources_of(request: Request) -> Resources:
    """The running app's resources (for code that has the request but is no dependency)."""
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    # async: FastAPI would run a sync dependency in its threadpool, a thread hop per request.
    return resources_of(request)


ResourcesDep = Annotated[Resources, Depends(get_resources)]
