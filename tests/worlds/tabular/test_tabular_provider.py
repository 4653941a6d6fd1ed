"""The tabular Bayesian provider: hand-derived posteriors, temperature, answers, Protocol."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.engine import InterviewConfig, Policy, QuestionSource, plan_turn
from app.engine.types import QA, CaseContext, History, PosteriorProvider
from app.errors import InvalidInputError
from app.worlds.tabular import (
    ANSWER_NO,
    ANSWER_UNKNOWN,
    ANSWER_YES,
    NO,
    YES,
    TabularModel,
    TabularProvider,
    parse_answer,
)

CASE = CaseContext(summary="")
LABELS = ("A", "B", "C")
QUESTIONS = ("Is it big?", "Is it red?", "Is it alive?")
# P(yes | class): question 0 separates A from C, question 1 leans the other way, question 2
# says nothing (the same for every class).
P_YES = np.array([[0.9, 0.2, 0.5], [0.5, 0.5, 0.5], [0.1, 0.7, 0.5]])


def model(prior: list[float] | None = None) -> TabularModel:
    return TabularModel(
        name="tiny",
        labels=LABELS,
        questions=QUESTIONS,
        p_yes=P_YES,
        prior=np.full(3, 1 / 3) if prior is None else np.array(prior),
    )


def history(*pairs: tuple[str, str]) -> History:
    return tuple(QA(q, a) for q, a in pairs)


async def posterior(provider: TabularProvider, h: History) -> np.ndarray:
    out = await provider.label_posteriors(case=CASE, histories=[h], inquiry="", labels=LABELS)
    return np.asarray(out[0])


async def test_posterior_is_the_hand_derived_bayes_posterior() -> None:
    # big = yes, red = no: likelihoods A 0.9 * 0.8, B 0.5 * 0.5, C 0.1 * 0.3.
    p = await posterior(
        TabularProvider(model()), history(("Is it big?", "Yes."), ("Is it red?", "No."))
    )
    np.testing.assert_allclose(p, [0.72, 0.25, 0.03], rtol=1e-12)


async def test_the_prior_enters_bayes_rule() -> None:
    p = await posterior(TabularProvider(model([0.5, 0.25, 0.25])), history(("Is it big?", "No.")))
    unnorm = np.array([0.5 * 0.1, 0.25 * 0.5, 0.25 * 0.9])
    np.testing.assert_allclose(p, unnorm / unnorm.sum(), rtol=1e-12)
    assert (
        await posterior(TabularProvider(model([0.5, 0.25, 0.25])), ())
    ).tolist() == pytest.approx([0.5, 0.25, 0.25])


@pytest.mark.parametrize("temperature", [0.25, 0.5, 2.0, 4.0])
async def test_temperature_raises_the_bayes_posterior_to_the_power_one_over_t(
    temperature: float,
) -> None:
    h = history(("Is it big?", "Yes."), ("Is it red?", "No."))
    bayes = np.array([0.72, 0.25, 0.03])
    p = await posterior(TabularProvider(model(), temperature=temperature), h)
    expected = bayes ** (1 / temperature)
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-12)
    entropy_t = -(p * np.log(p)).sum()
    entropy_1 = -(bayes * np.log(bayes)).sum()
    # T < 1 is over-confident (sharper), T > 1 under-confident (flatter); the ranking stays.
    assert (entropy_t < entropy_1) == (temperature < 1)
    assert np.argsort(p).tolist() == np.argsort(bayes).tolist()


async def test_temperature_one_is_plain_bayes_and_knobs_show_in_info() -> None:
    h = history(("Is it big?", "Yes."))
    assert (await posterior(TabularProvider(model(), temperature=1.0), h)) == pytest.approx(
        [0.9 / 1.5, 0.5 / 1.5, 0.1 / 1.5]
    )
    plain, hot = TabularProvider(model()), TabularProvider(model(), temperature=2.0)
    assert plain.info.model == "tabular:tiny:T=1"
    assert hot.info.model == "tabular:tiny:T=2"
    assert plain.info.prompt_version == hot.info.prompt_version  # same table and bank
    other = TabularModel(
        name="tiny", labels=LABELS, questions=QUESTIONS, p_yes=P_YES * 0.99, prior=np.ones(3)
    )
    assert TabularProvider(other).info.prompt_version != plain.info.prompt_version
    biased = TabularProvider(model(), label_bias=[0.0, 1.0, 0.0])
    assert biased.info.model.startswith("tabular:tiny:T=1:bias=")


async def test_label_bias_adds_log_odds_before_tempering() -> None:
    p = await posterior(
        TabularProvider(model(), label_bias=[0.0, np.log(3.0), 0.0], temperature=2.0), ()
    )
    expected = np.array([1.0, 3.0, 1.0]) ** 0.5
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-12)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
async def test_answer_distribution_is_the_tempered_posterior_mixture(temperature: float) -> None:
    provider = TabularProvider(model(), temperature=temperature)
    h = history(("Is it red?", "Yes."))
    p = await posterior(provider, h)
    answers = await provider.simulate_answers(
        case=CASE, history=h, question="Is it big?", labels=(), m=4
    )
    assert [a.text for a in answers] == [YES, NO]
    assert answers[0].weight == pytest.approx(float(p @ P_YES[:, 0]), rel=1e-12)
    assert answers[0].weight + answers[1].weight == pytest.approx(1.0)
    # The posterior after each answer, weighted by the answer distribution, averages back
    # to the current posterior exactly when T = 1 (Bayes is consistent); not otherwise.
    after = [await posterior(provider, (*h, QA("Is it big?", a.text))) for a in answers]
    mixed = sum(a.weight * q for a, q in zip(answers, after, strict=True))
    assert np.allclose(mixed, p, atol=1e-12) == (temperature == 1.0)
    one = await provider.simulate_answers(
        case=CASE, history=h, question="Is it big?", labels=(), m=1
    )
    assert len(one) == 1 and one[0].weight == 1.0


async def test_batch_equals_one_at_a_time() -> None:
    provider = TabularProvider(model(), temperature=0.7)
    rng = np.random.default_rng(0)
    histories = [
        tuple(
            QA(str(rng.choice(QUESTIONS)), str(rng.choice([YES, NO, "unsure"])))
            for _ in range(int(rng.integers(0, 6)))
        )
        for _ in range(40)
    ]
    batch = await provider.label_posteriors(
        case=CASE, histories=histories, inquiry="", labels=LABELS
    )
    single = np.array([await posterior(provider, h) for h in histories])
    assert batch.shape == (40, 3)
    np.testing.assert_allclose(batch, single, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes.", ANSWER_YES),
        ("yes, it is", ANSWER_YES),
        ("  YES", ANSWER_YES),
        ("No.", ANSWER_NO),
        ("no it isn't", ANSWER_NO),
        ("Nope", ANSWER_UNKNOWN),
        ("Not really", ANSWER_UNKNOWN),
        ("I am not sure", ANSWER_UNKNOWN),
        ("", ANSWER_UNKNOWN),
    ],
)
def test_parse_answer(text: str, parsed: int) -> None:
    assert parse_answer(text) == parsed


async def test_unclear_answers_carry_no_information_and_repeats_count_twice() -> None:
    provider = TabularProvider(model())
    assert (await posterior(provider, history(("Is it big?", "maybe")))) == pytest.approx(
        [1 / 3] * 3
    )
    twice = await posterior(provider, history(("Is it big?", YES), ("  is IT big? ", YES)))
    np.testing.assert_allclose(twice, np.array([0.81, 0.25, 0.01]) / 1.07, rtol=1e-12)


async def test_questions_outside_the_bank_and_unknown_labels_are_errors() -> None:
    provider = TabularProvider(model())
    with pytest.raises(InvalidInputError, match="not in the 'tiny' bank"):
        await posterior(provider, history(("Does it fly?", YES)))
    with pytest.raises(InvalidInputError, match="unknown"):
        await provider.label_posteriors(case=CASE, histories=[()], inquiry="", labels=["A", "Z"])
    with pytest.raises(InvalidInputError):
        TabularProvider(model(), temperature=0.0)


async def test_a_subset_of_labels_gets_the_posterior_given_the_subset() -> None:
    provider = TabularProvider(model(), temperature=0.5)
    h = history(("Is it big?", YES), ("Is it red?", NO))
    full = await posterior(provider, h)
    sub = await provider.label_posteriors(case=CASE, histories=[h], inquiry="", labels=["C", "A"])
    np.testing.assert_allclose(sub[0], full[[2, 0]] / full[[2, 0]].sum(), rtol=1e-12)


def test_from_strengths_scales_clips_and_fills_missing() -> None:
    m = TabularModel.from_strengths(
        name="s",
        labels=["x", "y"],
        questions=["q1?", "q2?", "q3?"],
        strengths=[[0.0, 50.0, -1.0], [100.0, 12.5, 99.9999]],
        eps=0.01,
    )
    np.testing.assert_allclose(m.p_yes, [[0.01, 0.5, 0.5], [0.99, 0.125, 0.99]])
    np.testing.assert_allclose(m.prior, [0.5, 0.5])
    with pytest.raises(InvalidInputError):
        TabularModel.from_strengths(
            name="s", labels=["x"], questions=["q?"], strengths=[[1.0, 2.0]]
        )


async def test_propose_questions_returns_unasked_bank_questions() -> None:
    provider = TabularProvider(model())
    asked = history(("is it big?", YES))
    proposed = await provider.propose_questions(
        case=CASE, history=asked, inquiry="", labels=LABELS, n=5
    )
    assert proposed == ["Is it red?", "Is it alive?"]


@pytest.mark.parametrize("policy", [Policy.CIP, Policy.IP])
async def test_plan_turn_drives_the_provider_through_the_protocol(policy: Policy) -> None:
    provider: PosteriorProvider = TabularProvider(model())
    config = InterviewConfig(
        policy=policy,
        alpha=0.1,
        max_questions=3,
        question_source=QuestionSource.BANK,
        bank=QUESTIONS,
        n_answers=2,
    )
    turn = await plan_turn(
        provider=provider,
        case=CASE,
        history=(),
        inquiry="Which one?",
        labels=LABELS,
        config=config,
        thresholds=None,
        rng=np.random.default_rng(0),
    )
    # "Is it big?" separates A from C; "Is it alive?" is the same for every class.
    assert turn.next_question == "Is it big?"
    assert turn.candidates[-1].question == "Is it alive?"
    assert turn.candidates[-1].expected_entropy == pytest.approx(np.log(3))
    assert turn.differential.posterior == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert turn.posterior_evaluations == 1 + 3 * 2


async def test_many_histories_are_fast() -> None:
    bank = tuple(f"Question {a}?" for a in range(85))
    rng = np.random.default_rng(1)
    big = TabularModel(
        name="big",
        labels=tuple(f"L{k}" for k in range(20)),
        questions=bank,
        p_yes=rng.uniform(0.01, 0.99, (20, 85)),
        prior=np.ones(20),
    )
    provider = TabularProvider(big)
    histories = [
        tuple(QA(bank[int(a)], YES if rng.random() < 0.5 else NO) for a in rng.permutation(85)[:20])
        for _ in range(5000)
    ]
    started = time.perf_counter()
    out = await provider.label_posteriors(
        case=CASE, histories=histories, inquiry="", labels=big.labels
    )
    assert out.shape == (5000, 20)
    assert time.perf_counter() - started < 5.0  # about 0.2 s on a slow core
