"""A Python client generated from the running app's /openapi.json drives an interview.

openapi-python-client (a dev dependency) generates the client into the test's tmp_path at
test time (nothing generated is committed); the client then talks to the app in-process,
with the scripted provider of tests/api/test_sessions.py. What this guards: error
responses come back typed (a 409 as a ``Problem`` with its detail and request id, not
``None``), the operation ids name the functions, and enums and request models round-trip.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.api.test_sessions import _body, _provider
from tests.engine.scripted import ScriptedProvider

PACKAGE = "pursuit_client"
# The generator has no type for PNG bodies: bytes, like application/octet-stream.
CONFIG = f"package_name_override: {PACKAGE}\ncontent_type_overrides:\n  image/png: application/octet-stream\n"


@pytest.fixture
def provider() -> ScriptedProvider:
    return _provider()


@pytest.fixture
async def app(settings: Settings, provider: ScriptedProvider) -> FastAPI:
    return create_app(settings, provider=provider)


@pytest.fixture
def forget_client() -> Iterator[None]:
    """Each test imports its own freshly generated package."""
    yield
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.endswith("-generated")]


def _generate(document: dict[str, Any], tmp_path: Path) -> Path:
    """Run openapi-python-client on ``document``; fail on any warning it prints."""
    spec, config = tmp_path / "openapi.json", tmp_path / "config.yaml"
    spec.write_text(json.dumps(document))
    config.write_text(CONFIG)
    root = tmp_path / "client-generated"
    tool = Path(sys.executable).parent / "openapi-python-client"
    # The generator formats its output with ruff, found on PATH (the venv's).
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(tool), "generate", "--path", str(spec), "--meta", "none", "--config"]
    run = subprocess.run(
        [*command, str(config), "--output-path", str(root / PACKAGE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Warning" not in output and "WARNING" not in output, output
    return root


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.mark.usefixtures("forget_client")
async def test_a_generated_client_drives_an_interview_and_gets_a_typed_409(
    app: FastAPI, client: httpx.AsyncClient, api_key: str, tmp_path: Path
) -> None:
    document = (await client.get("/openapi.json")).json()
    sys.path.insert(0, str(_generate(document, tmp_path)))
    models = _module("models")
    create = _module("api.sessions.sessions_create")
    answer = _module("api.sessions.sessions_answer")
    finalize = _module("api.sessions.sessions_finalize")
    get = _module("api.sessions.sessions_get")
    listing = _module("api.sessions.sessions_list")
    generated = importlib.import_module(PACKAGE).AuthenticatedClient(
        base_url="http://pursuit.test",
        token=api_key,
        httpx_args={"transport": httpx.ASGITransport(app=app)},
    )

    async with generated:
        # "random" has no no-gain stop: the scripted interview runs to its budget of 3.
        opened = await create.asyncio_detailed(
            client=generated, body=models.SessionCreate.from_dict(_body(policy="random"))
        )
        assert opened.status_code == 201, opened.content
        session = opened.parsed
        assert isinstance(session, models.SessionOut)
        assert session.policy == models.Policy.RANDOM
        session_id = uuid.UUID(session.id)

        # A 409: not the current question. The problem comes back typed, not as None.
        refused = await answer.asyncio_detailed(
            session_id,
            client=generated,
            body=models.AnswerIn(question_id=str(uuid.uuid4()), answer="yes"),
        )
        assert refused.status_code == 409
        problem = refused.parsed
        assert isinstance(problem, models.Problem), refused.content
        assert problem.status == 409 and problem.type_.endswith("/conflict")
        assert "is not the current question" in problem.detail
        assert problem.request_id and problem.request_id == refused.headers["x-request-id"]

        while session.next_question is not None:
            reply = await answer.asyncio(
                session_id,
                client=generated,
                body=models.AnswerIn(question_id=session.next_question.id, answer="no"),
                idempotency_key=f"step-{session.step}",
            )
            assert isinstance(reply, models.SessionOut), reply
            session = reply
        assert session.step == 3 and session.stop_reason == models.StopReason.BUDGET

        final = await finalize.asyncio(session_id, client=generated)
        assert isinstance(final, models.FinalOut)
        assert final.final_answer == session.differential.top
        detail = await get.asyncio(session_id, client=generated)
        assert isinstance(detail, models.SessionDetail)
        assert [turn.answer for turn in detail.transcript] == ["no", "no", "no", None]

        page = await listing.asyncio(client=generated, status=models.SessionStatus.FINALIZED)
        assert isinstance(page, models.SessionList)
        assert [item.id for item in page.items] == [str(session_id)]

        # A 422 is typed too, with the fields that failed.
        invalid = await create.asyncio_detailed(
            client=generated,
            body=models.SessionCreate.from_dict(_body(candidates=["only one"])),
        )
        assert invalid.status_code == 422
        assert isinstance(invalid.parsed, models.ValidationProblem), invalid.content
        assert invalid.parsed.errors[0].loc == ["body", "candidates"]
