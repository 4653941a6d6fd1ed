"""What a first user meets: one set of defaults, the demo-model banner, stop reasons and ties
in words, calibration quality in the differential, set sizes for the session's candidates."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from app.api.page import STATIC_DIR
from app.calibrations.plots import step_summaries
from app.calibrations.results import calibration_result
from app.calibrations.schemas import CalibrationCreate
from app.engine.policy import DEFAULT_BANK, QuestionPolicy
from app.llm.demo import MODELS, demo_model_note
from app.main import create_app
from app.sessions.replies import STOP_NOTES
from app.sessions.schemas import SessionCreate
from app.settings import Settings
from tests.conftest import insert_calibration, make_key, open_client
from tests.engine.scripted import ScriptedProvider

LABELS = ["Meningitis", "Migraine", "Influenza", "Sinusitis"]
BASE = {
    "patient": {"summary": "fever and headache"},
    "inquiry": "What is the most likely diagnosis?",
    "candidates": LABELS,
}


class _Form(HTMLParser):
    """The start form's inputs: id -> value (checkboxes: checked; selects: the selected)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("id"):
            checkbox = a.get("type") == "checkbox"
            self.values[a["id"] or ""] = "checked" in a if checkbox else a.get("value")
        elif tag == "select":
            self._select = a.get("id")
        elif (
            tag == "option"
            and self._select is not None
            and ("selected" in a or self._select not in self.values)
        ):
            self.values[self._select] = a.get("value")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def test_the_page_starts_from_the_apis_defaults_which_are_the_calibrations() -> None:
    form = _Form()
    form.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    session = SessionCreate.model_fields
    policy = QuestionPolicy.build()
    assert form.values["source"] == f"{policy.question_source.value}:{DEFAULT_BANK}"
    assert policy.question_bank_name == DEFAULT_BANK
    assert form.values["policy"] == policy.policy.value
    assert float(form.values["alpha"]) == policy.alpha
    assert int(form.values["n-questions"]) == policy.n_candidate_questions
    assert int(form.values["n-answers"]) == policy.n_answers
    assert int(form.values["max-questions"]) == session["max_questions"].default
    assert form.values["stop-on-no-gain"] is session["stop_on_no_gain"].default is False
    # A calibration run with no options is made for exactly that policy and budget.
    run = CalibrationCreate.model_validate({"dataset": "imedqa_dev"})
    assert QuestionPolicy.from_json(run.model_dump()) == policy
    assert run.max_questions == session["max_questions"].default


@pytest.mark.parametrize(
    "sent",
    [{}, {"question_source": "bank"}, {"question_bank_name": None, "question_bank": None}],
)
def test_a_bank_left_out_or_sent_as_null_is_the_default_bank(sent: dict[str, Any]) -> None:
    assert SessionCreate.model_validate({**BASE, **sent}).question_bank_name == DEFAULT_BANK
    generated = SessionCreate.model_validate({**BASE, **sent, "question_source": "generated"})
    assert generated.question_bank_name is None
    own = SessionCreate.model_validate({**BASE, **sent, "question_bank": ["Any fever?"]})
    assert own.question_bank_name is None and own.question_bank == ("Any fever?",)


@pytest.mark.parametrize("model", [MODELS["smollm2"].served_name, "meta-llama/Llama-3.1-8B", None])
async def test_the_page_flags_the_demo_model_before_the_first_request(
    settings: Settings, model: str | None
) -> None:
    configured = settings.model_copy(update={"llm_model": model})
    async for client in open_client(create_app(configured, provider=_flat())):
        page = (await client.get("/")).text
    note = demo_model_note(model)
    if note is None:
        assert '<p id="model-banner" class="banner" hidden></p>' in page
    else:
        assert '<p id="model-banner" class="banner">Demo model: ' in page
        assert "PURSUIT_LLM_BASE_URL" in note


def _flat() -> ScriptedProvider:
    """A model whose answers never move it: every candidate question ties on everything."""
    return ScriptedProvider(table={(): [0.4, 0.3, 0.2, 0.1]}, proposals=["A?", "B?", "C?"])


@pytest.fixture
async def flat_client(settings: Settings) -> Any:
    key = await make_key(settings, tenant="clinic-a")
    async for client in open_client(create_app(settings, provider=_flat()), api_key=key):
        yield client


async def test_a_tie_on_everything_is_said_and_stop_reasons_come_in_words(
    flat_client: httpx.AsyncClient,
) -> None:
    body = {**BASE, "question_source": "generated", "n_candidate_questions": 3}
    created = (await flat_client.post("/v1/sessions", json={**body, "max_questions": 1})).json()
    question = created["next_question"]
    assert question["candidates_scored"] == 3 and question["tied"] == 2
    assert question["tie_break"] == "candidate_order"
    assert created["stop_note"] is None and created["model_note"] is None
    answered = await flat_client.post(
        f"/v1/sessions/{created['id']}/answers",
        json={"question_id": question["id"], "answer": "no"},
    )
    stopped = answered.json()
    assert stopped["stop_reason"] == "budget" and stopped["stop_note"] == STOP_NOTES["budget"]
    final = (await flat_client.post(f"/v1/sessions/{created['id']}/finalize")).json()
    assert final["stop_reason"] == "budget" and final["stop_note"] == STOP_NOTES["budget"]


@pytest.mark.parametrize(
    ("tau", "n", "trivial"),
    [(0.7, 40, False), (1.0, 40, True), (math.inf, 5, True)],
)
async def test_the_differential_says_when_a_calibration_cannot_narrow_anything(
    flat_client: httpx.AsyncClient,
    settings: Settings,
    tau: float,
    n: int,
    trivial: bool,
) -> None:
    result = calibration_result(
        thresholds=[tau, tau], scores=[[0.5] * n] * 2, alpha=0.1, step_alpha=0.1, n_per_step=[n] * 2
    )
    params = {
        **QuestionPolicy.build(question_source="generated", n_candidate_questions=3).to_json()
    }
    await insert_calibration(settings, result=result, params=params)
    body = {**BASE, "question_source": "generated", "n_candidate_questions": 3}
    d = (await flat_client.post("/v1/sessions", json=body)).json()["differential"]
    assert d["calibrated"] is True and d["calibration_n"] == n
    assert d["trivial"] is trivial and d["min_calibration_n"] == 9
    if trivial:
        assert d["set_size"] == len(LABELS)
        assert "says nothing" in d["guarantee"]
    else:
        assert d["set_size"] < len(LABELS)


def test_the_plot_counts_set_sizes_against_the_sessions_candidates() -> None:
    result = calibration_result(
        thresholds=[0.95, 0.6, math.inf],
        scores=[[0.5] * 20] * 3,
        alpha=0.1,
        step_alpha=0.1,
        n_per_step=[20] * 3,
    )
    bound = [s.max_set_size for s in step_summaries(result)]
    capped = [s.max_set_size for s in step_summaries(result, candidates=4)]
    assert bound == [20, 2, None]  # floor(1 / (1 - tau)): 20 labels could pass 0.05
    assert capped == [None, 2, None]  # but only 4 exist: "every candidate"
