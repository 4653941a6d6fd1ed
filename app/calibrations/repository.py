"""All SQL for calibration runs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Calibration

ALPHA_TOLERANCE = 1e-9


class CalibrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, calibration_id: uuid.UUID) -> Calibration | None:
        return await self._session.get(Calibration, calibration_id)

    async def list(self, *, limit: int = 100) -> Sequence[Calibration]:
        stmt = sa.select(Calibration).order_by(Calibration.created_at.desc()).limit(limit)
        return (await self._session.scalars(stmt)).all()

    async def add(self, calibration: Calibration) -> Calibration:
        self._session.add(calibration)
        await self._session.flush()
        return calibration

    async def find_active(
        self, *, model: str, prompt_version: str, policy: str, alpha: float
    ) -> Calibration | None:
        """The active, finished calibration for exactly this model, prompt version, policy and alpha."""
        stmt = (
            sa.select(Calibration)
            .where(
                Calibration.active.is_(True),
                Calibration.status == "succeeded",
                Calibration.model == model,
                Calibration.prompt_version == prompt_version,
                Calibration.policy == policy,
                sa.func.abs(Calibration.alpha - alpha) < ALPHA_TOLERANCE,
            )
            .order_by(Calibration.updated_at.desc())
            .limit(1)
        )
        return (await self._session.scalars(stmt)).first()

    async def activate(self, calibration: Calibration) -> None:
        """Make this the one active calibration for its (model, prompt version, policy, alpha)."""
        await self._session.execute(
            sa.update(Calibration)
            .where(
                Calibration.model == calibration.model,
                Calibration.prompt_version == calibration.prompt_version,
                Calibration.policy == calibration.policy,
                sa.func.abs(Calibration.alpha - calibration.alpha) < ALPHA_TOLERANCE,
                Calibration.id != calibration.id,
            )
            .values(active=False)
        )
        calibration.active = True
        await self._session.flush()
