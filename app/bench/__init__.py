"""Benchmark reporting shared by the 20 Questions and MediQ benches."""

from app.bench.report import (
    CaseRecord,
    StepOutcome,
    build_report,
    coverage_p_value,
    render_markdown,
    render_sweep_markdown,
    summarise_policy,
    write_report,
    write_sweep_report,
)

__all__ = [
    "CaseRecord",
    "StepOutcome",
    "build_report",
    "coverage_p_value",
    "render_markdown",
    "render_sweep_markdown",
    "summarise_policy",
    "write_report",
    "write_sweep_report",
]
