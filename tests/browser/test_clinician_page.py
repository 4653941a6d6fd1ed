"""The clinician page end to end: uvicorn on real PostgreSQL and the real local vLLM server,
driven in Debian's headless Chromium by tests/browser/interview.mjs (playwright-core). The
page sends every turn with ``Prefer: respond-async`` and follows its progress events, so this
is also the end-to-end test of async turns.

Needs ``scripts/browser-setup.sh`` (Chromium, ``npm ci``) and the local vLLM server (started
by the ``live_server`` fixture). Screenshots go to artifacts/browser/; with
``PURSUIT_DOCS_SCREENSHOT=1`` the finished page also replaces docs/img/clinician-page.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np
import pytest

from app.calibrations.results import calibration_result
from app.conformal import lac_threshold
from app.engine.banks import load_query_bank
from app.engine.policy import DEFAULT_BANK, QuestionPolicy, named_bank
from app.llm.prompts import PROMPT_VERSION
from app.settings import Settings
from tests.conftest import insert_calibration
from tests.ports import free_port

pytestmark = pytest.mark.llm

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("PURSUIT_CHROMIUM", "/usr/bin/chromium")
CANDIDATES = ["Bacterial meningitis", "Migraine", "Influenza", "Subarachnoid hemorrhage"]
ANSWERS = ["Yes, my neck is very stiff.", "Yes, light hurts my eyes.", "No cough."]


def _fresh_artifacts() -> BinaryIO:
    """Empty artifacts/browser/ (no stale screenshots); the server's log file in it."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return (ARTIFACTS / "server.log").open("wb")


def _require_browser() -> None:
    if not (HERE / "node_modules" / "playwright-core").is_dir() or shutil.which("node") is None:
        pytest.fail("Node or playwright-core is missing: run scripts/browser-setup.sh")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/browser-setup.sh")


