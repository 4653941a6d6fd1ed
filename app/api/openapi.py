"""The OpenAPI document as a client generator needs it.

FastAPI puts a ``responses`` model under the route's own media type (``application/json``)
whatever content the entry declares, and adds its own 422 schema, which is not what the
handlers send. Here, once per document: every error response (4xx, 5xx, default) carries
the ``Problem`` schema (``ValidationProblem`` for 422) under ``application/problem+json``,
the only media type errors are sent with, and other media types an entry declares (a FHIR
OperationOutcome, say) are kept. Operation ids are ``<tag>_<verb>``: set on each route, and
for a route that sets none, its first tag and its function's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from app.api.problems import PROBLEM_MEDIA_TYPE, Problem, ValidationProblem

__all__ = ["SERVERS", "install_openapi", "operation_id"]

REF = "#/components/schemas/{model}"
SERVERS: list[dict[str, str]] = [
    {"url": "/", "description": "The server this document was read from"},
    {"url": "http://127.0.0.1:8000", "description": "make run (the embedded default)"},
]
# FastAPI's own validation schemas, unused once every 422 is a ValidationProblem.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def operation_id(route: APIRoute) -> str:
    """``<first tag>_<function name>``, for a route that names no operation id itself."""
    tag = str(route.tags[0]) if route.tags else "default"
    return f"{tag}_{route.name}"


def install_openapi(app: FastAPI, *, schemas: Mapping[str, dict[str, Any]]) -> None:
    """Make ``app.openapi()`` return the typed-problem document (built once, then cached),
    with ``schemas`` (named by routes' hand-written content) in its components."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = build()
        if fresh:
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            _type_problems(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _type_problems(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(Problem, "validation"), (ValidationProblem, "validation")], ref_template=REF
    )
    schemas.update(definitions.get("$defs", {}))
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status == "default" or status[:1] in ("4", "5"):
                    _problem_content(response, validation=status == "422")
    text = repr(document["paths"])
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f"/{name}'" not in text:
            schemas.pop(name, None)


def _problem_content(response: dict[str, Any], *, validation: bool) -> None:
    content = response.setdefault("content", {})
    # An error is never sent as application/json: FastAPI's placement of the model.
    content.pop("application/json", None)
    model = ValidationProblem if validation else Problem
    content[PROBLEM_MEDIA_TYPE] = {"schema": {"$ref": REF.format(model=model.__name__)}}
