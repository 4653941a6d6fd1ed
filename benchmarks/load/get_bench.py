"""GET /v1/sessions/{id} at fixed rates against `pursuit serve`, without an LLM: minutes, not 15.

    .venv/bin/python -m benchmarks.load.get_bench --workers 2 --rates 150,300 --duration 30

What it does: a fresh PostgreSQL database (migrated), an API key, ``--sessions`` interviews of
3 answered turns each (made in-process with the sessions tests' scripted model, so replies are the
~9 kB of the load test's sessions), then `pursuit serve --workers N` on its own port
(PostgreSQL, Redis, no LLM) and, per rate, the open-loop client of ``fixed_rate`` for
``--warmup`` + ``--duration`` seconds. It prints one line per rate (latency percentiles from
each request's due time, errors, and the CPU per request of the API processes, PostgreSQL and
Redis, and how busy the machine was) and writes the summaries to ``--out``. The database is
dropped at the end. ``scripts/load.sh`` is the whole-stack run (interviews against the local
vLLM, then the same GETs); this one isolates the read path so a change to it can be measured
before and after in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
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
        help="also serve benchmarks/load/bare_app.py (the same row read, bare FastAPI) and "
        "report the API CPU per GET of the service over the bare app's",
    )
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    server: subprocess.Popen[bytes] | None = None

    def stop_server() -> None:
        running = server
        if running is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGTERM)
            running.wait(timeout=30)

    with contextlib.ExitStack() as stack:
        settings, key, sessions = stack.enter_context(
            scratch_database("getbench", sessions=args.sessions)
        )
        stack.callback(stop_server)  # before the database is dropped
        database_url = str(settings.database_url)
        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PURSUIT_DATABASE_URL": database_url,
            "PURSUIT_REDIS_URL": REDIS_URL,
            "PURSUIT_RATE_LIMIT_PER_MINUTE": "10000000",
            "PURSUIT_LOG_JSON": "true",
        }
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
            commands["bare"] = [
                str(ROOT / ".venv" / "bin" / "uvicorn"),
                "benchmarks.load.bare_app:app",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        per_get: dict[str, dict[float, float]] = {}
        for label, command in commands.items():
            server = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
            _wait_ready(url)
            watched = {"api": server.pid}
            for name_, command_ in (("postgres", "postgres"), ("redis", "redis-server")):
                if (pid := cpu.oldest_pid(command_)) is not None:
                    watched[name_] = pid  # PostgreSQL: the postmaster, whose tree has the backends
            for rate in rates:
                samples, usage = asyncio.run(
                    fixed_rate.run(
                        url=url,
                        key=key,
                        sessions=sessions,
                        rate=rate,
                        duration=args.duration,
                        warmup=args.warmup,
                        request_timeout_s=10.0,
                        max_connections=args.max_connections,
                        watch_pids=watched,
                    )
                )
                summary = fixed_rate.summarize(
                    samples, rate=rate, duration=args.duration, goal_p99_ms=25.0
                )
                summary.update(workers=args.workers, sessions=len(sessions), cpu=usage)
                print(f"{label}: {_line(summary)}", flush=True)
                api = usage.get("api")
                api_ms = api.get("cpu_ms_per_request") if isinstance(api, dict) else None
                if isinstance(api_ms, int | float):
                    per_get.setdefault(label, {})[rate] = float(api_ms)
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    suffix = "" if label == "service" else f"_{label}"
                    (args.out / f"get_{rate:g}{suffix}.json").write_text(
                        json.dumps(summary, indent=2) + "\n"
                    )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
            server = None
        if "bare" in per_get:
            for rate, bare_ms in per_get["bare"].items():
                service_ms = per_get.get("service", {}).get(rate)
                if service_ms is not None and bare_ms > 0:
                    print(
                        f"{rate:g} req/s: API CPU per GET, service {service_ms:.2f} ms / bare "
                        f"{bare_ms:.2f} ms = {service_ms / bare_ms:.2f}x (goal 1.3x)",
                        flush=True,
                    )


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