def _keep_screenshots() -> None:
    for name in ("01-form", "02-first-question", "04-finalized", "clinician-page"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
    if os.environ.get("PURSUIT_DOCS_SCREENSHOT") == "1":
        docs = ROOT / "docs" / "img" / "clinician-page.png"
        shutil.copyfile(ARTIFACTS / "clinician-page.png", docs)


@pytest.fixture
async def calibration(settings: Settings, live_server: tuple[str, str]) -> str:
    """A synthetic active calibration for the live model (cip, alpha 0.1, steps 0..3).

    Synthetic scores, so the page shows a calibrated set and its plot; what a real run would
    store has the same shape (app/calibrations/interviews.py). They are spread like SmolLM2's flat
    posteriors (tau ~ 0.9: a label enters the set from p ~ 0.1), so the engine's singleton
    stop does not end the interview before the answers run out.
    """
    rng = np.random.default_rng(7)
    scores = [sorted(float(x) for x in rng.beta(5, 2, 60)) for _ in range(4)]
    taus = [lac_threshold(np.asarray(s), 0.1) for s in scores]
    return await insert_calibration(
        settings,
        name="browser-test (synthetic scores)",
        model=live_server[1],
        prompt_version=PROMPT_VERSION,
        # The policy the page's interview below runs (a calibration serves only it).
        params={
            "question_source": "bank",
            "bank": "neurology",
            "n_questions": 3,
            "n_answers": 2,
            "answer_source": "llm",
        },
        result=calibration_result(
            thresholds=taus, scores=scores, alpha=0.1, step_alpha=0.1, n_per_step=[60] * 4
        ),
    )


@pytest.fixture
async def default_calibration(settings: Settings, live_server: tuple[str, str]) -> str:
    """A synthetic active calibration for the live model and the default policy (steps 0..5):
    what the demo calibration is for the embedded default (the same shape, other scores)."""
    rng = np.random.default_rng(11)
    scores = [sorted(float(x) for x in rng.beta(5, 2, 60)) for _ in range(6)]
    taus = [lac_threshold(np.asarray(s), 0.1) for s in scores]
    return await insert_calibration(
        settings,
        name="browser-test defaults (synthetic scores)",
        model=live_server[1],
        prompt_version=PROMPT_VERSION,
        params=QuestionPolicy.build().to_json(),
        result=calibration_result(
            thresholds=taus, scores=scores, alpha=0.1, step_alpha=0.1, n_per_step=[60] * 6
        ),
    )


@pytest.fixture
async def live_app(
    settings: Settings,
    live_server: tuple[str, str],
    tmp_path: Path,
) -> AsyncIterator[str]:
    """The real app under uvicorn on a free port; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PURSUIT_DATABASE_URL": settings.effective_database_url,
        "PURSUIT_REDIS_URL": settings.redis_url or "",
        "PURSUIT_LLM_BASE_URL": live_server[0],
        "PURSUIT_LLM_MODEL": live_server[1],
        "PURSUIT_DATA_DIR": str(tmp_path),
        "PURSUIT_LOG_LEVEL": "WARNING",
    }
    log = _fresh_artifacts()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:asgi_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(120):
                if server.returncode is not None:
                    pytest.fail(f"uvicorn exited with {server.returncode}; see {log.name}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.5)
            else:
                pytest.fail("uvicorn did not become healthy in 60 s")
        yield base
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 15)
            except TimeoutError:
                server.kill()
                await server.wait()
        log.close()


async def _run_page(live_app: str, api_key: str, interview: dict[str, Any]) -> dict[str, Any]:
    """Drive interview.mjs through ``interview``; what the page showed."""
    node = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "interview.mjs"),
        cwd=HERE,
        env={
            **os.environ,
            "PURSUIT_URL": live_app,
            "PURSUIT_API_KEY": api_key,
            "ARTIFACTS": str(ARTIFACTS),
            "CHROMIUM": CHROMIUM,
            "INTERVIEW": json.dumps(interview),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(node.communicate(), 900)
    except TimeoutError:
        node.kill()
        pytest.fail("the browser script ran over 15 minutes")
    assert node.returncode == 0, f"{stderr.decode()}\nscreenshots: {ARTIFACTS}"
    page: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return page


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_option_button_answers_in_the_browser(live_app: str, api_key: str) -> None:
    """Policy fixed asks the neurology bank in order: a closed question (yes / no / unsure
    buttons, one clicked), then one naming its own alternatives (free text only)."""
    _require_browser()
    bank = load_query_bank("neurology")
    page = await _run_page(
        live_app,
        api_key,
        {
            "summary": "A 58-year-old man with episodes of dizziness and nausea.",
            "candidates": ["Vestibular migraine", "Meniere disease", "Vestibular neuritis"],
            "source": "bank:neurology",
            "policy": "fixed",
            "answers": [{"option": "Yes"}, "Only the left ear."],
            "nQuestions": 2,
            "nAnswers": 2,
            "maxQuestions": 2,
            "expectCalibrated": False,
        },
    )
    assert page["problems"] == []
    assert page["asked"] == [bank[0], bank[1]]
    assert page["optionsShown"] == [["Yes", "No", "Unsure"], []]
    assert page["transcript"] == [f"{bank[0]} — Yes", f"{bank[1]} — Only the left ear."]
    async with httpx.AsyncClient(
        base_url=live_app, headers={"Authorization": f"Bearer {api_key}"}
    ) as http:
        session_id = page["downloadName"].removeprefix("pursuit-").removesuffix(".fhir.json")
        detail = (await http.get(f"/v1/sessions/{session_id}")).json()
    # The click was sent as the option's code and stored as its display text.
    assert [t["answer"] for t in detail["transcript"][:2]] == ["Yes", "Only the left ear."]
    assert detail["transcript"][0]["question"]["answer_options"][0] == {
        "code": "yes",
        "display": "Yes",
    }


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_whole_interview_in_the_browser(
    live_app: str, api_key: str, calibration: str
) -> None:
    _require_browser()
    interview = {
        "summary": "A 34-year-old woman with two days of fever, headache and a stiff neck.",
        "age": 34,
        "sex": "female",
        "candidates": CANDIDATES,
        "source": "bank:neurology",
        "answers": ANSWERS,
        "nQuestions": 3,
        "nAnswers": 2,
        "maxQuestions": 3,
        "expectCalibrated": True,
    }
    page = await _run_page(live_app, api_key, interview)

    assert page["problems"] == []
    # Why this question, in words: the rule that counted the sets (no selection calibration
    # in this synthetic one: the model's own sets, said so).
    assert page["whyFirst"].startswith("Policy cip chose the smallest expected set")
    assert "uncalibrated: no selection calibration applies" in page["whyFirst"]
    assert len(page["asked"]) == len(ANSWERS) == len(set(page["asked"]))
    assert page["transcript"] == [f"{q} — {a}" for q, a in zip(page["asked"], ANSWERS, strict=True)]
    # The differential table: every candidate once, the set highlighted, probabilities summing to 1.
    assert sorted(r["cells"][0] for r in page["rows"]) == sorted(CANDIDATES)
    in_set = [r["cells"][0] for r in page["rows"] if r["inSet"]]
    assert in_set and all(r["cells"][3] == ("✓" if r["inSet"] else "") for r in page["rows"])
    total = sum(float(r["cells"][1].rstrip("%")) for r in page["rows"])
    assert total == pytest.approx(100, abs=0.5)
    # The coverage statement of a calibrated set, with what it does and does not cover; a
    # set of every candidate is not shown as authoritative (it narrows nothing).
    full = len(in_set) == len(CANDIDATES)
    assert page["coverageUncalibrated"] is full
    if full:
        assert "Calibrated on 60 cases, but the set is the full list" in page["coverage"]
    else:
        assert "probability ≥ 90.0%, calibrated on 60 cases" in page["coverage"]
    assert "marginally" in page["coverage"] and "not a diagnosis" in page["coverage"]
    assert page["calibrationShown"] and page["plotWidth"] > 0
    assert page["final"].startswith('Final: most probable "') and "Not a diagnosis" in page["final"]
    assert set(in_set) == set(page["final"].split("{")[1].split("}")[0].split(", "))
    assert page["finalizeHidden"] is True
    assert page["bundleType"] == "collection"
    assert page["bundleKinds"] == [
        "QuestionnaireResponse",
        *["Condition"] * len(in_set),
        "RiskAssessment",
    ]

    # The async path: every turn sent with Prefer: respond-async, accepted with 202 and a
    # Location, and the buttons showed the real scoring's progress instead of "Working...".
    assert [t["path"].rsplit("/", 1)[-1] for t in page["turns"]] == ["sessions"] + ["answers"] * 3
    assert all(t["prefer"] == "respond-async" and t["status"] == 202 for t in page["turns"])
    assert all(t["location"].startswith("/v1/turn-jobs/") for t in page["turns"])
    scored = [text for text in page["progressSeen"] if re.search(r"scored \d+ of \d+", text)]
    assert scored, page["progressSeen"]
    assert all("fever" not in text and "stiff" not in text for text in page["progressSeen"])

    async with httpx.AsyncClient(
        base_url=live_app, headers={"Authorization": f"Bearer {api_key}"}
    ) as http:
        session_id = page["downloadName"].removeprefix("pursuit-").removesuffix(".fhir.json")
        detail = (await http.get(f"/v1/sessions/{session_id}")).json()
    assert detail["status"] == "finalized" and detail["calibration_id"] == calibration
    assert [t["answer"] for t in detail["transcript"][: len(ANSWERS)]] == ANSWERS

    _keep_screenshots()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_pages_defaults_interview_and_are_served_by_the_default_calibration(
    live_app: str, api_key: str, default_calibration: str
) -> None:
    """A newcomer types the patient and the candidates and presses Start: the page's
    defaults (the API's) ask a question from the default bank, and the calibration made for
    those defaults serves the set; the demo model is flagged before and after."""
    _require_browser()
    page = await _run_page(
        live_app,
        api_key,
        {
            "summary": "A 34-year-old woman with two days of fever and headache.",
            "candidates": CANDIDATES,
            "answers": ANSWERS[:2],
            "useDefaults": True,
            "expectCalibrated": True,
        },
    )
    assert page["problems"] == []
    assert page["banner"] and page["banner"].startswith("Demo model: ")
    assert page["formHiddenAfterStart"] is True
    assert all(q in named_bank(DEFAULT_BANK) for q in page["asked"])
    assert page["calibrationShown"] and page["plotWidth"] > 0
    async with httpx.AsyncClient(
        base_url=live_app, headers={"Authorization": f"Bearer {api_key}"}
    ) as http:
        session_id = page["downloadName"].removeprefix("pursuit-").removesuffix(".fhir.json")
        detail = (await http.get(f"/v1/sessions/{session_id}")).json()
    assert detail["calibration_id"] == default_calibration
    assert detail["differential"]["calibration_id"] == default_calibration
