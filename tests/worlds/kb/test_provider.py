"""The HPO provider the service can serve: candidates by id or name, posteriors that follow
the answers, questions on the candidates' terms, answer weights that sum to 1, and an
interview through the sessions API with no LLM."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from app.engine.types import QA, CaseContext
from app.errors import InvalidInputError
from app.main import create_app
from app.settings import Settings
from app.worlds.kb.hpo import HpoKb
from app.worlds.kb.provider import HpoProvider
from app.worlds.tabular import ANSWER_NO, ANSWER_UNKNOWN, ANSWER_YES, parse_answer
from tests.conftest import make_key, open_client

CASE = CaseContext(summary="A child with tall stature and lens dislocation.")
# Marfan syndrome (by id), Homocystinuria (by name), Ehlers-Danlos classic type 1 (by label).
MARFAN, EDS = "OMIM:154700", "OMIM:130000"


@pytest.fixture(scope="module")
def provider(hpo: HpoKb) -> HpoProvider:
    return HpoProvider(hpo)


def _labels(hpo: HpoKb) -> list[str]:
    marfan, eds = hpo.disease(MARFAN), hpo.disease(EDS)
    other = next(d for d in hpo.diseases if d.id.startswith("ORPHA") and len(d.direct) > 10)
    return [marfan.id, eds.name, other.label]


async def test_posteriors_follow_an_answer_on_a_discriminating_term(
    provider: HpoProvider, hpo: HpoKb
) -> None:
    labels = _labels(hpo)
    model = provider.model(labels)
    assert model.labels == tuple(labels)
    proposed = await provider.propose_questions(
        case=CASE, history=(), inquiry="Which disease?", labels=labels, n=5
    )
    assert len(proposed) == 5 and len(set(proposed)) == 5
    # A term annotated to the first candidate only: "yes" raises it, "no" lowers it.
    a = next(
        a
        for a in range(len(model.questions))
        if model.p_yes[0, a] > 0.5 and (model.p_yes[1:, a] < 0.5).all()
    )
    q = model.questions[a]
    rows = await provider.label_posteriors(
        case=CASE,
        histories=[(), (QA(q, "Yes."),), (QA(q, "No."),), (QA(q, "Not sure"),)],
        inquiry="Which disease?",
        labels=labels,
    )
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(rows[0], 1 / 3)
    assert rows[1, 0] > rows[0, 0] > rows[2, 0]
    np.testing.assert_allclose(rows[3], rows[0])  # "unsure" carries nothing
    later = await provider.propose_questions(
        case=CASE, history=((QA(q, "Yes."),)), inquiry="", labels=labels, n=400
    )
    assert q not in later


async def test_answer_weights_are_a_distribution_that_moves_with_the_history(
    provider: HpoProvider, hpo: HpoKb
) -> None:
    labels = _labels(hpo)
    q0, q1 = provider.model(labels).questions[:2]
    before = await provider.simulate_answers(case=CASE, history=(), question=q1, labels=labels, m=2)
    after = await provider.simulate_answers(
        case=CASE, history=(QA(q0, "Yes."),), question=q1, labels=labels, m=2
    )
    for answers in (before, after):
        assert [a.text for a in answers] == ["Yes.", "No."]
        assert abs(sum(a.weight for a in answers) - 1.0) < 1e-12
        assert 0 < answers[0].weight < 1
    assert before[0].weight != after[0].weight


async def test_answer_weights_are_the_predictive_of_the_posterior_the_session_shows(
    provider: HpoProvider, hpo: HpoKb
) -> None:
    """ "Yes" weighs sum_d p(d | h) P(yes | d, q) under the candidates' own naive Bayes, not
    under every disease of the knowledge base (where most terms look like background
    findings and "no" took about 0.95 of the weight, so sessions stopped for "no gain")."""
    labels = _labels(hpo)
    model = provider.model(labels)
    history = (QA(model.questions[0], "Yes."),)
    (posterior,) = await provider.label_posteriors(
        case=CASE, histories=[history], inquiry="Which disease?", labels=labels
    )
    for a, question in enumerate(model.questions[1:30], start=1):
        answers = await provider.simulate_answers(
            case=CASE, history=history, question=question, labels=labels, m=2
        )
        assert answers[0].weight == pytest.approx(float(posterior @ model.p_yes[:, a]), rel=1e-9)
    # A term annotated to one of the three candidates only, before any answer: about
    # (0.8 + 2 x 0.05) / 3 = 0.3 under the candidates' model.
    a = next(a for a in range(len(model.questions)) if (model.p_yes[:, a] > 0.5).sum() == 1)
    (yes, _) = await provider.simulate_answers(
        case=CASE, history=(), question=model.questions[a], labels=labels, m=2
    )
    assert yes.weight == pytest.approx(0.3)


async def test_unknown_or_duplicate_candidates_and_foreign_questions_are_invalid(
    provider: HpoProvider, hpo: HpoKb
) -> None:
    with pytest.raises(InvalidInputError, match="OMIM or Orphanet"):
        provider.model(["OMIM:154700", "Not a disease at all"])
    marfan = hpo.disease(MARFAN)
    with pytest.raises(InvalidInputError, match="same disease"):
        provider.model([marfan.id, marfan.name])
    with pytest.raises(InvalidInputError, match="HPO term"):
        await provider.simulate_answers(
            case=CASE, history=(), question="Do you like jazz?", labels=[marfan.id, EDS], m=2
        )


async def test_its_questions_offer_yes_no_unsure(provider: HpoProvider, hpo: HpoKb) -> None:
    labels = _labels(hpo)
    (question,) = await provider.propose_questions(
        case=CaseContext(summary="x"), history=(), inquiry="?", labels=labels, n=1
    )
    options = provider.answer_options(question)
    assert options is not None
    assert [(o.code, o.display) for o in options] == [
        ("yes", "Yes"),
        ("no", "No"),
        ("unsure", "Unsure"),
    ]
    # Each display reads as its answer: yes, no, and no information.
    assert [parse_answer(o.display) for o in options] == [ANSWER_YES, ANSWER_NO, ANSWER_UNKNOWN]
    assert provider.answer_options("What brings you in today?") is None


def test_info_names_the_release_for_calibrations(provider: HpoProvider) -> None:
    info = provider.info
    assert info.model == "hpo:2025-11-24:sens=0.8:bg=0.05:terms=300"
    assert "Human Phenotype Ontology" in info.extra["attribution"]


@pytest.fixture
async def hpo_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    hpo_settings = settings.model_copy(update={"provider": "hpo"})
    key = await make_key(hpo_settings, tenant="clinic-a")
    async for client in open_client(create_app(hpo_settings), api_key=key):
        yield client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_rare_disease_interview_through_the_api_with_no_llm(
    hpo_client: httpx.AsyncClient, hpo: HpoKb
) -> None:
    labels = _labels(hpo)
    body = {
        "patient": {"summary": "A child with tall stature.", "age": 9},
        "inquiry": "Which disease does the patient have?",
        "candidates": labels,
        "policy": "ip",
        "question_source": "generated",
        "max_questions": 2,
    }
    response = await hpo_client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["next_question"]["text"].startswith("Does the patient have ")
    # The knowledge base's questions are yes / no / unsure by nature.
    assert [o["code"] for o in session["next_question"]["answer_options"]] == [
        "yes",
        "no",
        "unsure",
    ]
    assert {x["label"] for x in session["differential"]["all_labels"]} == set(labels)
    answered = await hpo_client.post(
        f"/v1/sessions/{session['id']}/answers",
        json={"question_id": session["next_question"]["id"], "option": "yes"},
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["step"] == 1
    detail = (await hpo_client.get(f"/v1/sessions/{session['id']}")).json()
    assert detail["transcript"][0]["answer"] == "Yes"  # read as "yes" by its first word
    bad = await hpo_client.post("/v1/sessions", json={**body, "candidates": ["x", "y"]})
    assert bad.status_code in (400, 422), bad.text
