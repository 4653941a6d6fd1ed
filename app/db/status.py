"""The statuses a row can be in: sessions, calibration runs and background turns.

Stored as these strings in ``String`` columns (no database enum: the migrations stay the only
schema source and a new status needs none). Declared here, below every layer that reads or
writes a status; replies that show one list the same strings (checked by
``tests/db/test_status.py``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CalibrationStatus", "SessionStatus", "TurnJobStatus"]


class SessionStatus(StrEnum):
    """Where a session is: asking, stopped by a rule (readable, finalizable), or ended."""

    ACTIVE = "active"
    STOPPED = "stopped"
    FINALIZED = "finalized"


class CalibrationStatus(StrEnum):
    """Where a calibration run is: waiting for a worker, being run, done, or stopped by an error
    (resumable)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TurnJobStatus(StrEnum):
    """Where a background turn is: running, or finished one of three ways."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # its process stopped before the turn was applied

    @property
    def finished(self) -> bool:
        return self is not TurnJobStatus.RUNNING
