"""Sentence embeddings (all-MiniLM-L6-v2 in NumPy) and the retrieval patient built on them."""

from app.patients.minilm import MiniLM, ModelFilesError, ensure_model
from app.patients.retrieval import DEFAULT_THRESHOLD, RetrievalPatient

__all__ = ["DEFAULT_THRESHOLD", "MiniLM", "ModelFilesError", "RetrievalPatient", "ensure_model"]
