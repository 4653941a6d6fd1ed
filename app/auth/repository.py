"""All SQL for API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.keys import NewKey, Scope
from app.db.base import utcnow
from app.db.models import ApiKey


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        *,
        key: NewKey,
        tenant: str,
        scopes: Sequence[Scope | str],
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> ApiKey:
        row = ApiKey(
            lookup=key.lookup,
            digest=key.digest,
            tenant=tenant,
            scopes=[Scope(s).value for s in scopes],
            name=name,
            expires_at=expires_at,
        )
        self._session.add(row)
        await self._session.flush()
        return row

    async def by_lookup(self, lookup: str) -> ApiKey | None:
        stmt = sa.select(ApiKey).where(ApiKey.lookup == lookup, ApiKey.revoked_at.is_(None))
        return (await self._session.scalars(stmt)).first()

    async def list(self) -> Sequence[ApiKey]:
        return (await self._session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at))).all()

    async def tenants(self) -> Sequence[str]:
        """Every tenant that has (or had) a key."""
        stmt = sa.select(ApiKey.tenant).distinct().order_by(ApiKey.tenant)
        return (await self._session.scalars(stmt)).all()

    async def count_active(self) -> int:
        stmt = sa.select(sa.func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        return int((await self._session.execute(stmt)).scalar_one())

    async def get(self, key_id: uuid.UUID) -> ApiKey | None:
        return await self._session.get(ApiKey, key_id)

    async def touch(self, key_id: uuid.UUID, *, now: datetime, every_s: float) -> None:
        """Record a use, unless one was recorded less than ``every_s`` ago (one write a
        minute per key, not one per request)."""
        await self._session.execute(
            sa.update(ApiKey)
            .where(
                ApiKey.id == key_id,
                sa.or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at < now - timedelta(seconds=every_s),
                ),
            )
            .values(last_used_at=now)
        )

    async def revoke(self, key_id: uuid.UUID) -> bool:
        result = await self._session.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(getattr(result, "rowcount", 0) == 1)
