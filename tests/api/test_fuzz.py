"""Schemathesis fuzzing of the whole HTTP API, from the OpenAPI document the app serves.

Three passes, each seeded and derandomized so that a CI failure reproduces locally:

- every operation: Schemathesis' example, coverage and fuzzing phases, valid and invalid
  inputs, with an all-scopes API key so requests reach the handlers;
- stateful: chains of calls along the document's links (open a session, answer its current
  question with its ETag, read it, finalize, erase, the calibration behind it...);
- without a key, or with a bad one: a 401 problem, except on the public probes.

Every response must be no 5xx, with the status code, content type, headers and body the
document declares for it. The posterior provider is scripted: this targets the HTTP layer, not
the model. The number of cases that ran is reported at the end of the module, and each pass
fails if it ran fewer than its floor.
"""

from __future__ import annotations

import copy
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import numpy.typing as npt
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.python.asgi import shutdown_lifespans

from app.engine.types import CaseContext, History, WeightedAnswer
from app.main import create_app
from app.settings import Settings
from tests.conftest import REDIS_URL, _truncate, make_key
from tests.engine.scripted import ScriptedProvider

SEED = 20_251_129
MAX_EXAMPLES = 10  # per operation in the fuzzing phase (the coverage phase adds its own)
STATEFUL_SCENARIOS = 25
STATEFUL_STEPS = 8
AUTH_EXAMPLES = 2  # per operation and per missing or bad credential
# Floors: fewer cases than this means the pass silently stopped testing.
MIN_CASES_PER_OPERATION = 5
MIN_STATEFUL_CALLS = 50
# /fhir/metadata: FHIR clients read the CapabilityStatement before they have a key.
PUBLIC = frozenset({"GET /healthz", "GET /readyz", "GET /metrics", "GET /fhir/metadata"})
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def _config() -> SchemathesisConfig:
    # Not positive_data_acceptance: some valid-looking bodies are refused on purpose (a bank
    # source without a bank, candidates equal up to case). Not negative_data_rejection: lax
    # coercions (0 for false, a number for a date-time) are accepted, as pydantic does.
    checks: dict[str, Any] = {"enabled": False}
    checks.update({name: {"enabled": True} for name in CHECKS})
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],  # a loaded CI machine is slow, not wrong
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": checks,
            # Chains need sessions that open: invalid inputs are the other passes' job.
            "phases": {"stateful": {"generation": {"mode": "positive"}}},
        }
    )


def _document() -> dict[str, Any]:
    # Building the app opens nothing (see app.main); the fixture's app serves the same document.
    return create_app(Settings(data_dir=Path("unused"))).openapi()


schema = schemathesis.openapi.from_dict(_document(), config=_config())


def _with_links(document: dict[str, Any]) -> dict[str, Any]:
    """Add the links Schemathesis cannot infer from names: the current question and the ETag.

    It infers the rest (a session's id to read, answer, finalize or erase it; its calibration).
    """
    document = copy.deepcopy(document)
    turn = {
        "path.session_id": "$response.body#/id",
        "header.if-match": "$response.header.ETag",
    }
    links = {
        "AnswerTheCurrentQuestion": {
            "operationRef": "#/paths/~1v1~1sessions~1{session_id}~1answers/post",
            "parameters": turn,
            "requestBody": {"question_id": "$response.body#/next_question/id"},
        },
        "FinalizeThisVersion": {
            "operationRef": "#/paths/~1v1~1sessions~1{session_id}~1finalize/post",
            "parameters": turn,
        },
    }
    paths = document["paths"]
    # Chains run synchronous turns: an async turn's 202 (a job, answered later) would feed the
    # chain ids that exist only once it is done. tests/api/test_async_turns.py covers those.
    for operation in (
        paths["/v1/sessions"]["post"],
        paths["/v1/sessions/{session_id}/answers"]["post"],
    ):
        operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "prefer"]
        del operation["responses"]["202"]
    # Chains answer as text: the schema cannot say "answer or option, exactly one", so
    # generated bodies with both or neither are 422s that end every chain at its first answer.
    # Answers by option are tests/fhir/test_answer_options.py's and the API tests'.
    answer = document["components"]["schemas"]["AnswerIn"]
    answer["properties"].pop("option")
    answer["properties"]["answer"] = answer["properties"]["answer"]["anyOf"][0]
    answer["required"] = ["question_id", "answer"]
    answer["examples"] = [e for e in answer["examples"] if "answer" in e]
    for response in (
        paths["/v1/sessions"]["post"]["responses"]["201"],
        paths["/v1/sessions/{session_id}/answers"]["post"]["responses"]["200"],
    ):
        response.setdefault("links", {}).update(links)
    return document


class AnyLabelsProvider(ScriptedProvider):
    """Scripted questions and answers, and a posterior for however many candidates are sent:
    a fixed pseudo-random one per history, so that answers move it and sessions go on."""

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        rows = [
            np.random.default_rng(zlib.crc32(repr(history).encode())).dirichlet(
                np.full(len(labels), 0.5)
            )
            for history in histories
        ]
        return np.array(rows, dtype=np.float64)


