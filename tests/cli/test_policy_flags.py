"""The question policy's CLI flags: the sessions API's names, and the older flags kept."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from app.cli.policy_options import policy_options


def _chosen(*args: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @policy_options()
    def command(question_fields: dict[str, Any] | None = None) -> None:
        seen.update(question_fields or {})

    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return seen


@pytest.mark.parametrize(
    "args",
    [
        ["--question-bank-name", "neurology", "--n-candidate-questions", "6"],
        ["--bank", "neurology", "--n-questions", "6"],
    ],
)
def test_the_new_and_the_older_flags_set_the_same_fields(args: list[str]) -> None:
    chosen = _chosen("--question-source", "bank", *args)
    assert chosen["question_bank_name"] == "neurology"
    assert chosen["n_candidate_questions"] == 6


def test_help_names_the_fields_first() -> None:
    @policy_options()
    def command(question_fields: dict[str, Any] | None = None) -> None:
        del question_fields

    app = typer.Typer()
    app.command()(command)
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert output.index("--question-bank-name") < output.index("--bank")
    assert output.index("--n-candidate-questions") < output.index("--n-questions")
