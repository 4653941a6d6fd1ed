"""``bench20q`` as a Typer command registered on someone else's app."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from app.twentyq.cli import register


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
