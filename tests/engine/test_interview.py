"""plan_turn / run_interview against a scripted provider: choices, stop rules, batching."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest

from app.engine import (
    AnswerSource,
    InterviewConfig,
    Objective,
    Policy,
    QuestionSource,
    StepwiseThresholds,
    StopReason,
    TurnOutcome,
    plan_turn,
    run_interview,
)
from app.engine.types import QA, AnswerDraw, History, WeightedAnswer
from app.errors import InvalidInputError, UpstreamBadOutputError
from tests.engine.scripted import CASE, INQUIRY, LABELS, Key, ScriptedProvider

ALPHA = 0.1
UNIFORM = [0.25, 0.25, 0.25, 0.25]
YES_NO = [WeightedAnswer("yes", 0.5), WeightedAnswer("no", 0.5)]
# Selection thresholds tau = 0.75 at every step: a label is in the set iff p >= 0.25.
TAU = 0.75
SELECT = StepwiseThresholds(alpha=ALPHA, thresholds=(TAU,) * 6)

# QA splits the labels in halves, QB nails A on "yes" and says little on "no",
# QC/QD both halve the set; QD's halves are more peaked (lower entropy). QE nails A on
# "yes" and halves the set on "no": a smaller expected set than QD, but a higher entropy.
TABLE: dict[Key, list[float]] = {
    (): UNIFORM,
    (("QA", "yes"),): [0.6, 0.4, 0.0, 0.0],
    (("QA", "no"),): [0.0, 0.0, 0.6, 0.4],
    (("QB", "yes"),): [0.8, 0.1, 0.05, 0.05],
    (("QB", "no"),): [0.26, 0.26, 0.24, 0.24],
    (("QC", "yes"),): [0.5, 0.5, 0.0, 0.0],
    (("QC", "no"),): [0.0, 0.0, 0.5, 0.5],
    (("QD", "yes"),): [0.7, 0.3, 0.0, 0.0],
    (("QD", "no"),): [0.0, 0.0, 0.7, 0.3],
    (("QE", "yes"),): [0.9, 0.05, 0.03, 0.02],
    (("QE", "no"),): [0.45, 0.45, 0.1, 0.0],
}


def provider(proposals: Sequence[str] = (), **kw: object) -> ScriptedProvider:
    table = kw.pop("table", TABLE)
    answers = kw.pop("answers", dict.fromkeys(("QA", "QB", "QC", "QD", "QE"), YES_NO))
    return ScriptedProvider(table=table, answers=answers, proposals=proposals, **kw)  # type: ignore[arg-type]


def shannon(p: Sequence[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def nominal_size(p: Sequence[float], alpha: float) -> int:
    target, mass = 1 - Fraction(repr(alpha)), Fraction(0)
    for size, x in enumerate(sorted(p, reverse=True), start=1):
        mass += Fraction(repr(float(x)))
        if mass >= target:
            return size
    return len(p)


def set_size(p: Sequence[float], tau: float | None) -> int:
    return nominal_size(p, ALPHA) if tau is None else sum(1 for x in p if 1 - x <= tau)


def expected(
    prov: ScriptedProvider, question: str, tau: float | None, history: History = ()
) -> tuple[float, float]:
    """(expected set size, expected entropy) from the scripted tables, by plain loops."""
    size = ent = 0.0
    for a in prov.answers.get(question, prov.default_answers):
        p = prov.posterior((*history, QA(question, a.text))).tolist()
        size += a.weight * set_size(p, tau)
        ent += a.weight * shannon(p)
    return size, ent


async def turn(
    prov: ScriptedProvider,
    config: InterviewConfig,
    *,
    history: History = (),
    thresholds: StepwiseThresholds | None = None,
    selection: StepwiseThresholds | None = SELECT,
    asked: Sequence[str] = (),
    seed: int = 0,
) -> TurnOutcome:
    return await plan_turn(
        provider=prov,
        case=CASE,
        history=history,
        inquiry=INQUIRY,
        labels=LABELS,
        config=config,
        thresholds=thresholds,
        rng=np.random.default_rng(seed),
        asked=asked,
        selection_thresholds=selection,
    )


# --- choices -------------------------------------------------------------------------


@pytest.mark.parametrize("selection", [SELECT, None], ids=["calibrated", "nominal"])
async def test_cip_and_ip_disagree_and_each_picks_its_own(
    selection: StepwiseThresholds | None,
) -> None:
    tau = None if selection is None else TAU
    prov = provider(["QD", "QE"])
    size_d, ent_d = expected(prov, "QD", tau)
    size_e, ent_e = expected(prov, "QE", tau)
    cip_pick = "QD" if size_d < size_e else "QE"
    ip_pick = "QD" if ent_d < ent_e else "QE"
    assert size_d != size_e and cip_pick != ip_pick  # the scenario really separates them

    cip = await turn(prov, InterviewConfig(policy=Policy.CIP), selection=selection)
    ip = await turn(prov, InterviewConfig(policy=Policy.IP), selection=selection)

    assert cip.next_question == cip_pick
    assert ip.next_question == ip_pick
    assert cip.rationale is not None and cip.rationale.selection_rule == (
        "calibrated" if tau is not None else "nominal"
    )
    want = {"QD": (size_d, ent_d), "QE": (size_e, ent_e)}
    for c in cip.candidates:
        assert (c.expected_set_size, c.expected_entropy) == pytest.approx(want[c.question])
    assert [c.question for c in cip.rationale.runner_ups] == [ip_pick]


async def test_cip_breaks_set_size_ties_by_expected_entropy() -> None:
    prov = provider(["QC", "QD"])  # QC comes first, so index order alone would pick it
    size_c, ent_c = expected(prov, "QC", TAU)
    size_d, ent_d = expected(prov, "QD", TAU)
    assert size_c == size_d and ent_d < ent_c

    out = await turn(prov, InterviewConfig(policy=Policy.CIP))

    assert out.next_question == "QD"
    assert [c.question for c in out.candidates] == ["QD", "QC"]


async def test_ip_picks_the_lowest_expected_entropy() -> None:
    questions = ["QB", "QC", "QA", "QD"]
    prov = provider(questions)
    entropies = {q: expected(prov, q, TAU)[1] for q in questions}

    out = await turn(prov, InterviewConfig(policy=Policy.IP))

    assert out.next_question == min(entropies, key=entropies.__getitem__)
    ranked = [c.expected_entropy for c in out.candidates]
    assert ranked == sorted(ranked)
    assert ranked == pytest.approx(sorted(entropies.values()))


async def _random_run(seed: int, bank: tuple[str, ...]) -> tuple[str, ...]:
    prov = provider(table={(): UNIFORM})
    config = InterviewConfig(
        policy=Policy.RANDOM,
        question_source=QuestionSource.BANK,
        bank=bank,
        max_questions=20,
        stop_on_singleton=False,
        stop_on_no_gain=False,
    )

    async def patient(question: str) -> str:
        return "unsure"

    traj = await run_interview(
        provider=prov,
        case=CASE,
        inquiry=INQUIRY,
        labels=LABELS,
        config=config,
        thresholds=None,
        answer_fn=patient,
        rng=np.random.default_rng(seed),
    )
    assert traj.stop_reason is StopReason.EXHAUSTED
    # Only the chosen question is simulated (explain_baselines), once per asked question.
    assert prov.simulate_calls == [qa.question for qa in traj.history]
    return tuple(qa.question for qa in traj.history)


async def test_random_is_seeded_reproducible_and_never_repeats() -> None:
    bank = tuple(f"Question {i}?" for i in range(6))
    first = await _random_run(7, bank)
    assert first == await _random_run(7, bank)
    assert sorted(first) == sorted(bank)  # every question once, none twice
    orders = {await _random_run(seed, bank) for seed in range(8)}
    assert len(orders) > 1


async def test_fixed_follows_bank_order_skipping_asked() -> None:
    bank = ("Any fever?", "Any cough?", "Any rash?", "Any pain?")
    prov = provider(table={(): UNIFORM})
    config = InterviewConfig(
        policy=Policy.FIXED, question_source=QuestionSource.BANK, bank=bank, stop_on_singleton=False
    )
    history = (QA("  ANY   fever? ", "no"),)

    out = await turn(prov, config, history=history, asked=["any COUGH?"])

    assert out.next_question == "Any rash?"
    assert out.candidates_considered == 2


async def test_fixed_without_explanation_scores_only_the_bare_history() -> None:
    bank = ("Any fever?", "Any cough?")
    prov = provider(table={(): UNIFORM})
    config = InterviewConfig(
        policy="fixed",  # type: ignore[arg-type]  # plain strings are coerced
        question_source="bank",  # type: ignore[arg-type]
        bank=bank,
        explain_baselines=False,
    )

    out = await turn(prov, config)

    assert out.next_question == "Any fever?" and out.rationale is None
    assert prov.simulate_calls == [] and prov.posterior_calls == [[()]]


async def test_policy_none_stops_at_once_with_a_direct_prediction() -> None:
    prov = provider(["QA", "QB"])

    out = await turn(prov, InterviewConfig(policy=Policy.NONE))

    assert out.should_stop and out.stop_reason is StopReason.POLICY_NONE
    assert out.next_question is None and out.step == 0
    assert prov.posterior_calls == [[()]]
    assert prov.propose_calls == [] and prov.simulate_calls == []
    assert out.differential.posterior == pytest.approx(UNIFORM)


# --- stop rules ------------------------------------------------------------------------

PEAKED = [0.95, 0.03, 0.01, 0.01]


async def test_singleton_stops_on_a_one_label_set() -> None:
    table = {**TABLE, (): PEAKED}
    assert nominal_size(PEAKED, ALPHA) == 1
    out = await turn(provider(["QA", "QB"], table=table), InterviewConfig())
    assert out.stop_reason is StopReason.SINGLETON and out.differential.members == ("A",)


async def test_singleton_uses_the_displayed_calibrated_set() -> None:
    # Nominal set of PEAKED has one label, but the calibrated set at tau = 0.98 has two.
    table = {**TABLE, (): PEAKED}
    shown = StepwiseThresholds(alpha=ALPHA, thresholds=(0.98,) * 3)
    assert set_size(PEAKED, 0.98) == 2
    out = await turn(provider(["QA", "QB"], table=table), InterviewConfig(), thresholds=shown)
    assert out.stop_reason is not StopReason.SINGLETON
    assert out.differential.calibrated and out.differential.set_size == 2


async def test_without_singleton_rule_a_one_label_set_does_not_stop() -> None:
    table = {**TABLE, (): PEAKED}
    prov = provider(["QA", "QB"], table=table)
    # The current nominal set has 1 label and no question can beat that: no_gain.
    out = await turn(prov, InterviewConfig(stop_on_singleton=False), selection=None)
    assert out.stop_reason is StopReason.NO_GAIN
    out = await turn(
        prov, InterviewConfig(stop_on_singleton=False, stop_on_no_gain=False), selection=None
    )
    assert out.next_question is not None and out.stop_reason is None


async def test_budget_stops_without_proposing() -> None:
    prov = provider(["QA", "QB"])
    history = (QA("Q1", "yes"), QA("Q2", "no"))
    out = await turn(prov, InterviewConfig(max_questions=2), history=history)
    assert out.stop_reason is StopReason.BUDGET and out.step == 2
    assert prov.propose_calls == [] and prov.posterior_calls == [[history]]
    out = await turn(prov, InterviewConfig(max_questions=3), history=history)
    assert out.stop_reason is None


@pytest.mark.parametrize("policy", [Policy.CIP, Policy.IP])
async def test_no_gain_when_no_answer_moves_the_posterior(policy: Policy) -> None:
    # Unknown questions fall back to the prior: the set and the entropy stay as they are.
    prov = provider(["Q1", "Q2"], table={(): [0.4, 0.3, 0.2, 0.1]}, answers={})
    current_size = set_size([0.4, 0.3, 0.2, 0.1], TAU)
    assert all(expected(prov, q, TAU)[0] >= current_size for q in ("Q1", "Q2"))

    out = await turn(prov, InterviewConfig(policy=policy))

    assert out.stop_reason is StopReason.NO_GAIN and len(out.candidates) == 2
    out = await turn(prov, InterviewConfig(policy=policy, stop_on_no_gain=False))
    assert out.next_question == "Q1"  # full tie: candidate order


async def test_cip_keeps_asking_when_sets_stay_full_but_entropy_drops() -> None:
    # A weak model: every set (nominal, alpha 0.1) holds all four labels, before and after,
    # but Q1's answers sharpen the posterior. Size ties, entropy decides: a gain.
    prior = [0.3, 0.25, 0.25, 0.2]
    table: dict[Key, list[float]] = {
        (): prior,
        (("Q1", "x"),): [0.4, 0.25, 0.2, 0.15],
        (("Q1", "y"),): [0.15, 0.2, 0.25, 0.4],
    }
    answers = {"Q1": [WeightedAnswer("x", 0.5), WeightedAnswer("y", 0.5)]}
    prov = provider(["Q1"], table=table, answers=answers)
    size, ent = expected(prov, "Q1", None)
    assert size == nominal_size(prior, ALPHA) == 4 and ent < shannon(prior)

    out = await turn(prov, InterviewConfig(policy=Policy.CIP), selection=None)
    assert out.next_question == "Q1" and out.stop_reason is None


async def test_cip_no_gain_when_sets_stay_full_and_entropy_rises() -> None:
    prior = [0.4, 0.25, 0.2, 0.15]
    table = {(): prior, (("Q1", "x"),): [0.3, 0.25, 0.25, 0.2], (("Q1", "y"),): UNIFORM}
    answers = {"Q1": [WeightedAnswer("x", 0.5), WeightedAnswer("y", 0.5)]}
    prov = provider(["Q1"], table=table, answers=answers)
    size, ent = expected(prov, "Q1", None)
    assert size == nominal_size(prior, ALPHA) and ent > shannon(prior)

    out = await turn(prov, InterviewConfig(policy=Policy.CIP), selection=None)
    assert out.stop_reason is StopReason.NO_GAIN


async def test_ip_no_gain_when_every_answer_raises_entropy() -> None:
    prior = [0.7, 0.1, 0.1, 0.1]
    table = {(): prior, (("Q1", "x"),): UNIFORM, (("Q1", "y"),): [0.4, 0.3, 0.2, 0.1]}
    answers = {"Q1": [WeightedAnswer("x", 0.5), WeightedAnswer("y", 0.5)]}
    prov = provider(["Q1"], table=table, answers=answers)
    assert expected(prov, "Q1", TAU)[1] > shannon(prior)
    out = await turn(prov, InterviewConfig(policy=Policy.IP, stop_on_singleton=False))
    assert out.stop_reason is StopReason.NO_GAIN


async def test_no_gain_compares_like_with_like_when_thresholds_shrink_with_k() -> None:
    # The case that broke: random-history thresholds tighten with k. At step 0 the present
    # set under tau_0 = 0.9 holds all four labels; under tau_1 = 0.5 every answer of QC
    # leaves an empty set (counted as K = 4), so "present under tau_0 vs expected under
    # tau_1" said no gain at once. Scored by one rule (tau_1 on both sides), QC's
    # 0.5/0.5 posteriors beat the flat present posterior, whose tau_1 set is also empty.
    prov = provider(["QC"])
    shrinking = StepwiseThresholds(alpha=ALPHA, thresholds=(0.9, 0.5, 0.4))
    assert set_size(UNIFORM, 0.9) == 4 and set_size([0.5, 0.5, 0.0, 0.0], 0.5) == 2
    out = await turn(prov, InterviewConfig(policy=Policy.CIP), selection=shrinking)
    assert out.next_question == "QC" and out.gain is True


async def test_entropy_bound_scores_sampled_draws_by_their_labels() -> None:
    # Sampled draws carry labels. QB's "yes" nails A; QA halves. Under the bound a draw
    # of label A answered "yes" to QB lands in a right singleton (cost 0), and the
    # excluded draws cost only alpha * log(K - |C|): QB wins.
    prov = provider(["QA", "QB"])

    def draw(label: str, reply: str) -> AnswerDraw:
        async def answer(question: str) -> str:
            return reply

        return AnswerDraw(label, answer)

    draws = [draw("A", "yes"), draw("B", "yes"), draw("C", "no"), draw("D", "no")]
    config = InterviewConfig(
        policy=Policy.CIP, objective=Objective.ENTROPY_BOUND, answer_source=AnswerSource.SAMPLED
    )
    out = await plan_turn(
        provider=prov,
        case=CASE,
        history=(),
        inquiry=INQUIRY,
        labels=LABELS,
        config=config,
        thresholds=None,
        rng=np.random.default_rng(0),
        selection_thresholds=SELECT,
        draws=draws,
    )
    by_q = {c.question: c for c in out.candidates}
    alpha = ALPHA
    h_b = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    # QA: yes -> [0.6, 0.4, 0, 0], set {A, B}; no -> [0, 0, 0.6, 0.4], set {C, D}; every
    # draw's label is in its set: mean log 2 over the included.
    assert by_q["QA"].entropy_bound == pytest.approx(h_b + (1 - alpha) * math.log(2))
    # QB: yes -> {A} (A right, B a wrong singleton), no -> [.26, .26, .24, .24], set
    # {A, B}: C and D excluded. Included mean log 1 = 0; excluded (log 3 + 2 log 2) / 3.
    want_qb = h_b + alpha * (math.log(3) + 2 * math.log(2)) / 3
    assert by_q["QB"].entropy_bound == pytest.approx(want_qb)
    assert out.next_question == "QB"
    assert [a.label for a in by_q["QA"].answers] == ["A", "B", "C", "D"]
    assert out.rationale is not None and out.rationale.objective == "entropy_bound"


async def test_sampled_source_needs_draws() -> None:
    config = InterviewConfig(answer_source=AnswerSource.SAMPLED)
    with pytest.raises(InvalidInputError, match="draws"):
        await turn(provider(["QA"]), config)


async def test_spread_fires_only_below_epsilon() -> None:
    prov = provider(["QC", "QD"])  # equal expected set sizes (2 < current 4)
    sizes = [expected(prov, q, TAU)[0] for q in ("QC", "QD")]
    entropies = [expected(prov, q, TAU)[1] for q in ("QC", "QD")]
    assert float(np.std(sizes)) < 0.01 < float(np.std(entropies))

    cip = await turn(prov, InterviewConfig(policy=Policy.CIP, spread_epsilon=0.01))
    ip = await turn(prov, InterviewConfig(policy=Policy.IP, spread_epsilon=0.01))
    off = await turn(prov, InterviewConfig(policy=Policy.CIP))

    assert cip.stop_reason is StopReason.SPREAD
    assert ip.stop_reason is None and ip.next_question == "QD"
    assert off.stop_reason is None


async def test_spread_needs_two_candidates() -> None:
    out = await turn(provider(["QC"]), InterviewConfig(spread_epsilon=0.01))
    assert out.next_question == "QC"


async def test_exhausted_when_every_candidate_was_asked() -> None:
    history = (QA("QA", "yes"),)
    prov = provider(["qa", "  QA  "])
    out = await turn(prov, InterviewConfig(), history=history)
    assert out.stop_reason is StopReason.EXHAUSTED and out.candidates_considered == 0
    assert prov.simulate_calls == []
    out = await turn(provider([]), InterviewConfig())
    assert out.stop_reason is StopReason.EXHAUSTED


# --- batching, dedup, outputs ------------------------------------------------------


async def test_one_batched_call_with_unique_histories() -> None:
    answers = {
        "QA": [WeightedAnswer("yes", 0.25), WeightedAnswer("yes", 0.25), WeightedAnswer("no", 0.5)],
        "QB": YES_NO,
    }
    bank = ("QA", "  qa ", "QB", "QA")
    prov = provider(answers=answers)
    config = InterviewConfig(question_source=QuestionSource.BANK, bank=bank)

    out = await turn(prov, config)

    assert len(prov.posterior_calls) == 1
    histories = prov.posterior_calls[0]
    assert len(histories) == len(set(histories))
    want = {()} | {(QA(q, a.text),) for q in ("QA", "QB") for a in answers[q]}
    assert set(histories) == want and out.posterior_evaluations == len(want)
    assert histories[0] == ()  # the current posterior comes from the same call
    assert sorted(prov.simulate_calls) == ["QA", "QB"]
    qa_score = next(c for c in out.candidates if c.question == "QA")
    assert {a.text: a.weight for a in qa_score.answers} == {"yes": 0.5, "no": 0.5}


async def test_a_question_is_never_asked_twice() -> None:
    def proposals(history: History) -> list[str]:
        return ["QA", "qa", "QB", " qb  ", "QC"]

    prov = ScriptedProvider(
        table=TABLE, answers=dict.fromkeys(("QA", "QB", "QC"), YES_NO), proposals=proposals
    )
    config = InterviewConfig(stop_on_singleton=False, stop_on_no_gain=False, max_questions=10)

    async def patient(question: str) -> str:
        return "yes"

    traj = await run_interview(
        provider=prov,
        case=CASE,
        inquiry=INQUIRY,
        labels=LABELS,
        config=config,
        thresholds=None,
        answer_fn=patient,
        rng=np.random.default_rng(0),
        selection_thresholds=SELECT,
    )
    asked = [qa.question for qa in traj.history]
    assert sorted(asked) == ["QA", "QB", "QC"]
    assert traj.stop_reason is StopReason.EXHAUSTED
    for t in traj.turns:  # no turn even scored an already asked question
        seen = {q.casefold() for q in asked[: t.step]}
        assert not seen & {c.question.strip().casefold() for c in t.candidates}


async def test_uncalibrated_differential_is_the_nominal_set() -> None:
    prior = [0.5, 0.3, 0.15, 0.05]
    out = await turn(provider(table={(): prior}), InterviewConfig(policy=Policy.NONE))
    d = out.differential
    size = nominal_size(prior, ALPHA)
    assert not d.calibrated and d.threshold is None and d.p_values is None
    assert d.members == LABELS[:size] and d.set_size == size
    assert d.in_set == tuple(i < size for i in range(4))
    assert d.top_label == "A" and d.alpha == ALPHA
    assert d.entropy == pytest.approx(shannon(prior))


async def test_calibrated_differential_carries_first_principles_p_values() -> None:
    alpha = 0.2
    scores = [0.05, 0.3, 0.5, 0.5, 0.62, 0.7, 0.75, 0.8, 0.9, 0.95, 0.35, 0.6]
    n = len(scores)
    r = math.ceil((n + 1) * (1 - Fraction(1, 5)))
    tau = sorted(scores)[r - 1]
    prior = [0.5, 0.3, 0.15, 0.05]
    shown = StepwiseThresholds.from_scores([scores], alpha)
    assert shown.threshold_for_step(0) == tau

    out = await turn(
        provider(table={(): prior}),
        InterviewConfig(policy=Policy.NONE, alpha=alpha),
        thresholds=shown,
    )

    d = out.differential
    assert d.calibrated and d.threshold == tau
    assert d.in_set == tuple(1 - p <= tau for p in prior)
    want_p = [(1 + sum(1 for s in scores if s >= 1 - p)) / (n + 1) for p in prior]
    assert d.p_values == pytest.approx(want_p)
    assert d.in_set == tuple(p > alpha for p in want_p)


async def test_past_the_calibrated_horizon_the_set_is_everything() -> None:
    shown = StepwiseThresholds(alpha=ALPHA, thresholds=(0.5,), scores=(np.array([0.1, 0.5]),))
    history = (QA("QA", "yes"),)
    out = await turn(provider(["QB"]), InterviewConfig(), thresholds=shown, history=history)
    d = out.differential
    assert d.threshold == math.inf and d.set_size == 4 and d.p_values is None


async def test_thresholds_at_another_alpha_are_refused() -> None:
    shown = StepwiseThresholds(alpha=0.05, thresholds=(0.9,))
    with pytest.raises(InvalidInputError, match="alpha"):
        await turn(provider(["QA"]), InterviewConfig(alpha=0.1), thresholds=shown)


async def test_bad_provider_output_is_an_upstream_error() -> None:
    bad = provider(["QA"], table={(): [0.5, 0.5]})  # two labels for four
    with pytest.raises(UpstreamBadOutputError, match="shape"):
        await turn(bad, InterviewConfig())
    no_answers = provider(["QA"], answers={"QA": []})
    with pytest.raises(UpstreamBadOutputError, match="no weighted answers"):
        await turn(no_answers, InterviewConfig())


async def test_max_candidates_scores_a_seeded_sample_of_the_bank() -> None:
    bank = tuple(f"Q{i}" for i in range(10))
    config = InterviewConfig(question_source=QuestionSource.BANK, bank=bank, max_candidates=3)
    runs = []
    for _ in range(2):
        prov = provider(table={(): UNIFORM})
        out = await turn(prov, config, seed=3)
        assert len(prov.simulate_calls) == 3 and out.candidates_considered == 10
        runs.append(sorted(prov.simulate_calls))
    assert runs[0] == runs[1]


async def test_run_interview_records_the_posterior_at_every_step() -> None:
    prov = provider(["QA", "QB"])

    async def patient(question: str) -> str:
        return "yes"

    config = InterviewConfig(max_questions=2, stop_on_singleton=False, stop_on_no_gain=False)
    traj = await run_interview(
        provider=prov,
        case=CASE,
        inquiry=INQUIRY,
        labels=LABELS,
        config=config,
        thresholds=None,
        answer_fn=patient,
        rng=np.random.default_rng(0),
        selection_thresholds=SELECT,
    )
    assert [t.step for t in traj.turns] == [0, 1, 2]
    assert traj.stop_reason is StopReason.BUDGET and len(traj.history) == 2
    want = np.array([prov.posterior(traj.history[:k]) for k in range(3)])
    np.testing.assert_allclose(traj.posteriors, want)
    np.testing.assert_allclose(traj.label_scores("A"), 1 - want[:, 0])
    assert traj.final is traj.turns[-1].differential
