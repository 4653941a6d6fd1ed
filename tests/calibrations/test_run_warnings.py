"""What ``pursuit calibrate`` says before a run: too few cases, and roughly how long."""

from __future__ import annotations

import pytest

from app.calibrations.spec import RunSpec
from app.cli.calibrations import SECONDS_PER_PROMPT_DEMO, run_warnings


def _spec(**fields: object) -> RunSpec:
    return RunSpec.create(dataset="d", dataset_hash="h", **{"max_questions": 5, **fields})


@pytest.mark.parametrize(
    ("cases", "alpha", "anytime", "warning"),
    [
        (8, 0.1, False, "no finite threshold"),  # 9 needed at 0.1
        (9, 0.1, False, "are few"),
        (44, 0.1, False, "are few"),
        (45, 0.1, False, None),
        (45, 0.1, True, "no finite threshold"),  # alpha / 6 per step: 59 needed
        (19, 0.05, False, "are few"),
        (18, 0.05, False, "no finite threshold"),
    ],
)
def test_too_few_cases_are_warned_before_the_run(
    cases: int, alpha: float, anytime: bool, warning: str | None
) -> None:
    lines = run_warnings(_spec(cases=cases, alpha=alpha, anytime=anytime))
    warnings = [line for line in lines if line.startswith("warning")]
    if warning is None:
        assert warnings == []
    else:
        (line,) = warnings
        assert warning in line


def test_the_estimate_counts_the_scored_prompts_of_the_policy() -> None:
    # 50 cases x (6 step posteriors + 5 steps x 4 candidates x 2 answers) = 2,300 prompts.
    (estimate,) = run_warnings(_spec(cases=50))
    minutes = round(2300 * SECONDS_PER_PROMPT_DEMO / 60)
    assert "2,300 scored prompts" in estimate and f"about {minutes} min" in estimate
    (bigger,) = run_warnings(_spec(cases=50, n_candidate_questions=8, n_answers=4))
    assert "8,300 scored prompts" in bigger
