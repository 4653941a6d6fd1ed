"""Refused requests in the audit trail, without flooding it.

A refused request (401, 403, 429) is recorded once per caller, outcome and minute: the
first refusal of the minute writes an event ``request.refused`` (its outcome
``unauthorized``, ``forbidden`` or ``rate_limited``, its resource the route), and the rest
of that minute's refusals of the same kind are only counted by the HTTP metrics. The caller
is the API key when it is known (its tenant's trail) and else the client address (an event
without a tenant, for the operator). Per process: with N processes a caller can appear up
to N times a minute.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.auditor import Auditor, ResourceType

log = structlog.get_logger(__name__)

__all__ = ["RefusalAudit"]

_MINUTE_S = 60


class RefusalAudit:
    """Which (caller, outcome) pairs were already recorded this minute, per process."""

    def __init__(self) -> None:
        self._recorded: dict[tuple[str, str], int] = {}

    def first_this_minute(self, caller: str, outcome: str) -> bool:
        minute = int(time.time() // _MINUTE_S)
        key = (caller, outcome)
        if self._recorded.get(key) == minute:
            return False
        self._recorded[key] = minute
        if len(self._recorded) > 100_000:  # drop past minutes now and then
            self._recorded = {k: m for k, m in self._recorded.items() if m == minute}
        return True

    async def record(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        outcome: str,
        route: str,
        caller: str,
        tenant: str | None = None,
        actor_key_id: str | None = None,
    ) -> None:
        """Record the refusal if it is the caller's first of this kind this minute. A failed
        write is logged, never raised: the refusal itself must still go out."""
        if not self.first_this_minute(caller, outcome):
            return
        try:
            auditor = Auditor(ResourceType.ROUTE, tenant=tenant, actor_key_id=actor_key_id)
            async with sessionmaker.begin() as db:
                await auditor.record(
                    db, action="request.refused", resource_id=route[:64], outcome=outcome
                )
        except Exception as exc:  # the database may be why the request failed
            log.warning("audit.refusal_not_recorded", outcome=outcome, error=type(exc).__name__)
