"""benchmarks.knob_stats: each estimator recovers a knob strength put into synthetic posteriors.

The posteriors are built the way the tabular knobs define them (issue 17), on the shipped 20Q
table where a table is needed; noise-free constructions must be recovered exactly, noisy ones
within bands several standard errors wide (the standard error is stated at each band).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.errors import InvalidInputError
from app.research.twentyq.data import make_game
from benchmarks import knob_stats as ks


def test_centered_logits_ignore_a_common_shift() -> None:
    p = np.array([[0.5, 0.3, 0.2]])
    logits = ks.centered_logits(p)
    assert logits.sum() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(ks.centered_logits(ks.softmax(np.log(p) + 7.0)), logits)
    with pytest.raises(InvalidInputError):
        ks.centered_logits(np.array([1.0]))


@pytest.mark.parametrize("k", [4, 20])
def test_position_bias_recovers_the_offsets_across_cyclic_orders(k: int) -> None:
    rng = np.random.default_rng(k)
    items, s, noise = 200, 1.0, 0.3
    offsets = s * rng.standard_normal(k)
    probs = np.empty((items, k, k))
    for i in range(items):
        label = 2.0 * rng.standard_normal(k)  # what the item says about each label
        for shift in range(k):
            shown = label[(np.arange(k) + shift) % k]  # position pos shows label pos + shift
            probs[i, shift] = ks.softmax(shown + offsets + noise * rng.standard_normal(k))
    fit = ks.position_bias(probs)
    # A position's mean over 200 items x k orders has se 0.3 / sqrt(200 k) <= 0.022.
    centred = offsets - offsets.mean()
    np.testing.assert_allclose(fit.offsets, centred, atol=0.1)
    assert fit.sd_noise_corrected is not None
    assert fit.sd_noise_corrected == pytest.approx(float(np.std(offsets, ddof=1)), abs=0.1)
    assert fit.sd_noise_corrected <= fit.sd
    assert fit.items == items and 0.0 < fit.first_share < 1.0


def test_position_bias_needs_every_cyclic_order() -> None:
    with pytest.raises(InvalidInputError):
        ks.position_bias(np.full((3, 2, 4), 0.25))


@pytest.mark.parametrize(("s", "beta"), [(1.6, 0.7), (0.8, 1.0)])
def test_polarity_recovers_s_and_the_overall_weight(s: float, beta: float) -> None:
    game = make_game(20)
    rng = np.random.default_rng(1)
    items = []
    for a in range(len(game.questions)):
        yes = game.oracle_yes[:, a]
        if yes.all() or not yes.any():
            continue
        prior = rng.standard_normal(len(game.labels))
        items.append(
            ks.polarity_item(
                before=ks.softmax(prior),
                after_yes=ks.softmax(prior + beta * s * game.model.log_yes[a]),
                after_no=ks.softmax(prior + beta / s * game.model.log_no[a]),
                yes_consistent=yes,
                log_p_yes=game.model.log_yes[a],
                log_p_no=game.model.log_no[a],
            )
        )
    fit = ks.fit_polarity(items, seed=0)
    assert fit.weight_yes == pytest.approx(beta * s, rel=1e-6)
    assert fit.weight_no == pytest.approx(beta / s, rel=1e-6)
    assert fit.s == pytest.approx(s, rel=1e-6)
    assert fit.evidence_weight == pytest.approx(beta, rel=1e-6)
    assert fit.s_interval is not None
    assert fit.s_interval[0] == pytest.approx(s, rel=1e-6) == fit.s_interval[1]


def test_polarity_is_undefined_when_an_answer_moves_the_wrong_way() -> None:
    item = ks.PolarityItem(moved_yes=1.0, moved_no=-0.5, table_yes=2.0, table_no=1.0)
    fit = ks.fit_polarity([item], seed=0)
    assert fit.s is None and fit.evidence_weight is None and fit.s_interval is None
    assert fit.weight_no < 0 < fit.weight_yes


@pytest.mark.parametrize(("s", "beta"), [(0.5, 1.0), (-0.3, 0.4), (2.0, 0.2)])
def test_length_recovers_s_from_evidence_growing_with_n(s: float, beta: float) -> None:
    game = make_game(20)
    rng = np.random.default_rng(2)
    games, max_n = 12, 6
    prior = rng.standard_normal((games, len(game.labels)))  # letter bias, its own per game
    num = np.empty((games, max_n))
    den = np.empty((games, max_n))
    for g in range(games):
        animal = int(rng.integers(len(game.labels)))
        asked = rng.choice(len(game.questions), size=max_n, replace=False)
        for n in range(1, max_n + 1):
            yes = np.zeros(len(game.questions))
            no = np.zeros(len(game.questions))
            for a in asked[:n]:
                (yes if game.oracle_yes[animal, a] else no)[a] += 1
            loglik = game.model.log_joint(yes, no) - game.model.log_prior
            model = ks.softmax(prior[g] + beta * (1 + s * n / ks.LENGTH_UNIT) * loglik)
            moved = ks.centered_logits(model) - ks.centered_logits(ks.softmax(prior[g]))
            terms = ks.evidence_terms(moved[None], loglik[None])
            num[g, n - 1], den[g, n - 1] = terms[0][0], terms[1][0]
    fit = ks.fit_length(num, den, seed=0)
    assert fit.beta == pytest.approx(beta, rel=1e-6)
    assert fit.s == pytest.approx(s, rel=1e-6, abs=1e-9)
    assert fit.games == games and len(fit.weights) == max_n
    # Every game carries exactly c_n, so every resample does: the intervals shrink to a point.
    assert fit.s_interval is not None and fit.beta_interval is not None
    assert fit.s_interval[0] == pytest.approx(s, abs=1e-6) == fit.s_interval[1]
    assert fit.beta_interval[0] == pytest.approx(beta, abs=1e-6) == fit.beta_interval[1]


def test_paraphrase_noise_is_in_the_logit_noise_knobs_units() -> None:
    rng = np.random.default_rng(3)
    groups, wordings, k, s = 100, 5, 20, 0.5
    base = 2.0 * rng.standard_normal((groups, 1, k))
    probs = ks.softmax(base + s * rng.standard_normal((groups, wordings, k)))
    fit = ks.paraphrase_noise(probs)
    # Pooled over 100 x 4 x 20 = 8000 degrees of freedom: se of the sd about 0.5 / sqrt(16000).
    assert fit.s == pytest.approx(s, abs=0.03)
    assert 0.0 <= fit.top_changes <= 1.0 and fit.groups == groups and fit.wordings == wordings
    same = ks.paraphrase_noise(np.repeat(ks.softmax(base), wordings, axis=1))
    assert same.s == pytest.approx(0.0, abs=1e-9) and same.top_changes == 0.0


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_temperature_fit_finds_the_temperature_that_made_a_model_miscalibrated(t: float) -> None:
    rng = np.random.default_rng(4)
    n, k = 4000, 4
    logits = 1.5 * rng.standard_normal((n, k))
    truth = ks.softmax(logits)
    labels = np.array([rng.choice(k, p=row) for row in truth])
    fit = ks.fit_temperature(ks.softmax(logits / t), labels)  # T* = 1 / t undoes it
    # 4000 draws pin T* to a few percent; the band is about five standard errors.
    assert fit.t == pytest.approx(1 / t, rel=0.15)
    assert fit.nll_at_t <= fit.nll_at_1 + 1e-12
    assert math.isfinite(fit.mean_p_true) and 0.0 <= fit.accuracy <= 1.0
