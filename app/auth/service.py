"""Verify a presented API key (every request); create, list, revoke and rotate keys (the CLI
and the embedded default's first run); every key event is in the key's tenant's audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.auditor import Auditor, ResourceType
from app.auth import keys
from app.auth.keys import TENANT_SCOPES, Scope, mint_key
from app.auth.principal import Principal
from app.auth.repository import ApiKeyRepository
from app.db.base import utcnow
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import ApiKey
from app.errors import InvalidInputError, UnauthorizedError

DEV_TENANT = "local"
DEV_KEY_FILE = "dev-api-key"
# A key's last-used time is written at most this often (the verify path runs once per key
# and auth-cache TTL, and a write per request would cost every request).
LAST_USED_EVERY_S = 60.0


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns: they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def verify_key(sessionmaker: async_sessionmaker[AsyncSession], secret: str) -> Principal:
    """Who ``secret`` is: its tenant and scopes; UnauthorizedError if it is malformed,
    unknown, revoked or expired. Records its last use (at most every LAST_USED_EVERY_S)."""
    lookup = keys.parse_lookup(secret)
    if lookup is None:
        raise UnauthorizedError("malformed API key")
    async with sessionmaker() as db:
        row = await ApiKeyRepository(db).by_lookup(lookup)
    if row is None or not keys.matches(secret, row.digest):
        raise UnauthorizedError("unknown or revoked API key")
    now = utcnow()
    if row.expires_at is not None and _aware(row.expires_at) <= now:
        raise UnauthorizedError("expired API key")
    last = row.last_used_at
    if last is None or (now - _aware(last)).total_seconds() >= LAST_USED_EVERY_S:
        async with sessionmaker.begin() as db:
            await ApiKeyRepository(db).touch(row.id, now=now, every_s=LAST_USED_EVERY_S)
    return Principal(key_id=str(row.id), tenant=row.tenant, scopes=frozenset(row.scopes))


async def _audit_key(db: AsyncSession, action: str, row: ApiKey) -> None:
    """Key events go to the key's tenant's trail (the CLI is the actor: no key id)."""
    await Auditor(ResourceType.API_KEY, tenant=row.tenant).record(
        db, action=action, resource_id=row.id
    )


async def create_key(
    database_url: str,
    *,
    tenant: str,
    scopes: Sequence[Scope],
    name: str | None = None,
    expires_in_days: float | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key; returns its row and the secret (the only time it exists in clear)."""
    if expires_in_days is not None and expires_in_days <= 0:
        raise InvalidInputError("expires_in_days must be positive")
    expires_at = None if expires_in_days is None else utcnow() + timedelta(days=expires_in_days)
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as db:
            key = mint_key()
            row = await ApiKeyRepository(db).create(
                key=key, tenant=tenant, scopes=scopes, name=name, expires_at=expires_at
            )
            await _audit_key(db, "key.create", row)
            return row, key.secret
    finally:
        await engine.dispose()


async def list_keys(database_url: str) -> Sequence[ApiKey]:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            return await ApiKeyRepository(db).list()
    finally:
        await engine.dispose()


async def revoke_key(database_url: str, key_id: uuid.UUID) -> bool:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as db:
            repo = ApiKeyRepository(db)
            if not await repo.revoke(key_id):
                return False
            row = await repo.get(key_id)
            assert row is not None
            await _audit_key(db, "key.revoke", row)
            return True
    finally:
        await engine.dispose()


async def rotate_key(database_url: str, key_id: uuid.UUID) -> tuple[ApiKey, str] | None:
    """Replace an active key by a new one with its tenant, scopes, name and remaining
    lifetime, revoking the old one in the same transaction; None if it is not active."""
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as db:
            repo = ApiKeyRepository(db)
            old = await repo.get(key_id)
            if old is None or not await repo.revoke(key_id):
                return None
            key = mint_key()
            row = await repo.create(
                key=key,
                tenant=old.tenant,
                scopes=old.scopes,
                name=old.name,
                expires_at=old.expires_at,
            )
            await _audit_key(db, "key.rotate", old)
            await _audit_key(db, "key.create", row)
            return row, key.secret
    finally:
        await engine.dispose()


async def ensure_dev_key(database_url: str, data_dir: Path) -> str | None:
    """First run of the embedded default: mint a key with every tenant scope for tenant 'local'.

    Returns the new secret (also written to ``data_dir/dev-api-key``, mode 600), or None when
    keys already exist. There is never an open door: without a key every call is a 401.
    """
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as db:
            repo = ApiKeyRepository(db)
            if await repo.count_active() > 0:
                return None
            key = mint_key()
            await repo.create(
                key=key, tenant=DEV_TENANT, scopes=TENANT_SCOPES, name="local development"
            )
    finally:
        await engine.dispose()
    path = data_dir / DEV_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key.secret + "\n")
    return key.secret
