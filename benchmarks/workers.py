"""One calibration run shared by 1, 2, 4 ... ``pursuit worker`` processes, against the stub LLM.

    .venv/bin/python -m benchmarks.workers --workers 1,2,4 --cases 60 --json OUT

Everything is real but the model: the stub LLM server (``pursuit llm stub``, a fixed
latency per request), a fresh PostgreSQL database migrated to head, and N worker
processes started before the run is queued (their start-up is not timed). A run's time is
from its creation to ``succeeded``; its throughput is cases per second. ``ratios`` holds
each worker count's throughput over the 1-worker run's (goal: at least 0.9 x N).

The killed run: ``--kill-workers`` workers (default 2) start the same run; once a third of
its cases are stored, the run's owner is killed with SIGKILL. The others go on helping; after
the lease timeout one of them owns the run, claims the dead owner's cases again and computes
the thresholds. ``killed_run.exactly_once``: every case stored once (one row per case, every
claim done); ``killed_run.thresholds_equal``: thresholds and scores equal the undisturbed
1-worker run's.

The stub's outputs depend only on the prompts and the cases' rngs on (seed, case), so every
run computes the same thresholds. Machine load is shared with whatever else runs: the JSON
records the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.calibrations.repository import CalibrationRepository, CaseClaimRepository
from app.calibrations.service import create_run
from app.calibrations.spec import RunSpec
from app.datasets import load_mediq
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade_head
from app.db.models import CalibrationCase
from app.engine.types import ProviderInfo
from app.llm import prompts

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "app" / "data" / "mediq" / "imedqa_dev.jsonl"
BIN = Path(sys.executable).parent
MODEL = "pursuit-stub"


@dataclass
class Setup:
    database_url: str
    llm_url: str
    lease_timeout_s: float
    heartbeat_s: float
    log_dir: Path


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh PostgreSQL database at head: (its URL, its name)."""
    name = f"pursuit_bench_workers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade_head(url)
    return url, name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_stub(
    port: int, latency_ms: float, per_token_ms: float, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "pursuit"),
        "llm",
        "stub",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--per-token-ms",
        str(per_token_ms),
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the stub did not start; see {log}")


def start_workers(setup: Setup, n: int, tag: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PURSUIT_")},
        "PURSUIT_DATABASE_URL": setup.database_url,
        "PURSUIT_LLM_BASE_URL": setup.llm_url,
        "PURSUIT_LLM_MODEL": MODEL,
    }
    out = []
    for i in range(n):
        log = setup.log_dir / f"worker-{tag}-{i}.log"
        cmd = [
            str(BIN / "pursuit"),
            "worker",
            "--poll",
            "0.2",
            "--lease-timeout",
            str(setup.lease_timeout_s),
            "--heartbeat",
            str(setup.heartbeat_s),
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        out.append((proc, log))
    deadline = time.monotonic() + 120
    for proc, log in out:  # up and polling: start-up is not part of the run's time
        while "worker.start" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"a worker did not start; see {log}")
            time.sleep(0.1)
    return out


