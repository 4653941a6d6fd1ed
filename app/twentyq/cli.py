"""``pursuit bench20q``: the 20 Questions benchmark from the command line.

The lead wires it with ``register(cli)`` (and, once the LLM gateway can serve it,
``register(cli, llm_factory=...)`` with a ``(game, temperature) -> PosteriorProvider``).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from app.bench import write_report, write_sweep_report
from app.errors import InvalidInputError
from app.tabular import DEFAULT_EPS
from app.twentyq.bench import (
    BenchConfig,
    ProviderFactory,
    RunResult,
    run_bench_sync,
    tabular_factory,
)
from app.twentyq.simulate import BenchPolicy

__all__ = ["LLM_NOT_WIRED", "bench20q", "register"]

LLM_NOT_WIRED = (
    "the LLM provider for bench20q needs a running vLLM server (pursuit llm up); see "
    "`pursuit llm --help`, and app/twentyq/cli.py: the command line must be wired with "
    "register(cli, llm_factory=...) before --provider llm can run"
)

_llm_factory: ProviderFactory | None = None


def _floats(values: list[str]) -> tuple[float, ...]:
    out: list[float] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                out.append(float(part))
    return tuple(out)


def _policies(value: str) -> tuple[BenchPolicy, ...]:
    names = [p.strip() for p in value.split(",") if p.strip()]
    known = ", ".join(p.value for p in BenchPolicy)
    try:
        return tuple(BenchPolicy(p) for p in names)
    except ValueError:
        raise typer.BadParameter(f"policies must be among {known}, got {value!r}") from None


def bench20q(
    provider: str = typer.Option("tabular", "--provider", help="tabular | llm"),
    temperature: list[str] = typer.Option(
        ["1"],
        "--temperature",
        "-T",
        help="Posterior temperature; repeat or comma-separate for a sweep (0.25,0.5,1,2,4).",
    ),
    policies: str = typer.Option(
        "cip,ip,random",
        "--policies",
        help="Comma list of cip (calibrated sets in the objective), cip-nominal, ip, random.",
    ),
    alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage level."),
    max_questions: int = typer.Option(20, "--max-questions", help="Question budget T."),
    games: int = typer.Option(2000, "--games", help="Test games per policy and temperature."),
    calibration_games: int = typer.Option(
        1000, "--calibration-games", help="Calibration games per policy and temperature."
    ),
    selection_games: int | None = typer.Option(
        None,
        "--selection-games",
        help="Pilot games for C-IP's selection thresholds (default: --calibration-games).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every split's games."),
    animals: int = typer.Option(20, "--animals", help="20 (the paper's) or 50."),
    noise: float = typer.Option(0.05, "--noise", help="Probability the player flips an answer."),
    anytime: bool = typer.Option(
        False, "--anytime/--no-anytime", help="Calibrate at alpha/(T+1) per step."
    ),
    eps: float = typer.Option(DEFAULT_EPS, "--eps", help="Clip P(yes | animal) to eps..1-eps."),
    backend: str = typer.Option(
        "auto", "--backend", help="auto | fast (tabular batch replica) | engine (run_interview)."
    ),
    out: Path = typer.Option(Path("var/bench20q"), "--out", help="Report directory."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
) -> None:
    """Calibrate and test C-IP, IP and random on 20 Questions; write report.json/md and plots."""
    if provider == "tabular":
        factory: ProviderFactory = tabular_factory
    elif provider == "llm":
        if _llm_factory is None:
            typer.echo(f"error: {LLM_NOT_WIRED}", err=True)
            raise typer.Exit(2)
        factory = _llm_factory
    else:
        raise typer.BadParameter(f"provider must be tabular or llm, got {provider!r}")
    try:
        config = BenchConfig(
            animals=animals,
            alpha=alpha,
            max_questions=max_questions,
            games=games,
            calibration_games=calibration_games,
            selection_games=selection_games,
            seed=seed,
            noise=noise,
            anytime=anytime,
            eps=eps,
            policies=_policies(policies),
            temperatures=_floats(temperature),
            backend=backend,
        )
        started = time.perf_counter()
        results = run_bench_sync(config, provider_factory=factory, log=typer.echo)
    except (InvalidInputError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from exc
    wall = time.perf_counter() - started
    _write(out, config, results, wall, plots=plots)
    typer.echo(_summary(config, results, wall))
    typer.echo(f"report: {out / 'report.md'}")


def _write(
    out: Path, config: BenchConfig, results: list[RunResult], wall: float, *, plots: bool
) -> None:
    settings = {
        **config.settings(),
        "backend": config.backend,
        "wall time (s)": round(wall, 1),
        "stop rule": "singleton set under tau_k, budget, no gain (cip/ip)",
    }
    title = f"20 Questions, {config.animals} animals"
    reports = [r.report(config) for r in results]
    if len(reports) == 1:
        write_report(out, reports[0], title=title, settings=settings, plots=plots)
    else:
        write_sweep_report(
            out, reports, sweep_key="temperature", title=title, settings=settings, plots=plots
        )


def _summary(config: BenchConfig, results: list[RunResult], wall: float) -> str:
    lines = [
        f"{config.games} test games, {config.calibration_games} calibration games, "
        f"alpha {config.alpha}, budget {config.max_questions}, noise {config.noise}, "
        f"{config.animals} animals, {wall:.1f}s",
        f"{'T':>6} {'policy':<12} {'success':>8} {'questions':>9} {'coverage':>9} {'set':>6}",
    ]
    for result in results:
        report = result.report(config)
        for policy, summary in report["policies"].items():
            f = summary["final"]
            lines.append(
                f"{result.temperature:>6g} {policy:<12} {f['accuracy']:>8.3f} "
                f"{f['mean_questions']:>9.2f} {f['coverage']:>9.3f} {f['mean_set_size']:>6.2f}"
            )
    return "\n".join(lines)


def register(cli: typer.Typer, *, llm_factory: ProviderFactory | None = None) -> None:
    """Add ``bench20q`` to ``cli``; ``llm_factory`` enables ``--provider llm``."""
    global _llm_factory
    if llm_factory is not None:
        _llm_factory = llm_factory
    cli.command("bench20q")(bench20q)
