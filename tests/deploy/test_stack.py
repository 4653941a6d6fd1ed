"""scripts/stack.sh: the whole system as local processes, up, ready, down.

Needs PostgreSQL, Redis and the local vLLM (started by the script through `pursuit llm up`,
idempotent and fast when it is already up), so it runs in CI with the other live tests. It uses
its own state folder, port, database and Redis database, so a stack someone left running on
the defaults (port 8080, pursuit_staging) is not touched.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from app.tooling.deploy_checks import ROOT
from tests.conftest import POSTGRES_ADMIN_URL, REDIS_URL, _libpq
from tests.ports import free_port

pytestmark = [pytest.mark.llm, pytest.mark.postgres, pytest.mark.redis]

STACK = ROOT / "scripts" / "stack.sh"
UP_TIMEOUT_S = 1200  # a machine without the vLLM install needs minutes for it


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    database = f"pursuit_stack_{uuid.uuid4().hex[:10]}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PURSUIT_DATABASE_URL", "PURSUIT_REDIS_URL"}
        and not k.startswith(("PURSUIT_LLM_", "STACK_"))
    }
    env.update(
        STACK_DIR=str(tmp_path / "stack"),
        STACK_PORT=str(free_port()),
        STACK_DATABASE=database,
        STACK_REDIS_URL=REDIS_URL,
        STACK_SKIP_SETUP="1",  # the venv running this test is the one the script would make
        STACK_READY_TIMEOUT="180",
    )
    try:
        yield env
    finally:
        subprocess.run([str(STACK), "down"], env=env, cwd=ROOT, timeout=120, check=False)
        with psycopg.connect(_libpq(POSTGRES_ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _logs(state: Path) -> str:
    """The tail of each log, for failure messages (tmp_path does not outlive a few runs)."""
    out = []
    for log in sorted(state.glob("*.log")):
        out.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-25:]))
    return "\n".join(out)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def test_stack_up_ready_down(stack_env: dict[str, str]) -> None:
    state = Path(stack_env["STACK_DIR"])
    url = f"http://127.0.0.1:{stack_env['STACK_PORT']}"

    up = _run(stack_env, "up", timeout=UP_TIMEOUT_S)
    assert up.returncode == 0, up.stdout + up.stderr[-3000:] + _logs(state)
    printed = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    assert printed["PURSUIT_STACK_URL"] == url
    key = printed["PURSUIT_API_KEY"]
    assert key == (state / "api-key").read_text().strip()
    assert (state / "api-key").stat().st_mode & 0o077 == 0  # only the owner reads it

    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text + _logs(state)
    assert {name: c["status"] for name, c in ready.json()["checks"].items()} == {
        "database": "ok",
        "redis": "ok",
        "llm": "ok",
    }
    # The key works (404 for an unknown session, not 401) ...
    missing = httpx.get(
        f"{url}/v1/sessions/{uuid.uuid4()}", headers={"Authorization": f"Bearer {key}"}
    )
    assert missing.status_code == 404, missing.text
    # ... and the worker runs, or the script said why not.
    assert _alive(state / "worker.pid") or "no `pursuit worker`" in up.stderr, _logs(state)

    again = _run(stack_env, "up", timeout=UP_TIMEOUT_S)  # idempotent: same processes, same key
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already running" in again.stderr
    assert f"PURSUIT_API_KEY={key}" in again.stdout

    status = _run(stack_env, "status")
    assert status.returncode == 0, status.stderr

    down = _run(stack_env, "down")
    assert down.returncode == 0, down.stderr
    assert not (state / "api.pid").exists() and not (state / "worker.pid").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=5)
    assert _run(stack_env, "status").returncode == 3
