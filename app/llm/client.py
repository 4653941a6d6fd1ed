"""Transport to the vLLM server: retries, backoff, a concurrency cap, typed errors.

The ``httpx.AsyncClient`` (base URL, connect/read timeouts, connection pool) belongs to the
application lifespan; this wrapper only adds policy. Bodies are never logged.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import structlog
from pydantic import BaseModel, ValidationError

from app.context import request_id_var
from app.errors import UpstreamBadOutputError, UpstreamUnavailableError
from app.llm.protocol import StrictRequest
from app.settings import Settings

log = structlog.get_logger(__name__)

R = TypeVar("R", bound=BaseModel)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 8.0


class VLLMClient:
    """POSTs strict request models, parses response models, maps failures to domain errors."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        max_retries: int,
        backoff_s: float,
        max_concurrency: int,
    ) -> None:
        self._http = http
        self._max_retries = max(0, max_retries)
        self._backoff_s = max(0.0, backoff_s)
        self._sem = asyncio.Semaphore(max(1, max_concurrency))
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # seam for tests

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(_MAX_BACKOFF_S, max(0.0, float(retry_after)))
            except ValueError:
                pass
        base = min(_MAX_BACKOFF_S, self._backoff_s * (2.0**attempt))
        return base / 2 + random.uniform(0.0, base / 2)  # "equal jitter": spread, never ~0

    async def post(self, path: str, body: StrictRequest, response: type[R], *, op: str) -> R:
        """POST ``body`` to ``path``; retry connection errors and 5xx; parse ``response``."""
        payload = body.to_json()
        headers = {"Content-Type": "application/json"}
        request_id = request_id_var.get()
        if request_id:
            headers["X-Request-Id"] = request_id
        reason = "unknown"
        retry_after: str | None = None
        for attempt in range(self._max_retries + 1):
            if attempt:
                delay = self._delay(attempt - 1, retry_after)
                log.warning("llm.retry", op=op, attempt=attempt, reason=reason, delay_s=delay)
                await self.sleep(delay)
            retry_after = None
            started = time.perf_counter()
            try:
                async with self._sem:
                    resp = await self._http.post(path, content=payload, headers=headers)
            except (
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.RemoteProtocolError,
                # A kept-alive connection the server closed under us; completions are seeded,
                # so sending again is the same request.
                httpx.ReadError,
                httpx.WriteError,
            ) as exc:
                reason = type(exc).__name__
                continue
            except httpx.TimeoutException as exc:
                # A read/pool timeout already cost the full timeout: retrying would multiply it.
                log.warning("llm.timeout", op=op, error=type(exc).__name__)
                raise UpstreamUnavailableError(
                    f"LLM server timed out ({type(exc).__name__}) on {op}", retry_after_s=5
                ) from exc
            except httpx.HTTPError as exc:
                raise UpstreamUnavailableError(
                    f"LLM server request failed ({type(exc).__name__}) on {op}", retry_after_s=5
                ) from exc
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            if resp.status_code in _RETRY_STATUS:
                reason = f"HTTP {resp.status_code}"
                retry_after = resp.headers.get("Retry-After")
                continue
            if resp.status_code >= 400:
                # vLLM's message can quote request fields: keep only its error type.
                kind = _error_type(resp)
                log.warning("llm.rejected", op=op, status=resp.status_code, kind=kind)
                raise UpstreamBadOutputError(
                    f"LLM server rejected {op} (HTTP {resp.status_code}, {kind})"
                )
            try:
                parsed = response.model_validate_json(resp.content)
            except ValidationError as exc:
                log.warning("llm.malformed", op=op, errors=exc.error_count())
                raise UpstreamBadOutputError(f"LLM server returned malformed {op} output") from exc
            log.debug("llm.call", op=op, status=resp.status_code, ms=elapsed_ms, attempt=attempt)
            return parsed
        log.warning("llm.unavailable", op=op, reason=reason, attempts=self._max_retries + 1)
        raise UpstreamUnavailableError(
            f"LLM server unavailable ({reason}) after {self._max_retries + 1} attempt(s) on {op}",
            retry_after_s=max(1, math.ceil(self._backoff_s * 2.0**self._max_retries)),
        )


def _error_type(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return "non-json"
    err = data.get("error", data) if isinstance(data, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    return str(kind)[:60] if kind else "unknown"


def llm_http_client(settings: Settings, base_url: str) -> httpx.AsyncClient:
    """The HTTP client for a vLLM server: the settings' timeouts, and connections enough for
    ``llm_max_concurrency`` requests in flight (the gateway never sends more)."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(settings.llm_read_timeout_s, connect=settings.llm_connect_timeout_s),
        limits=httpx.Limits(max_connections=settings.llm_max_concurrency * 2),
    )


async def llm_ready(http: httpx.AsyncClient) -> str | None:
    """None when ``GET /health`` answers 200, else a short reason (for /readyz)."""
    try:
        resp = await http.get("/health", timeout=httpx.Timeout(2.0, connect=1.0))
    except httpx.TimeoutException:
        return "llm: timeout"
    except httpx.HTTPError as exc:
        return f"llm: {type(exc).__name__}"
    if resp.status_code != 200:
        return f"llm: HTTP {resp.status_code}"
    return None
