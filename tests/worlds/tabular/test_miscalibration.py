"""Miscalibration modes: each one's logits against its definition, seeded draws, the player."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from app.engine.types import QA
from app.errors import InvalidInputError
from app.research.twentyq import make_game, make_games
from app.worlds.tabular import (
    NO,
    YES,
    Distortion,
    Miscalibration,
    Mode,
    TabularProvider,
    build_distortion,
    parse_miscalibration,
)
from app.worlds.tabular.miscalibration import (
    OVERCONFIDENT_EXTRA_NOISE,
    hash_normals,
    history_hash,
)

GAME = make_game(20)
MODEL = GAME.model
N_A, N_K = len(MODEL.questions), len(MODEL.labels)


def distortion(mode: Mode, s: float, seed: int = 1) -> Distortion:
    return build_distortion(MODEL, Miscalibration(mode, s), player_yes=GAME.oracle_yes, seed=seed)


def counts(seed: int, n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """n random histories as yes/no count vectors (up to 8 answers, repeats allowed)."""
    rng = np.random.default_rng(seed)
    yes, no = np.zeros((n, N_A)), np.zeros((n, N_A))
    for h in range(n):
        for a in rng.integers(N_A, size=rng.integers(0, 9)):
            (yes if rng.random() < 0.5 else no)[h, a] += 1
    return yes, no


def test_parse_accepts_lists_of_strengths_and_refuses_bad_values() -> None:
    assert parse_miscalibration("polarity=1.5,2") == (
        Miscalibration(Mode.POLARITY, 1.5),
        Miscalibration(Mode.POLARITY, 2.0),
    )
    assert parse_miscalibration("length=1")[0].label == "length=1"
    for bad in ("magic=1", "polarity", "polarity=", "polarity=0", "polarity=-2", "polarity=x"):
        with pytest.raises(InvalidInputError):
            parse_miscalibration(bad)
    with pytest.raises(InvalidInputError):
        Miscalibration(Mode.LENGTH, math.inf)


def test_each_mode_transforms_the_log_likelihood_as_defined() -> None:
    yes, no = counts(0)
    loglik = yes @ MODEL.log_yes + no @ MODEL.log_no
    prior = MODEL.log_prior
    n = (yes.sum(axis=1) + no.sum(axis=1))[:, None]
    expected = {
        (Mode.TEMPERATURE, 4.0): prior + loglik / 4.0,
        (Mode.POLARITY, 2.0): prior + 2.0 * (yes @ MODEL.log_yes) + (no @ MODEL.log_no) / 2.0,
        (Mode.LENGTH, 2.0): prior + (1.0 + 2.0 * n / 10.0) * loglik,
    }
    for (mode, s), want in expected.items():
        d = distortion(mode, s)
        np.testing.assert_allclose(d.logits(prior, yes, no), want, atol=1e-12)
    # Temperature s on the log-likelihood is -T s on the whole posterior (uniform prior).
    tempered = TabularProvider(MODEL, temperature=4.0)
    mode_t = TabularProvider(MODEL, distortion=distortion(Mode.TEMPERATURE, 4.0))
    history = (QA(MODEL.questions[3], YES), QA(MODEL.questions[7], NO))
    np.testing.assert_allclose(
        mode_t.posteriors([history]), tempered.posteriors([history]), atol=1e-12
    )


def test_label_bias_is_a_fixed_seeded_offset_per_label() -> None:
    yes, no = counts(1)
    plain = MODEL.log_joint(yes, no)
    one, again, other = (distortion(Mode.LABEL_BIAS, 2.0, seed) for seed in (5, 5, 6))
    offset = one.logits(MODEL.log_prior, yes, no) - plain
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-12)
    np.testing.assert_array_equal(one.bias, again.bias)
    assert not np.allclose(one.bias, other.bias)
    # s * z: twice the strength, twice the offset.
    half = distortion(Mode.LABEL_BIAS, 1.0, 5)
    np.testing.assert_allclose(one.bias, 2.0 * half.bias)


def test_logit_noise_is_a_function_of_the_answers_given_and_standard_normal() -> None:
    d = distortion(Mode.LOGIT_NOISE, 0.5)
    provider = TabularProvider(MODEL, distortion=d)
    a, b = QA(MODEL.questions[2], YES), QA(MODEL.questions[9], NO)
    forward, backward = provider.posteriors([(a, b)]), provider.posteriors([(b, a)])
    np.testing.assert_array_equal(forward, backward)  # the sorted (attribute, answer) pairs
    flipped = provider.posteriors([(a, QA(MODEL.questions[9], YES))])
    plain = TabularProvider(MODEL).posteriors([(a, b)])
    assert not np.allclose(forward, plain)
    yes, no = counts(2)
    # One answer apart: independent noise.
    noise = d.logits(MODEL.log_prior, yes, no) - MODEL.log_joint(yes, no)
    shifted = yes.copy()
    shifted[:, 0] += 1
    moved = d.logits(MODEL.log_prior, shifted, no) - MODEL.log_joint(shifted, no)
    assert np.corrcoef(noise.ravel(), moved.ravel())[0, 1] < 0.2
    assert not np.allclose(forward, flipped)
    # The hash normals are N(0, 1): 40,000 of them, mean and variance in 99.9% bands.
    z = hash_normals(np.arange(2000, dtype=np.uint64) * np.uint64(7919), 20).ravel()
    assert abs(z.mean()) < 3.3 / math.sqrt(z.size)
    ss = float((z**2).sum())
    assert chi2.ppf(0.0005, z.size) < ss < chi2.ppf(0.9995, z.size)
    np.testing.assert_allclose(noise.std(), 0.5, rtol=0.15)  # 1,000 draws at sd 0.5
    assert history_hash(d.keys, yes, no).dtype == np.uint64


def test_overconfident_attributes_are_those_the_table_gets_most_wrong() -> None:
    d = distortion(Mode.OVERCONFIDENT_ATTRS, 4.0)
    chosen = list(d.attributes)
    assert len(chosen) == round(0.2 * N_A)
    disagreement = np.abs(GAME.oracle_yes - MODEL.p_yes).mean(axis=0)
    others = np.setdiff1d(np.arange(N_A), chosen)
    assert disagreement[chosen].min() >= disagreement[others].max()
    np.testing.assert_allclose(d.log_yes[chosen], 4.0 * MODEL.log_yes[chosen])
    np.testing.assert_array_equal(d.log_no[others], MODEL.log_no[others])
    extra = d.player_extra_noise
    assert set(np.flatnonzero(extra)) == set(chosen) and extra.max() == OVERCONFIDENT_EXTRA_NOISE


def test_the_player_flips_more_on_the_chosen_attributes_and_nowhere_else() -> None:
    extra = distortion(Mode.OVERCONFIDENT_ATTRS, 4.0).player_extra_noise
    games = make_games(n=3000, split="test", seed=9, n_labels=20, max_questions=4, noise=0.05)
    noisy = games.with_extra_noise(extra)
    g = np.arange(len(games))
    chosen, plain = int(np.flatnonzero(extra)[0]), int(np.flatnonzero(extra == 0)[0])
    for step in range(4):
        same = noisy.flip(g, step, np.full(g.size, plain))
        np.testing.assert_array_equal(same, games.flips[:, step])  # same draws, same flips
        more = noisy.flip(g, step, np.full(g.size, chosen))
        assert (more >= games.flips[:, step]).all()  # u < noise implies u < noise + extra
    flips = int(noisy.flip(g, 0, np.full(g.size, chosen)).sum())
    test = binomtest(flips, g.size, 0.05 + OVERCONFIDENT_EXTRA_NOISE)
    assert test.pvalue > 0.001
