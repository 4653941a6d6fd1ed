"""The 20 Questions bench in miscalibrated worlds: coverage where promised, settings recorded.

One small seeded run (150 calibration + 150 test games per policy, budget 6, 150 random
histories per length) in two worlds: ``overconfident_attrs=4`` (the model and the player
both change) and ``logit_noise=0.5`` (posteriors rebuilt from a history hash). Split
conformal calibration does not care how wrong the model is: coverage must hold at every
step for every policy in both. Deterministic, so a failure is a real regression.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from app.cli.twentyq import register
from app.research.report import coverage_p_value
from app.research.twentyq import BenchConfig, BenchPolicy, RunResult, run_bench_sync
from app.research.twentyq.bench import records_from_traces
from app.worlds.tabular import Miscalibration, Mode

ALPHA = 0.1
BUDGET = 6
# 7 steps x 4 policies x 2 worlds = 56 one-sided tests: family-wise level <= 0.056 by a
# union bound (the Beta-binomial law is exact up to score ties, which only raise coverage).
LEVEL = 0.001
WORLDS = (Miscalibration(Mode.OVERCONFIDENT_ATTRS, 4.0), Miscalibration(Mode.LOGIT_NOISE, 0.5))
CONFIG = BenchConfig(
    alpha=ALPHA,
    max_questions=BUDGET,
    games=150,
    calibration_games=150,
    selection_games=150,
    seed=4,
    policies=tuple(BenchPolicy),
    miscalibrations=WORLDS,
)


@pytest.fixture(scope="module")
def runs() -> list[RunResult]:
    return run_bench_sync(CONFIG)


def test_coverage_holds_at_every_step_for_every_policy_in_every_world(
    runs: list[RunResult],
) -> None:
    assert [r.miscalibration for r in runs] == list(WORLDS)
    for run in runs:
        report = run.report(CONFIG)
        for policy, summary in report["policies"].items():
            assert len(summary["steps"]) == BUDGET + 1
            for step in summary["steps"]:
                assert step["n"] == 150 and step["n_cal"] == 150
                assert step["coverage_p_value"] >= LEVEL, (run.miscalibration, policy, step)


def test_the_band_flags_a_calibration_from_the_plain_world(runs: list[RunResult]) -> None:
    """Negative control: thresholds calibrated on the plain table, tested where the model is
    over-confident on attributes the player answers noisily."""
    (plain,) = run_bench_sync(replace(CONFIG, policies=(BenchPolicy.IP,), miscalibrations=()))
    calibration = plain.policies["ip"].calibration
    stale = records_from_traces(
        BenchPolicy.IP, runs[0].policies["ip"].test, calibration, max_questions=BUDGET
    )
    flagged = [
        k
        for k, step in enumerate(calibration.steps)
        if coverage_p_value(
            sum(r.steps[k].covered for r in stale), len(stale), step.n, calibration.step_alpha
        )
        < LEVEL
    ]
    assert len(flagged) >= 3, flagged


def test_reports_record_the_world_and_per_label_coverage(runs: list[RunResult]) -> None:
    over = runs[0].report(CONFIG)
    assert over["model"] == "tabular:awa2-20:T=1:overconfident_attrs=4"
    assert over["miscalibration"]["mode"] == "overconfident_attrs"
    assert over["strength"] == 4.0 and len(over["miscalibration"]["attributes"]) == 17
    assert over["settings"]["miscalibrations"] == ["overconfident_attrs=4", "logit_noise=0.5"]
    for summary in over["policies"].values():
        per_label = summary["per_label"]
        assert sum(e["n"] for e in per_label.values()) == 150
        for entry in per_label.values():
            assert len(entry["steps"]) == BUDGET + 1
            assert 0 <= entry["steps"][-1]["p_value"] <= 1


def app() -> typer.Typer:
    cli = typer.Typer()
    register(cli)

    @cli.command()
    def version() -> None:  # a second command, so "bench20q" is a subcommand
        typer.echo("0")

    return cli


def test_the_cli_writes_a_sweep_per_mode_and_an_index(tmp_path: Path) -> None:
    args = ["bench20q", "--games", "30", "--calibration-games", "30", "--max-questions", "3"]
    args += ["--miscalibration", "polarity=2,4", "--miscalibration", "length=1"]
    args += ["--policies", "cip,ip,random", "--no-plots", "--out", str(tmp_path)]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "report.json").read_text())
    worlds = [
        (w["miscalibration"]["mode"], w["miscalibration"]["strength"]) for w in index["worlds"]
    ]
    assert worlds == [("polarity", 2.0), ("polarity", 4.0), ("length", 1.0)]
    assert index["settings"]["miscalibrations"] == ["polarity=2", "polarity=4", "length=1"]
    sub: dict[str, Any] = json.loads(
        (tmp_path / "polarity" / "strength=4" / "report.json").read_text()
    )
    assert sub["strength"] == 4.0 and sub["model"].endswith(":polarity=4")
    assert "per_label" in sub["policies"]["cip"]
    assert (
        "Per-label coverage: cip" in (tmp_path / "length" / "strength=1" / "report.md").read_text()
    )
    assert "cip - ip" in (tmp_path / "polarity" / "report.md").read_text()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("magic=2", "NAME in temperature"),
        ("polarity=0", "strength must be a finite number > 0"),
        ("polarity=-1", "strength must be a finite number > 0"),
        ("polarity=x", "strength must be a number"),
        ("polarity", "NAME=STRENGTH"),
    ],
)
def test_bad_miscalibrations_are_usage_errors_naming_the_flag(value: str, message: str) -> None:
    result = CliRunner().invoke(app(), ["bench20q", "--miscalibration", value])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())  # undo the error box's wrapping
    assert "--miscalibration" in text and message in text, text
    assert "Traceback" not in text and isinstance(result.exception, SystemExit)


def test_miscalibration_needs_the_tabular_provider() -> None:
    args = ["bench20q", "--provider", "llm", "--miscalibration", "length=1"]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 2 and "needs --provider tabular" in result.output
