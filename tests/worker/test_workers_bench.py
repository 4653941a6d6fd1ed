"""``benchmarks/workers.py`` end to end, small: real ``pursuit worker`` processes on a fresh
PostgreSQL database against the stub LLM server, 1 and 2 workers on one run, then a run whose
owner is SIGKILLed. Asserts what must hold (every case stored once, the same thresholds), never
the timings: the throughput ratios are the benchmark's to report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import workers
from tests.conftest import POSTGRES_ADMIN_URL
from tests.ports import free_port

pytestmark = pytest.mark.postgres


def test_two_workers_and_a_killed_owner_store_each_case_once(tmp_path: Path) -> None:
    out = tmp_path / "workers.json"
    figures = workers.main(
        [
            "--workers",
            "1,2",
            "--cases",
            "6",
            "--latency-ms",
            "20",
            "--kill-workers",
            "2",
            "--lease-timeout",
            "2",
            "--heartbeat",
            "0.3",
            "--port",
            str(free_port()),
            "--postgres",
            POSTGRES_ADMIN_URL,
            "--json",
            str(out),
            "--log-dir",
            str(tmp_path / "logs"),
        ]
    )
    assert json.loads(out.read_text()) == figures
    assert set(figures["ratios"]) == {"1", "2"} and figures["ratios"]["1"] == 1.0
    assert figures["thresholds_equal_across_worker_counts"] is True
    killed = figures["killed_run"]
    assert killed["exactly_once"] is True and killed["thresholds_equal"] is True
    assert killed["stored"] == killed["distinct"] == 6 and killed["unfinished_claims"] == 0
    assert 1 <= len(killed["redone"]) <= 2  # the owner's in-flight cases (2 at once), once
