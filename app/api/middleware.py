"""Pure-ASGI middleware: request id in and out, one log line per request, 500 as problem+json."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.context import request_id_var
from app.errors import PAYLOAD_TOO_LARGE, UNEXPECTED_ERROR
from app.observability.metrics import Metrics

log = structlog.get_logger("pursuit.http")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None


class RequestContextMiddleware:
    """Accept a well-formed ``X-Request-Id`` or make one, echo it, log the outcome; every
    reply says ``X-Content-Type-Options: nosniff``."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                if not any(k == b"x-content-type-options" for k, _ in headers):
                    # Every reply is what its Content-Type says (no MIME sniffing).
                    headers.append((b"x-content-type-options", b"nosniff"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request.unhandled_error", method=scope.get("method"))
            if response_started:
                raise
            status_code = 500
            response = problem_response(
                UNEXPECTED_ERROR,
                detail="An unexpected error occurred; it has been logged with this request id.",
            )
            await response(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            elapsed = time.perf_counter() - started
            log.info(
                "request",
                method=scope.get("method"),
                route=route,
                status=status_code,
                duration_ms=round(elapsed * 1000, 2),
            )
            if self.metrics is not None:
                self.metrics.http_latency.labels(
                    scope.get("method", ""), route, str(status_code)
                ).observe(elapsed)
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a 413 problem, before any handler runs.

    Bodies are small JSON documents, so the body is buffered (at most ``max_bytes`` + 1) and
    replayed; a declared Content-Length over the limit is refused without reading.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            PAYLOAD_TOO_LARGE,
            detail=f"request bodies are limited to {self.max_bytes} bytes",
        )
        await response(scope, receive, send)
