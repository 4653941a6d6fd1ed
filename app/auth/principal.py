"""Who is calling: the key, its tenant and its scopes."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.keys import Scope


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]

    @property
    def calibration_owner(self) -> str | None:
        """Whose calibrations this key manages: its tenant's, or (platform:admin) the
        platform's, None."""
        return None if Scope.PLATFORM_ADMIN.value in self.scopes else self.tenant
