"""The ``pursuit`` command: version, migrate, and serve on the embedded default."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app import __version__
from app.auth.keys import digest, parse_lookup
from tests.ports import free_port

PURSUIT = [sys.executable, "-m", "app.cli.main"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURSUIT_")}
    env["PURSUIT_DATA_DIR"] = str(tmp_path)
    return env


def test_version() -> None:
    result = subprocess.run([*PURSUIT, "version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == __version__


def test_migrate_creates_the_embedded_schema(tmp_path: Path) -> None:
    subprocess.run([*PURSUIT, "migrate"], env=_env(tmp_path), check=True, capture_output=True)
    with sqlite3.connect(tmp_path / "pursuit.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert "audit_events" in tables
    assert version is not None


def test_serve_runs_the_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*PURSUIT, "serve", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server did not come up within 60 s"
            time.sleep(0.3)

        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"]["status"] == "ok"
        missing = httpx.get(f"{base}/nowhere", headers={"X-Request-Id": "cli-404"})
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["request_id"] == "cli-404"
        # No open door: the first run minted a development key, and it works.
        dev_key = (tmp_path / "dev-api-key").read_text().strip()
        assert httpx.get(f"{base}/v1/audit").status_code == 401
        authorized = httpx.get(f"{base}/v1/audit", headers={"Authorization": f"Bearer {dev_key}"})
        assert authorized.status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert dev_key in stderr.decode()


def test_keys_create_prints_the_key_once_on_the_last_line(tmp_path: Path) -> None:
    env = _env(tmp_path)
    subprocess.run([*PURSUIT, "migrate"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [
            *PURSUIT,
            "keys",
            "create",
            "--tenant",
            "clinic-x",
            "--scopes",
            "sessions:read,audit:read",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = created.stdout.strip().splitlines()[-1]
    assert parse_lookup(secret) is not None
    with sqlite3.connect(tmp_path / "pursuit.db") as conn:
        stored = conn.execute("SELECT digest, tenant, scopes FROM api_keys").fetchall()
    assert stored == [(digest(secret), "clinic-x", '["sessions:read", "audit:read"]')]
    assert secret not in str(stored)

    listed = subprocess.run(
        [*PURSUIT, "keys", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert "clinic-x" in listed.stdout and secret not in listed.stdout

    bad = subprocess.run(
        [*PURSUIT, "keys", "create", "--tenant", "t", "--scopes", "root"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown scope" in bad.stderr
