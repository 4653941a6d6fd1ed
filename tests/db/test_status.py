"""The statuses the API shows are the ones stored (app.db.status declares them)."""

from __future__ import annotations

from enum import StrEnum
from typing import get_args

from app.calibrations.schemas import CalibrationOut
from app.db.status import CalibrationStatus, TurnJobStatus
from app.sessions import schemas


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


def test_calibration_replies_show_the_stored_statuses() -> None:
    assert list(get_args(CalibrationOut.model_fields["status"].annotation)) == _values(
        CalibrationStatus
    )


def test_turn_job_replies_show_the_stored_statuses() -> None:
    turn_job = schemas.TurnJobOut.model_fields["status"].annotation
    assert list(get_args(turn_job)) == _values(TurnJobStatus)
