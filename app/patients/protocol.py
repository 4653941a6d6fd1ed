"""What a simulated patient is: it answers a doctor's question from a case's facts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["SimulatedPatient"]


class SimulatedPatient(Protocol):
    """Answers a question from a case's facts (MediQ's fact-select patient)."""

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str: ...
