"""CPU accounting from /proc: a process tree's time includes its children (uvicorn's workers)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.load import cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ntime.sleep(30)"
SPAWN = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])"


def _own_cpu_s(pid: int) -> float:
    rest = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / cpu.TICKS


def test_a_trees_cpu_counts_its_live_children() -> None:
    # The parent only waits; its child burns 0.4 s of CPU and sleeps: only the tree sees it.
    parent = subprocess.Popen([sys.executable, "-c", SPAWN], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while cpu.tree_cpu_s(parent.pid) - _own_cpu_s(parent.pid) < 0.3:
            assert time.monotonic() < deadline, "the child's CPU never showed in the tree"
            time.sleep(0.1)
        assert _own_cpu_s(parent.pid) < 0.3
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_oldest_pid_finds_the_first_started_process_of_a_command(tmp_path: Path) -> None:
    sleeper = tmp_path / f"psleep{os.getpid() % 100000}"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleeper)
    first = subprocess.Popen([str(sleeper), "30"])
    time.sleep(0.05)
    second = subprocess.Popen([str(sleeper), "30"])
    try:
        assert cpu.oldest_pid(sleeper.name) == first.pid
        assert cpu.oldest_pid("no-such-command") is None
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
