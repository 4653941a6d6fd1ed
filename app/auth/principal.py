"""Who is calling: the key, its tenant and its scopes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]
