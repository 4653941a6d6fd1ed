"""GET /v1/sessions/{id} at fixed rates against `pursuit serve`, without an LLM: minutes, not 15.

    .venv/bin/python -m benchmarks.load.get_bench --workers 2 --rates 150,300 --duration 30

What it does: a fresh PostgreSQL database (migrated), an API key, ``--sessions`` interviews of 3
answered turns each (made in-process with the sessions tests' scripted model, so replies are the
~9 kB of the load test's sessions), then `pursuit serve --workers N` on its own port
(PostgreSQL, Redis, no LLM) and, per rate, the open-loop client of ``fixed_rate`` for
``--warmup`` + ``--duration`` seconds. It prints one line per rate (latency percentiles from
each request's due time, errors, and the CPU per request of the API processes, PostgreSQL and
Redis, and how busy the machine was) and writes the summaries to ``--out``. The database is
dropped at the end. With ``--bare``, ``benchmarks/load/bare_app.py`` (the same row read on bare
FastAPI) runs beside the service on its own port, and each of ``--rounds`` rounds measures both
at every rate, back to back and in alternating order; the API CPU per GET of the service over
the bare app's is reported per round, with the median and a 95% interval over the rounds (and in
``--out``/ratios.json). ``scripts/load.sh`` is the whole-stack run (interviews against the local
vLLM, then the same GETs); this one isolates the read path so a change to it can be measured
before and after in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from scipy import stats
from sqlalchemy.engine import make_url

from app.auth.keys import Scope
from app.auth.service import create_key
from app.db.migrate import upgrade_head
from app.main import create_app
from app.settings import Settings
from benchmarks.load import cpu, fixed_rate
from tests.api.test_sessions import _body, _provider
from tests.conftest import open_client
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get(
    "PURSUIT_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("PURSUIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")


async def _seed(settings: Settings, key: str, count: int) -> list[str]:
    """``count`` sessions with 3 answered turns each, through the API itself (the sessions
    tests' scripted model and request body)."""
    ids = []
    async for client in open_client(create_app(settings, provider=_provider()), api_key=key):
        for _ in range(count):
            reply = (
                await client.post(
                    "/v1/sessions", json=_body(max_questions=4, stop_on_no_gain=False)
                )
            ).json()
            for _ in range(3):
                answer = {
                    "question_id": reply["next_question"]["id"],
                    "answer": "Yes, for about three days, worse in the mornings.",
                }
                response = await client.post(f"/v1/sessions/{reply['id']}/answers", json=answer)
                response.raise_for_status()
                reply = response.json()
            ids.append(str(reply["id"]))
    return ids


@contextlib.contextmanager
def scratch_database(prefix: str, *, sessions: int) -> Iterator[tuple[Settings, str, list[str]]]:
    """A fresh migrated PostgreSQL database with an API key and ``sessions`` seeded
    interviews: (settings without an LLM, the key, the session ids). Dropped afterwards."""
    name = f"pursuit_{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    try:
        upgrade_head(database_url)
        _, key = asyncio.run(
            create_key(
                database_url, tenant="bench", scopes=[Scope.SESSIONS_READ, Scope.SESSIONS_WRITE]
            )
        )
        settings = Settings(
            database_url=database_url,
            redis_url=REDIS_URL,
            data_dir=ROOT / "var" / prefix,
            llm_base_url=None,
            llm_model=None,
        )
        yield settings, key, asyncio.run(_seed(settings, key, sessions))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"the API at {url} did not become ready in {timeout_s:.0f} s")


