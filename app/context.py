"""Per-request context shared by logging, the API and the LLM gateway."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Whose posterior cache entries a call reads and writes (app.llm.cache): a session's own
# ("session:<id>", set by the session service around its LLM calls, purged when the session
# is deleted), else "shared" (calibration runs and benchmarks over server-side datasets).
# Entries never cross scopes, so one tenant's session can never hit another's.
SHARED_CACHE_SCOPE = "shared"
cache_scope_var: ContextVar[str] = ContextVar("cache_scope", default=SHARED_CACHE_SCOPE)
