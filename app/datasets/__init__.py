"""Labelled case datasets (MediQ-format JSONL) and their seeded splits. No web, DB or LLM."""

from app.datasets.mediq import (
    SHIPPED_DATASETS_DIR,
    UNKNOWN_SPECIALTY,
    DatasetError,
    LineProblem,
    MediQCase,
    MediQDataset,
    file_sha256,
    load_mediq,
    parse_record,
)
from app.datasets.splits import (
    DEFAULT_FRACTIONS,
    SplitFractions,
    Splits,
    filter_specialty,
    shared_cases,
    split_cases,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "SHIPPED_DATASETS_DIR",
    "UNKNOWN_SPECIALTY",
    "DatasetError",
    "LineProblem",
    "MediQCase",
    "MediQDataset",
    "SplitFractions",
    "Splits",
    "file_sha256",
    "filter_specialty",
    "load_mediq",
    "parse_record",
    "shared_cases",
    "split_cases",
]