def _proposals(history: History) -> list[str]:
    return [f"Question {i}?" for i in range(len(history), len(history) + 16)]


@pytest.fixture(scope="module")
async def fuzz_settings(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    """PostgreSQL: what production runs, and stricter than SQLite about what it stores."""
    yield Settings(
        database_url=postgres_url,
        redis_url=REDIS_URL,
        data_dir=tmp_path_factory.mktemp("fuzz"),
        llm_base_url=None,
        llm_model=None,
        rate_limit_per_minute=1_000_000,  # thousands of requests a minute from one key
    )
    await _truncate(postgres_url)


@pytest.fixture(scope="module")
async def auth(fuzz_settings: Settings) -> dict[str, str]:
    key = await make_key(fuzz_settings, tenant="clinic-fuzz")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings) -> Iterator[FastAPI]:
    """The app under test; Schemathesis runs it, lifespan included, in its own event loop."""
    provider = AnyLabelsProvider(
        table={(): [1.0]},
        default_answers=(WeightedAnswer("yes", 0.5), WeightedAnswer("no", 0.5)),
        proposals=_proposals,
    )
    app = create_app(fuzz_settings, provider=provider)
    try:
        yield app
    finally:
        shutdown_lifespans()


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Iterator[Counter[str]]:
    """Cases run per pass and operation, written to the terminal at the end (with or without -s)."""
    counts: Counter[str] = Counter()
    yield counts
    lines = [f"{n:6d}  {label}" for label, n in sorted(counts.items())]
    lines.append(f"{counts.total():6d}  cases in all")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.line("")  # -q writes no path, so ensure_newline has nothing to end
        reporter.write_sep("-", "schemathesis fuzz cases")
        for line in lines:
            reporter.write_line(line)


@pytest.fixture
def operation_floor(request: pytest.FixtureRequest, report: Counter[str]) -> Iterator[None]:
    """After one operation's run: at least MIN_CASES_PER_OPERATION of its cases ran."""
    yield
    label = "stateless " + request.node.name.partition("[")[2].rstrip("]")
    ran = report[label]
    assert ran >= MIN_CASES_PER_OPERATION, f"{label}: only {ran} cases ran"


def test_the_app_serves_the_document_under_test(fuzz_app: FastAPI) -> None:
    assert fuzz_app.openapi() == schema.raw_schema


@schema.parametrize()
@pytest.mark.usefixtures("operation_floor")
def test_every_operation(
    case: Case[Any], fuzz_app: FastAPI, auth: dict[str, str], report: Counter[str]
) -> None:
    report["stateless " + case.operation.label] += 1
    case.call_and_validate(app=fuzz_app, headers=auth)


@pytest.mark.parametrize(
    ("workflow", "paths", "goal"),
    [
        # Open a session, answer its current question (with its ETag), read, finalize, erase.
        ("interview", "^/v1/sessions", ("POST /v1/sessions/{session_id}/answers", 200)),
        # Queue a run, read it, try to activate, resume or plot it before a worker ran it.
        ("calibrations", "^/v1/calibrations", ("GET /v1/calibrations/{calibration_id}", 200)),
    ],
)
def test_stateful_links(
    fuzz_app: FastAPI,
    auth: dict[str, str],
    report: Counter[str],
    workflow: str,
    paths: str,
    goal: tuple[str, int],
) -> None:
    linked = schemathesis.openapi.from_dict(_with_links(_document()), config=_config())
    calls: Counter[tuple[str, int]] = Counter()

    class Workflow(linked.include(path_regex=paths).as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"app": fuzz_app, "headers": auth}

        def after_call(self, response: Response, case: Case[Any]) -> None:
            super().after_call(response, case)
            calls[case.operation.label, response.status_code] += 1

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    for (label, _), n in calls.items():
        report[f"stateful {workflow}: {label}"] += n
    assert calls.total() >= MIN_STATEFUL_CALLS, calls
    # The links were followed, not only the chains' first calls made.
    assert calls[goal] > 0, calls


@pytest.mark.parametrize(
    ("name", "credentials"),
    [
        ("no key", {}),
        ("unknown key", {"Authorization": "Bearer not-a-key"}),
        ("not bearer", {"Authorization": "Basic dXNlcjpwYXNz"}),
    ],
)
def test_without_a_valid_key_only_the_probes_answer(
    fuzz_app: FastAPI, name: str, credentials: dict[str, str], report: Counter[str]
) -> None:
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert {op.label for op in operations} >= PUBLIC
    ran = 0
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=AUTH_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def refused(case: Case[Any]) -> None:
            nonlocal ran
            ran += 1
            response = case.call_and_validate(app=fuzz_app, headers=credentials)
            if case.operation.label in PUBLIC:
                assert response.status_code != 401, case.operation.label
            else:
                assert response.status_code == 401, (case.operation.label, response.text)
                assert response.headers["content-type"] == ["application/problem+json"]
                assert response.headers["www-authenticate"] == ['Bearer realm="pursuit"']

        refused()
    report[f"auth, {name}: every operation"] = ran
    assert ran >= len(operations), ran
