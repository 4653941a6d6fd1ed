"""``bench20q`` as a Typer command registered on someone else's app."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from app.cli.twentyq import register


def app() -> typer.Typer:
    cli = typer.Typer()
    register(cli)

    @cli.command()
    def version() -> None:  # a second command, so "bench20q" is a subcommand
        typer.echo("0")

    return cli


def test_bench20q_runs_a_small_sweep_and_writes_the_report(tmp_path: Path) -> None:
    args = ["bench20q", "--games", "60", "--calibration-games", "60", "--max-questions", "5"]
    args += ["-T", "0.5,1", "--policies", "ip,random", "--noise", "0.1", "--seed", "3"]
    result = CliRunner().invoke(app(), [*args, "--no-plots", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "60 test games, 60 calibration games" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases"] == 60 and report["model"] == "tabular:awa2-20:T=1"
    assert [s["temperature"] for s in report["sweep"]] == [0.5, 1.0]
    assert set(report["policies"]) == {"ip", "random"}
    assert (tmp_path / "temperature=0.5" / "report.md").exists()


def test_bad_settings_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(app(), ["bench20q", "--policies", "cip,magic"]).exit_code == 2
    bad = runner.invoke(app(), ["bench20q", "--animals", "30", "--games", "5"])
    assert bad.exit_code == 2 and "animals must be 20 or 50" in bad.output
    fast = runner.invoke(app(), ["bench20q", "--backend", "fast", "--candidates", "3"])
    assert fast.exit_code == 2 and "--candidates needs --backend engine" in fast.output


def test_protocol_paper_runs_end_to_end(tmp_path: Path) -> None:
    args = ["bench20q", "--protocol", "paper", "--games", "20", "--calibration-games", "30"]
    args += ["--selection-games", "40", "--seed", "2", "--no-plots", "--out", str(tmp_path)]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    settings = report["settings"]
    assert settings["protocol"] == "paper" and settings["max_questions"] == 20
    assert settings["objective"] == "entropy_bound" and settings["answer_source"] == "sampled"
    assert settings["answers"] == 4 and settings["early_stop"] is False
    assert settings["candidates"] == "whole bank" and report["alpha"] == 0.1
    assert report["selection"]["n"] == [40] * 22  # tau_0..tau_21 from random histories
    for summary in report["policies"].values():  # no stop rule but the budget
        assert summary["final"]["stop_reasons"] == {"budget": 20}
        assert summary["final"]["mean_questions"] == 20
    assert report["by_budget"]["budgets"] == list(range(21))
    assert "cip - random [95% CI]" in (tmp_path / "report.md").read_text()


def test_protocol_paper_refuses_flags_that_contradict_it() -> None:
    runner = CliRunner()
    bad = runner.invoke(app(), ["bench20q", "--protocol", "paper", "--max-questions", "8"])
    assert bad.exit_code == 2 and "--protocol paper fixes max_questions=8" in bad.output
    bad = runner.invoke(app(), ["bench20q", "--protocol", "paper", "--objective", "set_size"])
    assert bad.exit_code == 2 and "objective=set_size" in bad.output
    assert runner.invoke(app(), ["bench20q", "--protocol", "nope"]).exit_code == 2
    assert runner.invoke(app(), ["bench20q", "--answer-source", "magic"]).exit_code == 2


def test_objective_and_answer_source_reach_the_report(tmp_path: Path) -> None:
    args = ["bench20q", "--games", "20", "--calibration-games", "20", "--max-questions", "3"]
    args += ["--policies", "cip,ip", "--objective", "entropy_bound", "--answer-source"]
    args += ["sampled", "--answers", "3", "--no-plots", "--out", str(tmp_path)]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "report.json").read_text())["settings"]
    assert (settings["objective"], settings["answer_source"], settings["answers"]) == (
        "entropy_bound",
        "sampled",
        3,
    )
    assert settings["protocol"] == "default" and settings["early_stop"] is True