def ratio_summary(ratios: list[float]) -> dict[str, Any]:
    """Median, geometric mean and a 95% Student-t interval of the geometric mean of paired
    ratios (one per round): a ratio of CPU times is read on the log scale."""
    logs = [math.log(r) for r in ratios]
    summary: dict[str, Any] = {
        "rounds": len(ratios),
        "median": round(statistics.median(ratios), 3),
        "geometric_mean": round(math.exp(statistics.fmean(logs)), 3),
        "ci95": None,
    }
    if len(logs) >= 2:
        half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        mean = statistics.fmean(logs)
        summary["ci95"] = [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    return summary


def _rounds(labels: list[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """The phase order of each round: A B, then B A, and so on (a drift in the machine's
    load over the run then falls on both sides alike)."""
    for r in range(rounds):
        yield r, labels if r % 2 == 0 else labels[::-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="API worker processes")
    parser.add_argument("--rates", default="150,300", help="requests per second, comma-separated")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--out", type=Path, help="folder for get_<rate>.json summaries")
    parser.add_argument("--port", type=int, default=0, help="API port (0: any free one)")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also serve benchmarks/load/bare_app.py (the same row read, bare FastAPI) beside "
        "the service and report the API CPU per GET of the service over the bare app's",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --bare: measure service and bare this many times per rate, alternating "
        "which goes first, and summarise the paired ratios (median, 95%% interval)",
    )
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    servers: dict[str, subprocess.Popen[bytes]] = {}

    def stop_servers() -> None:
        for running in servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGTERM)
        for running in servers.values():
            running.wait(timeout=30)

    with contextlib.ExitStack() as stack:
        settings, key, sessions = stack.enter_context(
            scratch_database("getbench", sessions=args.sessions)
        )
        stack.callback(stop_servers)  # before the database is dropped
        env = {
            **os.environ,
            "PURSUIT_DATABASE_URL": str(settings.database_url),
            "PURSUIT_REDIS_URL": REDIS_URL,
            "PURSUIT_RATE_LIMIT_PER_MINUTE": "10000000",
            "PURSUIT_LOG_JSON": "true",
        }
        port = args.port or free_port()
        ports = {"service": port}
        commands = {
            "service": [
                str(ROOT / ".venv" / "bin" / "pursuit"),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
        }
        if args.bare:
            # Both run for the whole benchmark, each on its own port: an idle server costs
            # next to nothing, and the phases of one round are then seconds apart.
            ports["bare"] = free_port()
            commands["bare"] = [
                str(ROOT / ".venv" / "bin" / "uvicorn"),
                "benchmarks.load.bare_app:app",
                "--port",
                str(ports["bare"]),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        watched: dict[str, dict[str, int]] = {}
        for label, command in commands.items():
            servers[label] = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
            _wait_ready(f"http://127.0.0.1:{ports[label]}")
            watched[label] = {"api": servers[label].pid}
            for name_, command_ in (("postgres", "postgres"), ("redis", "redis-server")):
                if (pid := cpu.oldest_pid(command_)) is not None:
                    # PostgreSQL: the postmaster, whose tree has the backends
                    watched[label][name_] = pid
        # rate -> label -> API CPU ms per GET, one per round
        per_get: dict[float, dict[str, list[float]]] = {rate: {} for rate in rates}
        for round_, order in _rounds(list(commands), args.rounds if args.bare else 1):
            for rate in rates:
                for label in order:
                    samples, usage = asyncio.run(
                        fixed_rate.run(
                            url=f"http://127.0.0.1:{ports[label]}",
                            key=key,
                            sessions=sessions,
                            rate=rate,
                            duration=args.duration,
                            warmup=args.warmup,
                            request_timeout_s=10.0,
                            max_connections=args.max_connections,
                            watch_pids=watched[label],
                        )
                    )
                    summary = fixed_rate.summarize(
                        samples, rate=rate, duration=args.duration, goal_p99_ms=25.0
                    )
                    summary.update(workers=args.workers, sessions=len(sessions), cpu=usage)
                    print(f"round {round_ + 1} {label}: {_line(summary)}", flush=True)
                    api = usage.get("api")
                    api_ms = api.get("cpu_ms_per_request") if isinstance(api, dict) else None
                    if isinstance(api_ms, int | float):
                        per_get[rate].setdefault(label, []).append(float(api_ms))
                    if args.out:
                        args.out.mkdir(parents=True, exist_ok=True)
                        suffix = "" if label == "service" else f"_{label}"
                        name = f"get_{rate:g}{suffix}" + (f"_r{round_ + 1}" if args.bare else "")
                        (args.out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        if args.bare:
            _report_ratios(per_get, args.out)


def _report_ratios(per_get: dict[float, dict[str, list[float]]], out: Path | None) -> None:
    """Print (and write to OUT/ratios.json) each rate's paired ratios, service over bare."""
    report: dict[str, Any] = {}
    for rate, by_label in per_get.items():
        pairs = list(zip(by_label.get("service", []), by_label.get("bare", []), strict=False))
        ratios = [service / bare for service, bare in pairs if bare > 0]
        if not ratios:
            continue
        summary = ratio_summary(ratios)
        report[f"{rate:g}"] = {
            "service_ms": [s for s, _ in pairs],
            "bare_ms": [b for _, b in pairs],
            "ratios": [round(r, 3) for r in ratios],
            **summary,
        }
        interval = summary["ci95"]
        print(
            f"{rate:g} req/s: API CPU per GET, service over bare, {len(ratios)} paired rounds: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + f"; median {summary['median']:.2f}x, geometric mean {summary['geometric_mean']:.2f}x"
            + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
            + " (goal 1.3x)",
            flush=True,
        )
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ratios.json").write_text(json.dumps(report, indent=2) + "\n")


def _line(summary: dict[str, Any]) -> str:
    latency, cpu = summary["latency_ms"], summary["cpu"]

    def per_request(name: str) -> str:
        value = cpu.get(name, {}).get("cpu_ms_per_request")
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{summary['workers']} worker(s) {summary['target_rate_per_s']:g} req/s: "
        f"served {summary['achieved_rate_per_s']:g}/s, errors {summary['errors']}, "
        f"p50 {latency['p50']} p95 {latency['p95']} p99 {latency['p99']} ms; "
        f"CPU ms/request api {per_request('api')} postgres {per_request('postgres')} "
        f"redis {per_request('redis')} client {per_request('client')}; "
        f"machine {cpu['machine']['busy_fraction']:.0%} busy; "
        f"goal {'met' if summary['meets_goal'] else 'not met'}"
    )


if __name__ == "__main__":
    main()
