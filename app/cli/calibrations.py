"""``pursuit calibrate``, ``pursuit worker`` and ``pursuit bench`` (MediQ).

The LLM is the serving one: ``PURSUIT_LLM_BASE_URL`` / ``PURSUIT_LLM_MODEL`` when set, else
the local server of ``pursuit llm up`` when it is healthy. The provider is built exactly as
the API builds it (``Resources.open``), so model and prompt version match what serving
looks up.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.calibrations.executor import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_LEASE_TIMEOUT_S,
    claim_run,
    execute_run,
)
from app.calibrations.repository import CalibrationRepository
from app.calibrations.service import create_run, prepare_spec
from app.calibrations.spec import PatientKind, RunSpec
from app.calibrations.transfer import export_calibration, import_calibration
from app.cli.policy_options import policy_options
from app.conformal.rank import min_calibration_size, per_step_alpha
from app.datasets import SplitFractions
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade_head
from app.db.models import Calibration
from app.db.status import CalibrationStatus
from app.engine.policy import DEFAULT_MAX_QUESTIONS
from app.errors import NO_LLM_SERVER, PursuitError
from app.logging import configure_logging
from app.research.mediq import BenchSpec, resolve_policies, run_bench
from app.settings import Settings, get_settings
from app.worker import run_worker
from app.worker.providers import open_run_provider

__all__ = ["bench", "calibrate", "register", "run_warnings", "worker"]

_T = TypeVar("_T")


calibrations_app = typer.Typer(help="Calibration runs as files: export and import.")

# Measured: the demo calibration (50 cases, T = 5, 4 x 2 a turn, retrieval patient: 2,300
# scored prompts) took 1,842 s on SmolLM2-135M, bfloat16, 2 cores shared with other work,
# --concurrency 4: 0.8 s a prompt. Another model or machine differs; the progress bar's own
# rate takes over once cases finish.
SECONDS_PER_PROMPT_DEMO = 0.8


def register(cli: typer.Typer) -> None:
    """Add ``calibrate``, ``worker``, ``bench`` and ``calibrations`` to ``pursuit``."""
    cli.command("calibrate")(calibrate)
    cli.command("worker")(worker)
    cli.command("bench")(bench)
    cli.add_typer(calibrations_app, name="calibrations")


def run_warnings(spec: RunSpec) -> list[str]:
    """What ``pursuit calibrate`` says before it starts: too few cases, and how long."""
    alpha = per_step_alpha(spec.alpha, steps=spec.max_questions + 1, anytime=spec.anytime)
    needed = min_calibration_size(alpha)
    lines = []
    if spec.cases < needed:
        lines.append(
            f"warning: {spec.cases} cases give no finite threshold at alpha {float(alpha):.4g} "
            f"(at least {needed} are needed): every set will be the full list, which covers "
            "trivially and says nothing"
        )
    elif spec.cases < 5 * needed:
        lines.append(
            f"warning: {spec.cases} cases are few for alpha {float(alpha):.4g}: the threshold "
            "is one of few scores, so sets come out wide and coverage well above target"
        )
    prompts = spec.cases * (
        spec.max_questions
        + 1
        + spec.max_questions * spec.question.n_candidate_questions * spec.question.n_answers
    )
    minutes = prompts * SECONDS_PER_PROMPT_DEMO / 60
    lines.append(
        f"expected: about {prompts:,} scored prompts, about {minutes:.0f} min with the local "
        "demo model on 2 CPU cores (a GPU vLLM is far faster)"
    )
    return lines


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(verbose: bool) -> Settings:
    """Settings with the LLM filled in from the local server when not configured (the HPO
    provider needs none)."""
    settings = get_settings()
    configure_logging(level="INFO" if verbose else "WARNING", json=settings.log_json)
    if settings.is_embedded_database:
        upgrade_head(settings.effective_database_url)
    if not settings.needs_llm_server:
        return settings
    from app.tooling import local_llm  # the local-server helper is only needed here

    resolved = local_llm.configured_or_local(settings, echo=typer.echo)
    if resolved is not None:
        return resolved
    raise _fail(NO_LLM_SERVER)


def _progress_bar(desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """(update(done, total), close): the bar starts at the first ``done`` (resumed work)."""
    from tqdm import tqdm

    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=total,
                    initial=done,
                    desc=desc,
                    unit="case",
                    file=sys.stderr,
                    mininterval=1.0,
                    smoothing=0.1,
                )
            )
        bar = bars[0]
        bar.total = total
        bar.update(done - bar.n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


@policy_options()
def calibrate(
    dataset: Path | None = typer.Option(None, "--dataset", help="MediQ-format JSONL file."),
    purpose: str = typer.Option(
        "display",
        "--purpose",
        help="display (the shown sets' thresholds, for interviews asked by --policy) | "
        "selection (thresholds inside C-IP's objective, from interviews asking the "
        "--question-bank-name bank's questions in random order: steps 0..T+1, any --policy "
        "ignored)",
    ),
    max_questions: int = typer.Option(
        DEFAULT_MAX_QUESTIONS, "--max-questions", help="Calibrate steps 0..T."
    ),
    cases: int = typer.Option(100, "--cases", help="Calibration cases (first N of the split)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits and of the policy."),
    group_by: str | None = typer.Option(
        None, "--group-by", help="'specialty': also Mondrian thresholds per specialty."
    ),
    anytime: bool = typer.Option(False, "--anytime", help="Spend alpha/(T+1) per step."),
    name: str | None = typer.Option(None, "--name", help="A label for people."),
    activate: bool = typer.Option(False, "--activate", help="Serve it when it succeeds."),
    patient: str = typer.Option(
        "llm",
        "--patient",
        help="llm (MediQ's fact-select) | retrieval (nearest fact, cheap) | kb (the answer "
        "lines of `pursuit kb-cases` files, for PURSUIT_PROVIDER=hpo)",
    ),
    specialty: str | None = typer.Option(None, "--specialty", help="Only this specialty."),
    stratify: bool = typer.Option(
        True, "--stratify/--no-stratify", help="Stratify the splits by specialty."
    ),
    concurrency: int = typer.Option(4, "--concurrency", help="Cases interviewed at once."),
    resume: uuid.UUID | None = typer.Option(
        None, "--resume", help="Resume this run (its finished cases are not redone)."
    ),
    lease_timeout: float = typer.Option(
        DEFAULT_LEASE_TIMEOUT_S, "--lease-timeout", help="Seconds before a silent run is dead."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Log at INFO (JSON on stderr)."),
    question_fields: dict[str, Any] | None = None,
) -> None:
    """Calibrate per-step thresholds on MediQ cases; prints the run id on the last line."""
    if resume is None and dataset is None:
        raise _fail("give --dataset PATH (or --resume ID)", 2)
    if dataset is not None and not dataset.is_file():
        raise _fail(f"no dataset file {dataset}", 2)
    settings = _settings(verbose)
    fields: dict[str, Any] = {
        **(question_fields or {}),
        "purpose": purpose,
        "max_questions": max_questions,
        "cases": cases,
        "seed": seed,
        "group_by": group_by,
        "anytime": anytime,
        "patient": patient,
        "specialty": specialty,
        "stratify": "specialty" if stratify else None,
        "fractions": SplitFractions(),
        "concurrency": concurrency,
    }
    try:
        asyncio.run(
            _calibrate(
                settings,
                dataset=dataset,
                fields=fields,
                name=name,
                activate=activate,
                resume=resume,
                lease_timeout=lease_timeout,
            )
        )
    except (PursuitError, ValueError) as exc:
        raise _fail(getattr(exc, "detail", str(exc))) from None


async def _calibrate(
    settings: Settings,
    *,
    dataset: Path | None,
    fields: dict[str, Any],
    name: str | None,
    activate: bool,
    resume: uuid.UUID | None,
    lease_timeout: float,
) -> None:
    resources, provider, patient = open_run_provider(settings)
    try:
        sessionmaker = resources.sessionmaker
        if resume is None:
            assert dataset is not None
            spec, extra = await asyncio.to_thread(prepare_spec, dataset, **fields)
            for problem in extra["dataset_problems"]:
                typer.echo(f"skipped {dataset} line {problem['line']}: {problem['message']}")
            for line in run_warnings(spec):
                typer.echo(line, err=line.startswith("warning"))
            row = await create_run(
                sessionmaker,
                spec=spec,
                info=provider.info,
                name=name,
                activate=activate,
                extra_params=extra,
            )
            calibration_id = row.id
            typer.echo(
                f"calibration {calibration_id}: {spec.policy.value}, alpha {spec.alpha}, "
                f"T={spec.max_questions}, {spec.cases} cases, model {provider.info.model}, "
                f"prompt {provider.info.prompt_version}"
            )
        else:
            calibration_id = resume
        worker = f"cli:{socket.gethostname()}:{os.getpid()}"
        token = await claim_run(
            sessionmaker, calibration_id, worker=worker, lease_timeout_s=lease_timeout
        )
        update, close = _progress_bar("calibrate")
        started = time.perf_counter()
        try:
            outcome = await execute_run(
                sessionmaker,
                calibration_id,
                token,
                provider=provider,
                patient=patient,
                heartbeat_s=min(DEFAULT_HEARTBEAT_S, max(lease_timeout / 3, 0.5)),
                lease_timeout_s=lease_timeout,
                worker=worker,
                progress=update,
            )
        finally:
            close()
        wall = time.perf_counter() - started
        async with sessionmaker() as db:
            final = await CalibrationRepository(db).get(calibration_id)
        assert final is not None
        if outcome.status != CalibrationStatus.SUCCEEDED or final.result is None:
            raise _fail(
                f"calibration {calibration_id} {outcome.status}: {outcome.error or ''} "
                f"(resume with --resume {calibration_id})"
            )
        result = final.result
        typer.echo(
            f"{outcome.computed_cases} cases computed, {outcome.skipped_cases} resumed, "
            f"{wall:.1f} s ({60 * outcome.computed_cases / wall if wall else 0:.1f} cases/min)"
        )
        for k, (tau, n) in enumerate(zip(result["thresholds"], result["n_per_step"], strict=True)):
            shown = "inf (too few cases: full set)" if tau is None else f"{tau:.6f}"
            typer.echo(f"  step {k}: n={n} tau={shown}")
        typer.echo(f"active: {final.active}")
        typer.echo(str(calibration_id))
    finally:
        await resources.close()


def worker(
    once: bool = typer.Option(False, "--once", help="Exit when nothing is left to claim."),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between looks for work."),
    lease_timeout: float = typer.Option(
        DEFAULT_LEASE_TIMEOUT_S, "--lease-timeout", help="Seconds before a silent run is dead."
    ),
    heartbeat: float = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat", help="Seconds."),
    verbose: bool = typer.Option(True, "--verbose/--quiet", help="Log at INFO."),
) -> None:
    """Execute queued calibration runs (POST /v1/calibrations) for the configured model."""
    settings = _settings(verbose)
    try:
        asyncio.run(
            run_worker(
                settings,
                once=once,
                poll_s=poll,
                lease_timeout_s=lease_timeout,
                heartbeat_s=heartbeat,
            )
        )
    except PursuitError as exc:
        raise _fail(exc.detail) from None


@policy_options(skip=("policy",))
def bench(
    dataset: Path = typer.Option(..., "--dataset", help="MediQ JSONL: its test split is used."),
    calibration: list[str] = typer.Option(
        [], "--calibration", help="Stored calibration id (repeat: one per policy)."
    ),
    calibrate_on: Path | None = typer.Option(
        None, "--calibrate-on", help="Calibrate in-process on this file's calibration split."
    ),
    policies: str = typer.Option(
        "cip,ip,random,none,all-facts", "--policies", help="Comma list of policies."
    ),
    max_questions: int = typer.Option(3, "--max-questions"),
    cases: int = typer.Option(30, "--cases", help="Test cases."),
    calibration_cases: int = typer.Option(
        60, "--calibration-cases", help="Calibration cases (with --calibrate-on)."
    ),
    seed: int = typer.Option(0, "--seed"),
    anytime: bool = typer.Option(False, "--anytime"),
    patient: str = typer.Option("llm", "--patient", help="llm | retrieval | kb"),
    specialty: str | None = typer.Option(None, "--specialty"),
    stratify: bool = typer.Option(True, "--stratify/--no-stratify"),
    concurrency: int = typer.Option(4, "--concurrency"),
    protocol: str = typer.Option(
        "default",
        "--protocol",
        help="default | paper: the official code's MediQ runs (each case's own facts as its "
        "candidate questions, 12 estimation cases drawn per step answering every candidate, "
        "objective entropy_bound, budget min(#facts, 10), no early stop; overrides "
        "--answer-source, --n-answers, --objective and --max-questions; C-IP's selection "
        "thresholds from random fact-questions of as many cases from the calibration "
        "split's end)",
    ),
    out: Path = typer.Option(Path("var/bench-mediq"), "--out", help="Report directory."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard the finished cases in --out."),
    verbose: bool = typer.Option(False, "--verbose"),
    question_fields: dict[str, Any] | None = None,
) -> None:
    """C-IP vs baselines on MediQ test cases: OUT/report.json, report.md and plots."""
    settings = _settings(verbose)
    try:
        spec = BenchSpec.create(
            **(question_fields or {}),
            dataset=dataset,
            policies=resolve_policies(policies),
            max_questions=max_questions,
            cases=cases,
            calibration_cases=calibration_cases,
            seed=seed,
            anytime=anytime,
            patient=PatientKind(patient),
            specialty=specialty,
            stratify=stratify,
            calibrate_on=calibrate_on,
            calibration_ids=tuple(uuid.UUID(c) for c in calibration),
            protocol=protocol,
        )
        report = asyncio.run(_bench(settings, spec, out=out, fresh=fresh))
    except (PursuitError, ValueError) as exc:
        raise _fail(getattr(exc, "detail", str(exc))) from None
    from app.research.report import write_report

    write_report(
        out,
        report,
        # kb cases are MediQ-format files of simulated knowledge-base patients, not iMedQA.
        title="Knowledge-base (kb) case interviews"
        if spec.patient is PatientKind.KB
        else "MediQ (iMedQA) interviews",
        settings={
            **{k: v for k, v in spec.settings().items() if k not in ("policies", "test_cases")},
            "wall time (s)": report["wall_seconds"],
            "interviews per minute": report["interviews_per_minute"],
            "stop rule": spec.stop_rule,
        },
    )
    typer.echo(_summary(report))
    typer.echo(str(out / "report.json"))


async def _bench(settings: Settings, spec: BenchSpec, *, out: Path, fresh: bool) -> dict[str, Any]:
    resources, provider, patient = open_run_provider(settings)
    try:
        update, close = _progress_bar("bench")
        done = 0

        def progress(total: int, already: int) -> Callable[[int], None]:
            nonlocal done
            done = already
            update(done, total)

            def tick(n: int) -> None:
                nonlocal done
                done += n
                update(done, total)

            return tick

        try:
            return await run_bench(
                spec,
                provider=provider,
                patient=patient,
                out_dir=out,
                sessionmaker=resources.sessionmaker if spec.calibration_ids else None,
                fresh=fresh,
                progress=progress,
                echo=typer.echo,
            )
        finally:
            close()
    finally:
        await resources.close()


def _summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['cases']} test cases, alpha {report['alpha']}, model {report['model']}, "
        f"{report['wall_seconds']} s",
        f"{'policy':<10} {'accuracy':>8} {'coverage':>9} {'set':>6} {'questions':>9}",
    ]
    for policy, summary in report["policies"].items():
        f = summary["final"]
        lines.append(
            f"{policy:<10} {f['accuracy']:>8.3f} {f['coverage']:>9.3f} "
            f"{f['mean_set_size']:>6.2f} {f['mean_questions']:>9.2f}"
        )
    return "\n".join(lines)


@calibrations_app.command("export")
def calibrations_export(
    calibration_id: uuid.UUID,
    out: Path = typer.Option(..., "--out", help="The JSON file to write."),
    note: str | None = typer.Option(None, "--note", help="How it was made, for people."),
) -> None:
    """Write a succeeded run as a file (its model, prompts, policy and per-step result; no
    case text, key ids or server paths)."""

    async def export(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        made_with = {"note": note} if note else {}
        return await export_calibration(sessionmaker, calibration_id, made_with=made_with)

    try:
        data = asyncio.run(_with_database(export))
    except PursuitError as exc:
        raise _fail(exc.detail) from None
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    typer.echo(str(out))


@calibrations_app.command("import")
def calibrations_import(
    path: Path,
    activate: bool = typer.Option(False, "--activate", help="Serve it (the platform's)."),
) -> None:
    """Add an exported run to this database as the platform's (the same file twice: once)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {path}: {type(exc).__name__}") from None

    async def add(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[Calibration, bool]:
        return await import_calibration(sessionmaker, data, activate=activate)

    try:
        row, inserted = asyncio.run(_with_database(add))
    except PursuitError as exc:
        raise _fail(exc.detail) from None
    typer.echo(f"{'imported' if inserted else 'already there'}; active: {row.active}")
    typer.echo(str(row.id))


async def _with_database(fn: Callable[[async_sessionmaker[AsyncSession]], Awaitable[_T]]) -> _T:
    """Run ``fn`` on the configured database (the embedded SQLite file migrated first)."""
    settings = get_settings()
    if settings.is_embedded_database:
        await asyncio.to_thread(upgrade_head, settings.effective_database_url)
    engine = create_engine(settings.effective_database_url)
    try:
        return await fn(create_sessionmaker(engine))
    finally:
        await engine.dispose()