def stop_workers(workers: Sequence[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in workers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_spec(cases: int, dataset: Path, concurrency: int, max_questions: int) -> RunSpec:
    data = load_mediq(dataset, strict=False)  # 3 records of the bundled file lack context
    return RunSpec.create(
        dataset=str(dataset),
        dataset_hash=data.sha256,
        policy="cip",
        alpha=0.1,
        max_questions=max_questions,
        cases=cases,
        question_source="generated",
        bank=None,
        n_questions=3,
        n_answers=2,
        concurrency=concurrency,
        seed=0,
    )


INFO = ProviderInfo(model=MODEL, prompt_version=prompts.PROMPT_VERSION)


async def queue_run(database_url: str, spec: RunSpec, name: str) -> uuid.UUID:
    engine = create_engine(database_url)
    try:
        row = await create_run(
            create_sessionmaker(engine), spec=spec, info=INFO, name=name, activate=False
        )
        return row.id
    finally:
        await engine.dispose()


async def run_state(database_url: str, calibration_id: uuid.UUID) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            repo = CalibrationRepository(db)
            row = await repo.get(calibration_id)
            lease = await repo.lease(calibration_id)
            assert row is not None and lease is not None
            rows = (
                await db.execute(
                    sa.select(CalibrationCase.case_id).where(
                        CalibrationCase.calibration_id == calibration_id
                    )
                )
            ).all()
            attempts = await CaseClaimRepository(db).attempts(calibration_id)
            unfinished = await CaseClaimRepository(db).unfinished(calibration_id)
            return {
                "status": row.status,
                "error": row.error,
                "done": len(rows),
                "case_ids": [r[0] for r in rows],
                "result": row.result,
                "owner": lease.worker,
                "attempts": attempts,
                "unfinished": unfinished,
            }
    finally:
        await engine.dispose()


def wait_for(
    database_url: str, calibration_id: uuid.UUID, *, timeout_s: float, until_done: int | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        state = asyncio.run(run_state(database_url, calibration_id))
        if state["status"] in ("succeeded", "failed"):
            return state
        if until_done is not None and state["done"] >= until_done:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {calibration_id} still {state['status']} after {timeout_s} s")
        time.sleep(0.1)


def timed_run(setup: Setup, spec: RunSpec, n: int, timeout_s: float) -> dict[str, Any]:
    """N workers, one run: its wall time, throughput and the workers' CPU."""
    workers = start_workers(setup, n, f"n{n}")
    try:
        cpu_before = sum(cpu_seconds(p.pid) for p, _ in workers)
        started = time.perf_counter()
        calibration_id = asyncio.run(queue_run(setup.database_url, spec, f"bench-{n}"))
        state = wait_for(setup.database_url, calibration_id, timeout_s=timeout_s)
        wall = time.perf_counter() - started
        cpu = sum(cpu_seconds(p.pid) for p, _ in workers) - cpu_before
    finally:
        stop_workers(workers)
    if state["status"] != "succeeded":
        raise RuntimeError(f"{n}-worker run failed: {state['error']}")
    return {
        "workers": n,
        "seconds": round(wall, 3),
        "cases_per_s": round(spec.cases / wall, 4),
        "worker_cpu_s_per_case": round(cpu / spec.cases, 4),
        "thresholds": state["result"]["thresholds"],
        "scores": state["result"]["scores"],
    }


def killed_run(setup: Setup, spec: RunSpec, n: int, timeout_s: float) -> dict[str, Any]:
    """N workers; the run's owner SIGKILLed once a third of the cases are stored."""
    workers = start_workers(setup, n, "killed")
    try:
        calibration_id = asyncio.run(queue_run(setup.database_url, spec, "bench-killed"))
        mid = wait_for(
            setup.database_url, calibration_id, timeout_s=timeout_s, until_done=spec.cases // 3
        )
        owner_pid = int(str(mid["owner"]).rsplit(":", 1)[1])
        victim = next(p for p, _ in workers if p.pid == owner_pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = mid["done"]
        state = wait_for(setup.database_url, calibration_id, timeout_s=timeout_s)
    finally:
        stop_workers(workers)
    return {
        "workers": n,
        "killed": "owner",
        "killed_after_cases": killed_at,
        "status": state["status"],
        "stored": state["done"],
        "distinct": len(set(state["case_ids"])),
        "unfinished_claims": state["unfinished"],
        "redone": sorted(p for p, a in state["attempts"].items() if a > 1),
        "result": state["result"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", default="1,2,4", help="Comma list of worker counts.")
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    parser.add_argument("--latency-ms", type=float, default=500.0, help="Stub, per request.")
    parser.add_argument("--per-token-ms", type=float, default=0.0, help="Stub, per token.")
    parser.add_argument("--concurrency", type=int, default=2, help="Cases at once per worker.")
    parser.add_argument("--max-questions", type=int, default=2)
    parser.add_argument("--kill-workers", type=int, default=2, help="0: no killed run.")
    parser.add_argument("--lease-timeout", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=18451, help="The stub's port.")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PURSUIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="An admin URL: a fresh database is made there and dropped at the end.",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds per run.")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/pursuit-bench-workers"))
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if 1 not in counts:
        counts.insert(0, 1)  # the ratios' reference
    args.log_dir.mkdir(parents=True, exist_ok=True)
    spec = make_spec(args.cases, DATASET, args.concurrency, args.max_questions)
    load_before = os.getloadavg()
    database_url, name = create_database(args.postgres)
    stub = start_stub(args.port, args.latency_ms, args.per_token_ms, args.log_dir / "stub.log")
    setup = Setup(
        database_url=database_url,
        llm_url=f"http://127.0.0.1:{args.port}",
        lease_timeout_s=args.lease_timeout,
        heartbeat_s=args.heartbeat,
        log_dir=args.log_dir,
    )
    try:
        runs = {n: timed_run(setup, spec, n, args.timeout) for n in counts}
        killed = (
            killed_run(setup, spec, args.kill_workers, args.timeout) if args.kill_workers else None
        )
    finally:
        stub.send_signal(signal.SIGTERM)
        stub.wait(timeout=30)
        drop_database(args.postgres, name)
    reference = runs[1]
    out: dict[str, Any] = {
        "cases": args.cases,
        "stub": {"latency_ms": args.latency_ms, "per_token_ms": args.per_token_ms},
        "concurrency_per_worker": args.concurrency,
        "max_questions": args.max_questions,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": {
            str(n): {k: v for k, v in r.items() if k not in ("thresholds", "scores")}
            for n, r in runs.items()
        },
        "ratios": {
            str(n): round(r["cases_per_s"] / reference["cases_per_s"], 3) for n, r in runs.items()
        },
        "thresholds_equal_across_worker_counts": all(
            r["thresholds"] == reference["thresholds"] and r["scores"] == reference["scores"]
            for r in runs.values()
        ),
    }
    if killed is not None:
        result = killed.pop("result") or {}
        killed["exactly_once"] = (
            killed["status"] == "succeeded"
            and killed["stored"] == killed["distinct"] == args.cases
            and killed["unfinished_claims"] == 0
        )
        killed["thresholds_equal"] = (
            result.get("thresholds") == reference["thresholds"]
            and result.get("scores") == reference["scores"]
        )
        out["killed_run"] = killed
    text = json.dumps(out, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()
