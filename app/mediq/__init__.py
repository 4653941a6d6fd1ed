"""The MediQ benchmark: C-IP vs IP vs baselines on held-out iMedQA cases, with reports."""

from app.mediq.bench import (
    ALL_FACTS,
    BENCH_POLICIES,
    BenchSpec,
    CaseLog,
    HeldOutCase,
    record_from_test,
    resolve_policies,
    run_bench,
)

__all__ = [
    "ALL_FACTS",
    "BENCH_POLICIES",
    "BenchSpec",
    "CaseLog",
    "HeldOutCase",
    "record_from_test",
    "resolve_policies",
    "run_bench",
]
