"""A seconds-long run of the load scenario against the real API on PostgreSQL.

The API serves in a thread (uvicorn) with a scripted posterior provider instead of vLLM, so
what runs is the locustfile (in its own process: locust monkey-patches on import), the
fixed-rate client and the exactly-once check, end to end, with every answer sent again with
its Idempotency-Key and half of them twice at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import uvicorn

from app.engine.types import CaseContext, History, WeightedAnswer
from app.main import create_app
from app.settings import Settings
from benchmarks.load import check_exactly_once, fixed_rate
from benchmarks.load.report import locust_endpoints, phase_window
from benchmarks.load.scenario import ROOT, read_records, session_ids
from tests.conftest import _truncate, make_key
from tests.engine.scripted import ScriptedProvider
from tests.ports import free_port

pytestmark = pytest.mark.postgres


class SlowScriptedProvider(ScriptedProvider):
    """Takes a moment per turn, so that two copies of one answer really overlap."""

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        await asyncio.sleep(0.05)
        return await super().label_posteriors(
            case=case, histories=histories, inquiry=inquiry, labels=labels
        )


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The API on a free port (URL, an API key); the database emptied afterwards."""
    settings = Settings(
        database_url=postgres_url, redis_url=None, data_dir=tmp_path, log_level="WARNING"
    )
    provider = SlowScriptedProvider(
        table={(): [0.4, 0.3, 0.2, 0.1]},
        default_answers=(WeightedAnswer("yes", 0.5), WeightedAnswer("no", 0.5)),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, provider=provider),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    key = asyncio.run(make_key(settings, tenant="load"))
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        asyncio.run(_truncate(postgres_url))


def test_locust_interviews_then_fixed_rate_then_exactly_once(
    served: tuple[str, str], postgres_url: str, tmp_path: Path
) -> None:
    url, key = served
    records = tmp_path / "answers.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOAD_API_KEY": key,
        "LOAD_RECORDS": str(records),
        "LOAD_THINK_S": "0,0.05",
        "LOAD_REPLAY_P": "1",
        "LOAD_DUPLICATE_P": "0.5",
        "LOAD_SEED": "7",
        "LOAD_SESSION_OPTIONS": json.dumps({"max_questions": 2}),
    }
    locust = subprocess.run(
        [
            *(sys.executable, "-m", "locust"),
            *("-f", str(ROOT / "benchmarks" / "load" / "locustfile.py"), "InterviewUser"),
            *("--headless", "--only-summary", "-u", "3", "-r", "3", "-t", "4s"),
            *("--stop-timeout", "30", "--host", url, "--json-file", str(tmp_path / "interview")),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert locust.returncode == 0, locust.stdout[-3000:] + locust.stderr[-3000:]

    rows = {r["name"]: r for r in locust_endpoints(tmp_path / "interview.json")}
    assert rows["/v1/sessions"]["requests"] >= 3
    assert rows["/v1/sessions/[id]/answers (replay)"]["requests"] >= 1
    assert all(r["failures"] == 0 for r in rows.values())
    done = [r for r in read_records(records) if r.get("record") == "interview"]
    assert phase_window(list(read_records(records))) is not None
    assert done and all(r["ok"] and r["turns"] == 2 for r in done)

    out = tmp_path / "once.json"
    assert (
        check_exactly_once.main(
            ["--records", str(records), "--database-url", postgres_url, "--out", str(out)]
        )
        == 0
    )
    once = json.loads(out.read_text())
    assert once["ok"] and once["acknowledged"] == 2 * len(done) and once["replays"] >= 1

    samples, usage = asyncio.run(
        fixed_rate.run(
            url=url,
            key=key,
            sessions=session_ids(read_records(records)),
            rate=50,
            duration=1,
            warmup=0.2,
            request_timeout_s=10,
            max_connections=8,
            watch_pids={"self": os.getpid()},
        )
    )
    summary = fixed_rate.summarize(samples, rate=50, duration=1, goal_p99_ms=10_000)
    assert summary["errors"] == 0 and summary["requests"] >= 45, summary
    assert {"self", "client", "machine"} <= set(usage)
