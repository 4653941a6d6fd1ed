"""``bench-kb`` as a Typer command: a small run writes a report shaped like bench20q's."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from app.cli.kb import register


def app() -> typer.Typer:
    cli = typer.Typer()
    register(cli)

    @cli.command()
    def version() -> None:  # a second command, so "bench-kb" is a subcommand
        typer.echo("0")

    return cli


def test_bench_kb_runs_and_writes_a_bench20q_shaped_report(tmp_path: Path) -> None:
    args = ["bench-kb", "--kb", "hpo", "--candidates", "8", "--games", "40"]
    args += ["--calibration-games", "40", "--selection-games", "20", "--max-questions", "4"]
    args += ["--policies", "cip,ip,random", "--max-terms", "60", "--seed", "3"]
    result = CliRunner().invoke(app(), [*args, "--no-plots", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases"] == 40 and report["model"].startswith("tabular:hpo:omim:K=8")
    assert set(report["policies"]) == {"cip", "ip", "random"}
    assert report["by_budget"]["budgets"] == [0, 1, 2, 3, 4]
    assert report["settings"]["candidates"] == 8 and report["settings"]["max_terms"] == 60
    assert report["selection"]["n"] == [20] * 6
    assert "Human Phenotype Ontology" in (tmp_path / "report.md").read_text()


def test_bad_settings_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(app(), ["bench-kb", "--kb", "snomed"]).exit_code == 2
    assert runner.invoke(app(), ["bench-kb", "--policies", "cip,magic"]).exit_code == 2
    bad = runner.invoke(app(), ["bench-kb", "--candidates", "1"])
    assert bad.exit_code == 2 and "at least 2 candidates" in bad.output


def test_kb_cases_writes_a_dataset_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "cases" / "hpo.jsonl"
    args = ["kb-cases", "--cases", "6", "--worlds", "2", "--candidates", "5", "--out", str(out)]
    written = CliRunner().invoke(app(), [*args, "--max-terms", "40"])
    assert written.exit_code == 0, written.output
    assert written.output.strip().splitlines()[-1] == str(out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6 and all(len(r["options"]) == 5 for r in records)
    # A usage error leaves nothing behind: no file, no partial one.
    bad = tmp_path / "bad.jsonl"
    refused = CliRunner().invoke(app(), ["kb-cases", "--cases", "0", "--out", str(bad)])
    assert refused.exit_code == 2 and "at least one case" in refused.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]
