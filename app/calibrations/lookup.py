"""Which calibration serves a session, resolved to the thresholds the engine uses.

"Serving" means one thing here: the calibration whose thresholds make a session's sets
(``Serving``), or why none does. This module is the one place sessions ask:

- a new session: ``find_serving`` asks the repository for the tenant's active calibration
  of the server's model and prompt version that matches the session's question policy
  (``app.calibrations.matching``), or the closest one's differences;
- a later turn: ``calibration_by_id`` loads the calibration the session stored, and
  ``Serving.restore`` rebuilds why none applied from what the session stored of it
  (``Serving.unmatched_json``).

A calibration without a result never serves. A session that declares a group (its
specialty) gets that group's thresholds where the calibration has them, else the pooled
ones with the reason (``app.calibrations.results.thresholds_for_group``). The selection
thresholds (what C-IP's objective counts) are the ones the result names, if any.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.calibrations.matching import Match, Mismatch, SessionPolicy
from app.calibrations.repository import CalibrationRepository
from app.calibrations.results import GroupThresholds, thresholds_for_group, thresholds_from_result
from app.db.models import Calibration
from app.engine.thresholds import StepwiseThresholds

__all__ = ["Calibrated", "Serving", "calibration_by_id", "find_serving"]


@dataclass(frozen=True)
class Calibrated:
    """The calibration serving a session, resolved to engine thresholds (its group's, if any)."""

    row: Calibration
    display: GroupThresholds  # the thresholds of the shown sets, with each step's source
    selection: StepwiseThresholds | None
    selection_id: str | None = None  # the selection calibration those thresholds came from

    @property
    def thresholds(self) -> StepwiseThresholds:
        return self.display.thresholds

    def covers(self, step: int) -> bool:
        """Whether ``step`` is one of the calibrated steps 0..T."""
        return step <= self.display.max_step


@dataclass(frozen=True)
class Serving:
    """What a session's sets come from: a calibration, or why none applies."""

    calibration: Calibrated | None
    reason: str | None = None  # why no calibration applies (a sentence, no secrets)
    mismatches: tuple[Mismatch, ...] = ()

    @classmethod
    def unmatched(cls, match: Match) -> Serving:
        """No calibration: the closest one's differences, as matching found them."""
        return cls(None, match.reason or "no calibration applies", match.mismatches)

    def unmatched_json(self) -> dict[str, Any] | None:
        """What a session stores of why no calibration applies (None: one does)."""
        if self.calibration is not None:
            return None
        return {
            "reason": self.reason,
            "mismatches": [
                {"field": m.field, "session": m.session, "calibration": m.calibration}
                for m in self.mismatches
            ],
        }

    @classmethod
    def restore(
        cls, calibration: Calibrated | None, unmatched: Mapping[str, Any] | None
    ) -> Serving:
        """Rebuild it for a later turn: the calibration by id, else why none applied
        (``unmatched``: what ``unmatched_json`` gave, or None)."""
        if calibration is not None:
            return cls(calibration)
        unmatched = unmatched or {}
        return cls(
            None,
            unmatched.get("reason") or "no calibration applies to this session",
            tuple(
                Mismatch(field=m["field"], session=m["session"], calibration=m["calibration"])
                for m in unmatched.get("mismatches", [])
            ),
        )


async def find_serving(
    db: AsyncSession,
    *,
    tenant: str | None,
    model: str,
    prompt_version: str,
    policy: SessionPolicy,
) -> Serving:
    """The tenant's active calibration that serves a new session, or why none does."""
    repo = CalibrationRepository(db)
    row, match = await repo.find_active(
        model=model, prompt_version=prompt_version, session=policy, tenant=tenant
    )
    calibration = await _resolve(repo, row, specialty=policy.specialty)
    if calibration is not None:
        return Serving(calibration)
    return Serving.unmatched(match)


async def calibration_by_id(
    db: AsyncSession, calibration_id: uuid.UUID | None, *, specialty: str | None
) -> Calibrated | None:
    """The calibration a session stored (None: none was, or it has no result)."""
    if calibration_id is None:
        return None
    repo = CalibrationRepository(db)
    return await _resolve(repo, await repo.get(calibration_id), specialty=specialty)


async def _resolve(
    repo: CalibrationRepository, row: Calibration | None, *, specialty: str | None
) -> Calibrated | None:
    if row is None or row.result is None:
        return None
    group_by = row.params.get("group_by")
    group_keys = await repo.group_keys(row.id) if group_by and specialty else None
    selection = row.result.get("selection")
    return Calibrated(
        row=row,
        display=thresholds_for_group(
            row.result, group_by=group_by, group=specialty, group_keys=group_keys
        ),
        selection=thresholds_from_result(selection) if selection else None,
        selection_id=(selection or {}).get("calibration_id"),
    )
