"""``pursuit bench-kb`` and ``pursuit kb-cases``: the HPO knowledge base from the command line.

``register(cli)`` adds the commands. ``--kb hpo`` is the only knowledge base (the hpo3
wheel's Human Phenotype Ontology). ``bench-kb``'s report has bench20q's shape
(``app.research.report``) plus ``all_terms`` (every bank term answered) and the HPO
attribution; ``kb-cases`` writes labelled cases for ``pursuit calibrate --patient kb``
(``app.worlds.kb.cases``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from app.cli.twentyq import parse_policies
from app.engine import Objective
from app.errors import PursuitError
from app.research.kb import KbBenchConfig, KbRun, run_kb_sync
from app.research.report import write_report
from app.worlds.kb.cases import kb_cases
from app.worlds.kb.hpo import load_hpo
from app.worlds.kb.world import PatientConfig, WorldConfig

__all__ = ["bench_kb", "cases", "register"]

# Options both commands take: the knowledge base, where the candidates come from, the patient.
KB_OPTION = typer.Option("hpo", "--kb", help="Knowledge base: hpo (the hpo3 wheel's HPO).")
SOURCE_OPTION = typer.Option("omim", "--source", help="Candidates from omim | orpha | both.")
ANCESTOR_RATE_OPTION = typer.Option(
    0.2, "--ancestor-rate", help="The patient reports a parent term instead."
)
FALSE_POSITIVE_OPTION = typer.Option(
    0.02, "--false-positive", help="The patient's background findings per term."
)
UNSURE_RATE_OPTION = typer.Option(0.1, "--unsure-rate", help="The patient answers unsure.")


def bench_kb(
    kb: str = KB_OPTION,
    candidates: int = typer.Option(15, "--candidates", "-K", help="Diseases in the differential."),
    games: int = typer.Option(1000, "--games", help="Test games (patients) per policy."),
    calibration_games: int = typer.Option(
        500, "--calibration-games", help="Calibration games per policy."
    ),
    selection_games: int | None = typer.Option(
        None,
        "--selection-games",
        help="Random-question histories per length for cip (default: --calibration-games).",
    ),
    policies: str = typer.Option(
        "cip,cip-nominal,ip,random",
        "--policies",
        help="Comma list of cip, cip-nominal, ip, random.",
    ),
    objective: str = typer.Option(
        "set_size", "--objective", help="C-IP objective: set_size | entropy_bound."
    ),
    alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage level."),
    max_questions: int = typer.Option(15, "--max-questions", help="Question budget T."),
    early_stop: bool = typer.Option(
        True, "--early-stop/--no-early-stop", help="Singleton / no-gain stops on top of the budget."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the games and patients."),
    world_seed: int = typer.Option(0, "--world-seed", help="Seed of the differential."),
    source: str = SOURCE_OPTION,
    max_terms: int = typer.Option(300, "--max-terms", help="Largest question bank."),
    sensitivity: float = typer.Option(0.8, "--sensitivity", help="The model's P(yes | annotated)."),
    background: float = typer.Option(
        0.05, "--background", help="The model's P(yes | not annotated)."
    ),
    ancestor_rate: float = ANCESTOR_RATE_OPTION,
    false_positive: float = FALSE_POSITIVE_OPTION,
    unsure_rate: float = UNSURE_RATE_OPTION,
    out: Path = typer.Option(Path("var/bench-kb"), "--out", help="Report directory."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
) -> None:
    """Calibrate and test C-IP, IP and random on a seeded HPO differential; write reports."""
    if kb != "hpo":
        raise typer.BadParameter(f"kb must be hpo, got {kb!r}")
    try:
        config = KbBenchConfig(
            world=WorldConfig(
                candidates=candidates,
                seed=world_seed,
                source=source,
                max_terms=max_terms,
                sensitivity=sensitivity,
                background=background,
            ),
            patient=PatientConfig(
                ancestor_rate=ancestor_rate, false_positive=false_positive, unsure_rate=unsure_rate
            ),
            alpha=alpha,
            max_questions=max_questions,
            games=games,
            calibration_games=calibration_games,
            selection_games=selection_games,
            seed=seed,
            policies=parse_policies(policies),
            objective=Objective(objective),
            early_stop=early_stop,
        )
        started = time.perf_counter()
        run = run_kb_sync(config, log=typer.echo)
    except (PursuitError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from exc
    wall = time.perf_counter() - started
    report = {**run.report, "run": {"wall_s": round(wall, 1)}}
    title = f"HPO knowledge base, {candidates} candidate diseases"
    settings = {**report["settings"], "wall time (s)": round(wall, 1)}
    write_report(out, report, title=title, settings=settings, plots=plots)
    typer.echo(_summary(run, wall))
    typer.echo(f"report: {out / 'report.md'}")


def _summary(run: KbRun, wall: float) -> str:
    report = run.report
    config = run.config
    lines = [
        f"{config.games} test games, {config.calibration_games} calibration games, alpha "
        f"{config.alpha}, budget {config.max_questions}, {len(run.world.labels)} diseases, "
        f"{len(run.world.terms)} terms, objective {config.objective}, {wall:.1f}s",
        f"{'policy':<12} {'success':>8} {'questions':>9} {'coverage':>9} {'set':>6}",
    ]
    for policy, summary in report["policies"].items():
        f = summary["final"]
        lines.append(
            f"{policy:<12} {f['accuracy']:>8.3f} {f['mean_questions']:>9.2f} "
            f"{f['coverage']:>9.3f} {f['mean_set_size']:>6.2f}"
        )
    a = run.all_terms
    lines.append(
        f"{'all terms':<12} {a['accuracy']:>8.3f} {a['questions']:>9d} "
        f"{a['coverage']:>9.3f} {a['mean_set_size']:>6.2f}"
    )
    return "\n".join(lines)


def cases(
    kb: str = KB_OPTION,
    count: int = typer.Option(500, "--cases", help="Cases to write."),
    worlds: int = typer.Option(
        20, "--worlds", help="Differentials, world seeds --world-seed onward; case i takes i % W."
    ),
    candidates: int = typer.Option(15, "--candidates", "-K", help="Diseases per differential."),
    world_seed: int = typer.Option(0, "--world-seed", help="Seed of the first differential."),
    seed: int = typer.Option(0, "--seed", help="Seed of the true diseases and the patients."),
    source: str = SOURCE_OPTION,
    max_terms: int = typer.Option(
        300, "--max-terms", help="Questions per differential (the HPO provider asks from 300)."
    ),
    ancestor_rate: float = ANCESTOR_RATE_OPTION,
    false_positive: float = FALSE_POSITIVE_OPTION,
    unsure_rate: float = UNSURE_RATE_OPTION,
    out: Path = typer.Option(..., "--out", help="The MediQ-format JSONL file to write."),
) -> None:
    """Write labelled HPO cases for `pursuit calibrate --patient kb`; the file on the last line."""
    if kb != "hpo":
        raise typer.BadParameter(f"kb must be hpo, got {kb!r}")
    try:
        world = WorldConfig(
            candidates=candidates, seed=world_seed, source=source, max_terms=max_terms
        )
        patient = PatientConfig(
            ancestor_rate=ancestor_rate, false_positive=false_positive, unsure_rate=unsure_rate
        )
        records = kb_cases(
            load_hpo(), cases=count, worlds=worlds, world=world, patient=patient, seed=seed
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        try:  # whole or nothing: renamed when done, removed on any failure
            with partial.open("w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record) + "\n")
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    except (PursuitError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{count} cases over {worlds} differentials of {candidates} diseases")
    typer.echo(str(out))


def register(cli: typer.Typer) -> None:
    """Add ``bench-kb`` and ``kb-cases`` to ``cli``."""
    cli.command("bench-kb")(bench_kb)
    cli.command("kb-cases")(cases)
