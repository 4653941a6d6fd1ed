"""Create, list and revoke API keys (used by the CLI and the embedded default's first run)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from app.auth.keys import TENANT_SCOPES, Scope, mint_key
from app.auth.repository import ApiKeyRepository
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import ApiKey

DEV_TENANT = "local"
DEV_KEY_FILE = "dev-api-key"


async def create_key(
    database_url: str, *, tenant: str, scopes: Sequence[Scope], name: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; returns its row and the secret (the only time it exists in clear)."""
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as db:
            key = mint_key()
            row = await ApiKeyRepository(db).create(
                key=key, tenant=tenant, scopes=scopes, name=name
            )
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
            return await ApiKeyRepository(db).revoke(key_id)
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
