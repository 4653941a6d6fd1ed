"""Benchmark reporting shared by the 20 Questions and MediQ benches."""

from app.bench.report import (
    BASELINES,
    CaseRecord,
    PairedDifference,
    StepOutcome,
    budget_view,
    build_report,
    coverage_p_value,
    paired_by_budget,
    paired_difference,
    render_by_budget,
    render_markdown,
    render_sweep_markdown,
    summarise_policy,
    write_report,
    write_sweep_report,
)

__all__ = [
    "BASELINES",
    "CaseRecord",
    "PairedDifference",
    "StepOutcome",
    "budget_view",
    "build_report",
    "coverage_p_value",
    "paired_by_budget",
    "paired_difference",
    "render_by_budget",
    "render_markdown",
    "render_sweep_markdown",
    "summarise_policy",
    "write_report",
    "write_sweep_report",
]
