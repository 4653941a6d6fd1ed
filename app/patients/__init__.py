"""Simulated patients: what one is (``protocol.SimulatedPatient``), MediQ's fact-select
patient on the LLM (``llm.LLMPatient``) and the retrieval patient on sentence embeddings
(``retrieval.RetrievalPatient`` over ``minilm.MiniLM``, all-MiniLM-L6-v2 in NumPy).

Only the first two are exported here: the embedding modules import tokenizers, safetensors
and SciPy, which the API process (through calibrations and workers) must not load. Import
them from their modules where they are used.
"""

from app.patients.llm import LLMPatient
from app.patients.protocol import SimulatedPatient

__all__ = ["LLMPatient", "SimulatedPatient"]
