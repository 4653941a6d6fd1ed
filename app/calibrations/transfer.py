"""A finished calibration as a file: export one run, import it into another database.

The file holds what serving reads (the run's model, prompt version, question policy and
per-step result) and no case text: the per-step scores are numbers, and the params are
``public_params`` (no key ids, tenants or server paths). An imported run is the platform's,
keeps its id (importing the same file twice changes nothing) and is audited.

The embedded default ships one such file, made with the local demo model for the default
question policy (``DEMO_CALIBRATION``, README "The demo calibration"): ``install_demo``
imports it on start when the configured model and prompt version are the ones it was made
with, and activates it when nothing else serves that model.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.auditor import Auditor, ResourceType
from app.calibrations.repository import CalibrationRepository
from app.calibrations.service import public_params, record_activation
from app.calibrations.spec import serving_refusal
from app.db.models import Calibration
from app.db.status import CalibrationStatus
from app.engine.types import ProviderInfo
from app.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = [
    "DEMO_CALIBRATION",
    "FORMAT",
    "export_calibration",
    "import_calibration",
    "install_demo",
]

log = structlog.get_logger(__name__)

FORMAT = "pursuit.calibration/1"
DEMO_CALIBRATION = (
    Path(__file__).resolve().parent.parent / "data" / "calibrations" / "demo-smollm2-135m.json"
)
_FIELDS = ("model", "prompt_version", "policy", "alpha", "anytime", "max_questions")


async def export_calibration(
    sessionmaker: async_sessionmaker[AsyncSession],
    calibration_id: uuid.UUID,
    *,
    made_with: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The file form of a succeeded run (``made_with``: how it was made, for people)."""
    async with sessionmaker() as db:
        row = await CalibrationRepository(db).get(calibration_id)
    if row is None:
        raise NotFoundError(f"no calibration {calibration_id}")
    if row.status != CalibrationStatus.SUCCEEDED or row.result is None:
        raise ConflictError(f"calibration {calibration_id} is {row.status}; nothing to export")
    return {
        "format": FORMAT,
        "id": str(row.id),
        "name": row.name,
        **{name: getattr(row, name) for name in _FIELDS},
        "dataset_hash": row.dataset_hash,
        "created_at": row.created_at.isoformat(),
        "made_with": dict(made_with or {}),
        "params": public_params(row.params),
        "result": row.result,
    }


class CalibrationFile(BaseModel):
    """What an imported file must hold (export writes more, for people)."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["pursuit.calibration/1"]
    id: uuid.UUID
    name: str | None = Field(default=None, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    prompt_version: str = Field(min_length=1, max_length=64)
    policy: str = Field(min_length=1, max_length=16)
    alpha: float = Field(gt=0, lt=1)
    anytime: bool
    max_questions: int = Field(ge=0)
    dataset_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime
    made_with: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any]
    result: dict[str, Any]

    def row(self) -> Calibration:
        try:
            n = int(max(self.result["n_per_step"], default=0))
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError("malformed calibration file: result.n_per_step") from None
        return Calibration(
            id=self.id,
            tenant=None,
            name=self.name,
            status=CalibrationStatus.SUCCEEDED,
            # SQLite hands back naive times (UTC); PostgreSQL's timestamptz needs aware ones.
            created_at=self.created_at
            if self.created_at.tzinfo
            else self.created_at.replace(tzinfo=UTC),
            dataset_hash=self.dataset_hash,
            params={**self.params, "imported": self.made_with},
            progress_done=n,
            progress_total=n,
            result=self.result,
            active=False,
            **{name: getattr(self, name) for name in _FIELDS},
        )


def _parse(data: Mapping[str, Any]) -> Calibration:
    if data.get("format") != FORMAT:
        raise InvalidInputError(f"not a calibration file (format is not {FORMAT!r})")
    try:
        return CalibrationFile.model_validate(data).row()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"malformed calibration file: {where}: {first['msg']}") from None


async def import_calibration(
    sessionmaker: async_sessionmaker[AsyncSession],
    data: Mapping[str, Any],
    *,
    activate: bool,
    actor_key_id: str | None = None,
) -> tuple[Calibration, bool]:
    """Insert the file's run as the platform's (False: it was there already); ``activate``
    makes it serve, replacing the platform's active run of the same serving key."""
    row = _parse(data)
    if activate and (refusal := serving_refusal(row.params)):
        raise InvalidInputError(f"{refusal}; import it without activate")
    async with sessionmaker.begin() as db:
        repo = CalibrationRepository(db)
        existing = await repo.get(row.id)
        if existing is not None:
            return existing, False
        await repo.add(row)
        # An operator's import: in the platform's trail (no tenant).
        operator = Auditor(ResourceType.CALIBRATION, actor_key_id=actor_key_id)
        await operator.record(db, action="calibration.import", resource_id=row.id)
        if activate:
            await repo.activate(row)
            await record_activation(db, row, by=operator)
    return row, True


async def install_demo(
    sessionmaker: async_sessionmaker[AsyncSession], info: ProviderInfo, *, path: Path
) -> uuid.UUID | None:
    """Import the shipped demo calibration when it was made with ``info``'s model and prompt
    version; activate it when the platform has no active run for that model yet."""
    data = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
    if (data.get("model"), data.get("prompt_version")) != (info.model, info.prompt_version):
        log.info(
            "demo_calibration.skipped",
            reason="made with another model or prompt version",
            model=info.model,
        )
        return None
    async with sessionmaker() as db:
        active = await CalibrationRepository(db).active_for(
            model=info.model, prompt_version=info.prompt_version, owner=None
        )
    row, inserted = await import_calibration(sessionmaker, data, activate=not active)
    if inserted:
        log.info("demo_calibration.installed", calibration_id=str(row.id), active=row.active)
    return row.id
