"""API keys: random secrets shown once, stored only as hashes, looked up by a public prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "pk"


class Scope(StrEnum):
    SESSIONS_WRITE = "sessions:write"
    SESSIONS_READ = "sessions:read"
    CALIBRATIONS_ADMIN = "calibrations:admin"
    AUDIT_READ = "audit:read"
    # The operator's: manage the platform's calibrations, which serve every tenant without an
    # active run of its own. No tenant key gets it (see TENANT_SCOPES).
    PLATFORM_ADMIN = "platform:admin"
    # The operator's too: read /metrics when PURSUIT_METRICS_PUBLIC=false.
    METRICS_READ = "metrics:read"


# The operator's scopes: no tenant key gets them.
OPERATOR_SCOPES = frozenset({Scope.PLATFORM_ADMIN, Scope.METRICS_READ})
# Every scope a tenant's key may hold (the local development key holds them all).
TENANT_SCOPES: tuple[Scope, ...] = tuple(s for s in Scope if s not in OPERATOR_SCOPES)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly minted key: ``secret`` is the whole key, shown to its owner once."""

    lookup: str
    secret: str
    digest: str


def mint_key() -> NewKey:
    """``pk_<lookup>_<secret>``: 12 hex chars to find the row, 256 random bits to prove it."""
    lookup = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}_{lookup}_{secrets.token_urlsafe(32)}"
    return NewKey(lookup=lookup, secret=secret, digest=digest(secret))


def digest(secret: str) -> str:
    # The secret has 256 bits of entropy, so a fast hash is enough (no dictionary to guess).
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_lookup(secret: str) -> str | None:
    """The lookup part of a well-formed key, else None."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12:
        return None
    return parts[1]


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """``"sessions:write,sessions:read"`` -> scopes; ValueError names an unknown one."""
    scopes = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        try:
            scopes.append(Scope(raw))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {raw!r}; known: {known}") from None
    if not scopes:
        raise ValueError("give at least one scope")
    return tuple(dict.fromkeys(scopes))
