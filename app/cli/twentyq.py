"""``pursuit bench20q``: the 20 Questions benchmark from the command line.

``register(cli)`` adds the command. ``--provider tabular`` is the game's own table;
``--provider llm`` asks the configured vLLM server through the gateway
(``app.research.twentyq.llm``): ``PURSUIT_LLM_BASE_URL`` / ``PURSUIT_LLM_MODEL`` when set, else the
local server of ``pursuit llm up`` when it is healthy. ``register(cli, llm_factory=...)``
replaces that server with any ``(game, temperature) -> PosteriorProvider`` (tests).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from app.errors import (
    InvalidInputError,
    PursuitError,
    UpstreamBadOutputError,
    UpstreamUnavailableError,
    no_llm_server,
)
from app.logging import configure_logging
from app.research.report import PER_LABEL_FLAG, write_report, write_sweep_report
from app.research.twentyq.bench import (
    PAPER_PROTOCOL,
    BenchConfig,
    ProviderFactory,
    RunResult,
    run_bench,
    run_bench_sync,
    tabular_factory,
)
from app.research.twentyq.llm import (
    DEFAULT_ANSWER_PERMUTATIONS,
    LLMFactory,
    PromptCounts,
    check_llm_labels,
    with_llm,
)
from app.research.twentyq.simulate import BenchPolicy
from app.settings import Settings, get_settings
from app.worlds.tabular import DEFAULT_EPS, Miscalibration, Mode, parse_miscalibration

__all__ = ["NO_LLM", "bench20q", "register"]

NO_LLM = no_llm_server(needed_for="--provider llm")

_UPSTREAM = (UpstreamUnavailableError, UpstreamBadOutputError)

_llm_factory: ProviderFactory | None = None


def _floats(values: list[str]) -> tuple[float, ...]:
    out: list[float] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                out.append(float(part))
    return tuple(out)


def parse_policies(value: str) -> tuple[BenchPolicy, ...]:
    """``--policies`` of the tabular benches (bench20q, bench-kb): a usage error names the
    known ones."""
    names = [p.strip() for p in value.split(",") if p.strip()]
    known = ", ".join(p.value for p in BenchPolicy)
    try:
        return tuple(BenchPolicy(p) for p in names)
    except ValueError:
        raise typer.BadParameter(f"policies must be among {known}, got {value!r}") from None


_MODES = ", ".join(mode.value for mode in Mode)


def _miscalibrations(values: list[str]) -> list[str]:
    """Check every ``--miscalibration NAME=STRENGTH`` at parse time (a usage error)."""
    for value in values:
        try:
            parse_miscalibration(value)
        except InvalidInputError as exc:
            raise typer.BadParameter(exc.detail) from None
    return values


def bench20q(
    provider: str = typer.Option("tabular", "--provider", help="tabular | llm"),
    temperature: list[str] = typer.Option(
        ["1"],
        "--temperature",
        "-T",
        help="Posterior temperature; repeat or comma-separate for a sweep (0.25,0.5,1,2,4).",
    ),
    miscalibration: list[str] = typer.Option(
        [],
        "--miscalibration",
        help="Tabular only: a world miscalibrated on purpose, NAME=STRENGTH (or NAME=S1,S2,...); "
        "repeat for a sweep, each world at every -T. NAME: "
        + _MODES
        + " (app.worlds.tabular.miscalibration). Reports go to OUT/<name>/strength=<s>/.",
        callback=_miscalibrations,
    ),
    policies: str = typer.Option(
        "cip,ip,random",
        "--policies",
        help="Comma list of cip (calibrated sets in the objective, selection thresholds from "
        "random-question histories), cip-nominal (the model's nominal sets), ip, random.",
    ),
    protocol: str = typer.Option(
        "default",
        "--protocol",
        help="default | paper: the C-IP paper's 20Q protocol (whole bank every turn, budget "
        "20, no early stop, --answer-source sampled with 4 labels per step, --objective "
        "entropy_bound, alpha 0.1). Under paper, a flag that contradicts it is an error.",
    ),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="C-IP objective: set_size (expected |C_{k+1}|, default) | entropy_bound (the "
        "paper's bound; default under --protocol paper).",
    ),
    answer_source: str | None = typer.Option(
        None,
        "--answer-source",
        help="Answers that score a candidate (C-IP and IP alike): llm (the model's own "
        "yes/no distribution, default) | sampled (per step M labels drawn uniformly, shared "
        "by every candidate, answered like the player; default under --protocol paper).",
    ),
    answers: int | None = typer.Option(
        None, "--answers", help="M, labels drawn per step for --answer-source sampled (4)."
    ),
    early_stop: bool | None = typer.Option(
        None,
        "--early-stop/--no-early-stop",
        help="Serving stops (singleton set, no gain) on top of the budget "
        "(default on; off under --protocol paper).",
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Miscoverage level (0.1)."),
    max_questions: int | None = typer.Option(
        None, "--max-questions", help="Question budget T (20)."
    ),
    games: int = typer.Option(2000, "--games", help="Test games per policy and temperature."),
    calibration_games: int = typer.Option(
        1000, "--calibration-games", help="Calibration games per policy and temperature."
    ),
    selection_games: int | None = typer.Option(
        None,
        "--selection-games",
        help="Random-question histories per length for cip's selection thresholds "
        "(default: --calibration-games).",
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
    candidates: int | None = typer.Option(
        None,
        "--candidates",
        "-K",
        help="C-IP/IP score K random unasked bank questions per turn (seeded per game); "
        "default: the whole bank. Needs the engine backend (chosen by auto).",
    ),
    concurrency: int = typer.Option(8, "--concurrency", help="Games played at once (engine)."),
    permutations: int | None = typer.Option(
        None,
        "--permutations",
        help="LLM: cyclic option orders averaged per label posterior "
        "(default PURSUIT_LLM_PERMUTATIONS, 1).",
    ),
    answer_permutations: int = typer.Option(
        DEFAULT_ANSWER_PERMUTATIONS,
        "--answer-permutations",
        help="LLM: option orders (1 or 2) averaged when it predicts a yes/no answer.",
    ),
    out: Path = typer.Option(Path("var/bench20q"), "--out", help="Report directory."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
) -> None:
    """Calibrate and test C-IP, IP and random on 20 Questions; write report.json/md and plots.

    With --provider llm, --temperature tempers the LLM's label distribution (p ** (1/T)).
    Reports give accuracy and coverage at every budget 0..T, paired over the same test games,
    with each policy's difference against ip and random and its 95% interval (by_budget).
    """
    if provider not in ("tabular", "llm"):
        raise typer.BadParameter(f"provider must be tabular or llm, got {provider!r}")
    try:
        chosen = _protocol_settings(
            protocol,
            alpha=alpha,
            max_questions=max_questions,
            objective=objective,
            answer_source=answer_source,
            n_answers=answers,
            candidates=candidates,
            early_stop=early_stop,
        )
        config = BenchConfig(
            animals=animals,
            protocol=protocol,
            **chosen,
            games=games,
            calibration_games=calibration_games,
            selection_games=selection_games,
            seed=seed,
            noise=noise,
            anytime=anytime,
            eps=eps,
            policies=parse_policies(policies),
            temperatures=_floats(temperature),
            backend=backend,
            concurrency=concurrency,
            miscalibrations=tuple(m for v in miscalibration for m in parse_miscalibration(v)),
        )
        if provider == "llm" and config.miscalibrations:
            raise InvalidInputError("--miscalibration needs --provider tabular")
        if provider == "llm":
            check_llm_labels(config.animals)
    except (PursuitError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from exc
    started = time.perf_counter()
    extra: dict[str, Any] = {"provider": provider}
    try:
        if provider == "tabular":
            results = run_bench_sync(config, provider_factory=tabular_factory, log=typer.echo)
        elif _llm_factory is not None:
            results = run_bench_sync(config, provider_factory=_llm_factory, log=typer.echo)
        else:
            settings = _llm_settings()
            extra["llm"] = f"{settings.llm_model} at {settings.llm_base_url}"
            extra["answer permutations"] = answer_permutations
            prompts: dict[str, dict[str, int]] = {}
            extra["llm prompts"] = prompts

            async def run(factory: LLMFactory) -> list[RunResult]:
                log = _counting_log(factory.counts, prompts)
                return await run_bench(config, provider_factory=factory, log=log)

            results = asyncio.run(
                with_llm(
                    settings,
                    run,
                    permutations=permutations,
                    answer_permutations=answer_permutations,
                )
            )
    except (PursuitError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        # Bad settings are usage errors; an LLM server that fails is not.
        raise typer.Exit(1 if isinstance(exc, _UPSTREAM) else 2) from exc
    wall = time.perf_counter() - started
    _write(out, config, results, wall, plots=plots, extra=extra)
    typer.echo(_summary(config, results, wall))
    typer.echo(f"report: {out / 'report.md'}")


_DEFAULTS: dict[str, Any] = {
    "alpha": 0.1,
    "max_questions": 20,
    "objective": "set_size",
    "answer_source": "llm",
    "n_answers": 4,
    "candidates": None,
    "early_stop": True,
}


def _protocol_settings(protocol: str, **given: Any) -> dict[str, Any]:
    """BenchConfig fields from the flags given (None: not given) and the protocol's defaults.

    ``paper`` fixes ``PAPER_PROTOCOL``; a flag given with another value is an error rather
    than a silent override, so a report that says "paper" is the paper's protocol.
    """
    if protocol not in ("default", "paper"):
        raise InvalidInputError(f"protocol must be default or paper, got {protocol!r}")
    if protocol == "default":
        return {k: _DEFAULTS[k] if v is None else v for k, v in given.items()}
    conflicts = [
        f"{k}={v} (paper: {PAPER_PROTOCOL[k]})"
        for k, v in given.items()
        if v is not None and v != PAPER_PROTOCOL[k]
    ]
    if conflicts:
        raise InvalidInputError("--protocol paper fixes " + "; ".join(conflicts))
    return dict(PAPER_PROTOCOL)


def _counting_log(
    counts: PromptCounts, per_run: dict[str, dict[str, int]]
) -> Callable[[str], None]:
    """``typer.echo`` that adds the prompts scored since its last line (one per policy)."""
    last = PromptCounts()

    def log(line: str) -> None:
        scored, cached = counts.scored - last.scored, counts.cached - last.cached
        last.scored, last.cached = counts.scored, counts.cached
        per_run[line.split(":")[0]] = {"scored": scored, "cached": cached}
        typer.echo(f"{line}; LLM prompts: {scored} scored, {cached} from the cache")

    return log


def _llm_settings() -> Settings:
    """The configured LLM server, else the local one when it is healthy."""
    settings = get_settings()
    # The gateway logs one line per request at INFO; keep the command's output readable.
    configure_logging(level="WARNING", json=settings.log_json)
    from app.tooling import local_llm  # the local-server helper is only needed here

    resolved = local_llm.configured_or_local(settings, echo=typer.echo)
    if resolved is not None:
        return resolved
    typer.echo(f"error: {NO_LLM}", err=True)
    raise typer.Exit(2)


def _write(
    out: Path,
    config: BenchConfig,
    results: list[RunResult],
    wall: float,
    *,
    plots: bool,
    extra: dict[str, Any],
) -> None:
    run = {**extra, "backend": config.backend, "wall_s": round(wall, 1)}
    prompts = extra.get("llm prompts", {})
    settings = {
        **config.settings(),
        **{k: v for k, v in extra.items() if k != "llm prompts"},
        "backend": config.backend,
        "wall time (s)": round(wall, 1),
        "stop rule": (
            "singleton set under tau_k, budget, no gain (cip/ip)"
            if config.early_stop
            else "budget only (no early stop)"
        ),
    }
    if prompts:
        settings["llm prompts (scored / from cache)"] = "; ".join(
            f"{key} {v['scored']} / {v['cached']}" for key, v in prompts.items()
        )
    title = f"20 Questions, {config.animals} animals"
    # "run": how this run was made (provider, server, backend, wall time, LLM prompt counts).
    reports = [{**r.report(config), "run": run} for r in results]
    if config.miscalibrations:
        _write_worlds(out, config, results, reports, title=title, settings=settings, plots=plots)
    elif len(reports) == 1:
        write_report(out, reports[0], title=title, settings=settings, plots=plots)
    else:
        write_sweep_report(
            out, reports, sweep_key="temperature", title=title, settings=settings, plots=plots
        )


def _world_dir(config: BenchConfig, temperature: float, miscalibration: Miscalibration) -> str:
    prefix = f"T={temperature:g}/" if len(config.temperatures) > 1 else ""
    return f"{prefix}{miscalibration.mode.value}"


def _write_worlds(
    out: Path,
    config: BenchConfig,
    results: list[RunResult],
    reports: list[dict[str, Any]],
    *,
    title: str,
    settings: dict[str, Any],
    plots: bool,
) -> None:
    """One strength sweep per (temperature, mode) under OUT/[T=t/]<mode>/, and an index.

    The index (OUT/report.json, report.md) lists every world with its directory and, per
    policy, success and coverage at the budget with the paired differences against the
    baselines (``by_budget`` at the last budget).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for result, report in zip(results, reports, strict=True):
        assert result.miscalibration is not None
        groups.setdefault(_world_dir(config, result.temperature, result.miscalibration), []).append(
            report
        )
    for directory, group in groups.items():
        write_sweep_report(
            out / directory,
            group,
            sweep_key="strength",
            title=f"{title}, {group[0]['miscalibration']['mode']} (T = {group[0]['temperature']:g})",
            settings={**settings, "miscalibration": group[0]["miscalibration"]["mode"]},
            plots=plots,
        )
    worlds = []
    for result, report in zip(results, reports, strict=True):
        assert result.miscalibration is not None
        directory = _world_dir(config, result.temperature, result.miscalibration)
        worlds.append(
            {
                "temperature": result.temperature,
                "miscalibration": report["miscalibration"],
                "model": report["model"],
                "report": f"{directory}/strength={result.miscalibration.strength:g}/report.json",
                "at_budget": _at_budget(report),
            }
        )
    index = {"settings": settings, "sweep_key": "miscalibration", "worlds": worlds}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(index, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(_worlds_markdown(index, title=title), encoding="utf-8")


def _at_budget(report: dict[str, Any]) -> dict[str, Any]:
    """Per policy: accuracy and coverage at the last budget, differences vs the baselines."""
    by_budget = report["by_budget"]
    b = by_budget["budgets"][-1]
    out: dict[str, Any] = {"budget": b}
    for policy, entry in by_budget["policies"].items():
        steps = report["policies"][policy]["steps"]
        worst = min(s.get("coverage_p_value", 1.0) for s in steps)
        labels = report["policies"][policy].get("per_label", {})
        under = sorted(
            label for label, e in labels.items() if e["steps"][-1]["p_value"] < PER_LABEL_FLAG
        )
        out[policy] = {
            "accuracy": entry["accuracy"][b],
            "accuracy_fixed_step": steps[min(b, len(steps) - 1)]["accuracy"],
            "coverage": entry["coverage"][b],
            "min_step_coverage_p_value": worst,
            "under_covered_labels_last_step": under,
            "vs": {
                base: {
                    "diff": vs["accuracy"]["diff"][b],
                    "ci": vs["accuracy"]["ci"][b],
                }
                for base, vs in entry["vs"].items()
            },
        }
    return out


def _worlds_markdown(index: dict[str, Any], *, title: str) -> str:
    lines = [f"# {title}: miscalibrated worlds", "", "## Settings", ""]
    lines += [f"- {k}: {v}" for k, v in index["settings"].items()]
    lines += [
        "",
        "## Success at the budget, per world",
        "",
        "Each case at min(its stop, budget). Differences pair the same test games (95% "
        "normal intervals). min p: the smallest per-step Beta-binomial coverage p-value. "
        f"Labels: per-label coverage at the last step with binomial p < {PER_LABEL_FLAG}.",
        "",
        "success (no stop): at the fixed last step, every game asked the whole budget.",
        "",
        "| world | T | policy | success | success (no stop) | coverage | min p | "
        "vs ip [95% CI] | vs random [95% CI] | under-covered labels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for world in index["worlds"]:
        mis = world["miscalibration"]
        name = f"{mis['mode']}={mis['strength']:g}"
        at = world["at_budget"]
        for policy, e in at.items():
            if policy == "budget":
                continue
            cells = []
            for base in ("ip", "random"):
                vs = e["vs"].get(base)
                if vs is None:
                    cells.append("-")
                else:
                    low, high = vs["ci"]
                    ci = "" if low is None else f" [{low:+.3f}, {high:+.3f}]"
                    cells.append(f"{vs['diff']:+.3f}{ci}")
            labels = ", ".join(e["under_covered_labels_last_step"]) or "-"
            lines.append(
                f"| [{name}]({world['report'].replace('.json', '.md')}) | "
                f"{world['temperature']:g} | {policy} | {e['accuracy']:.3f} | "
                f"{e['accuracy_fixed_step']:.3f} | "
                f"{e['coverage']:.3f} | {e['min_step_coverage_p_value']:.3g} | "
                f"{cells[0]} | {cells[1]} | {labels} |"
            )
    return "\n".join(lines) + "\n"


def _summary(config: BenchConfig, results: list[RunResult], wall: float) -> str:
    lines = [
        f"{config.games} test games, {config.calibration_games} calibration games, "
        f"alpha {config.alpha}, budget {config.max_questions}, noise {config.noise}, "
        f"{config.animals} animals, objective {config.objective}, answers "
        f"{config.answer_source}, protocol {config.protocol}, {wall:.1f}s",
        f"{'T':>6} {'world':<22} {'policy':<12} {'success':>8} {'questions':>9} {'coverage':>9} {'set':>6} "
        f"{'s/game':>8} {'s/question':>10}",
    ]
    for result in results:
        report = result.report(config)
        world = "-" if result.miscalibration is None else result.miscalibration.label
        for policy, summary in report["policies"].items():
            f = summary["final"]
            per_game = report["seconds_per_game"][policy]
            # Every game is played to the budget; the turn after the last question only reads
            # the posterior it already scored.
            per_turn = per_game / max(1, config.max_questions)
            lines.append(
                f"{result.temperature:>6g} {world:<22} {policy:<12} {f['accuracy']:>8.3f} "
                f"{f['mean_questions']:>9.2f} {f['coverage']:>9.3f} {f['mean_set_size']:>6.2f} "
                f"{per_game:>8.3f} {per_turn:>10.3f}"
            )
    return "\n".join(lines)


def register(cli: typer.Typer, *, llm_factory: ProviderFactory | None = None) -> None:
    """Add ``bench20q`` to ``cli``; ``llm_factory`` replaces the LLM server of ``--provider llm``."""
    global _llm_factory
    _llm_factory = llm_factory
    cli.command("bench20q")(bench20q)
