"""Simulated patients: what one is (``SimulatedPatient``), MediQ's fact-select patient on the
LLM (``LLMPatient``) and the retrieval patient on sentence embeddings (all-MiniLM-L6-v2 in
NumPy).

The embedding side (tokenizers, safetensors, SciPy) is imported on first use of its names,
not with the package: calibrations and workers, and so the API, import the protocol and
the LLM patient from here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from app.patients.llm import LLMPatient
from app.patients.protocol import SimulatedPatient

if TYPE_CHECKING:
    from app.patients.minilm import MiniLM, ModelFilesError, ensure_model
    from app.patients.retrieval import DEFAULT_THRESHOLD, RetrievalPatient

__all__ = [
    "DEFAULT_THRESHOLD",
    "LLMPatient",
    "MiniLM",
    "ModelFilesError",
    "RetrievalPatient",
    "SimulatedPatient",
    "ensure_model",
]

_LAZY = {
    "DEFAULT_THRESHOLD": "app.patients.retrieval",
    "MiniLM": "app.patients.minilm",
    "ModelFilesError": "app.patients.minilm",
    "RetrievalPatient": "app.patients.retrieval",
    "ensure_model": "app.patients.minilm",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
