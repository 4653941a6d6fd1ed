"""Animals with Attributes as a game: files, mapping, oracle answers."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import InvalidInputError
from app.research.twentyq import load_awa2, make_game


def test_the_files_load_with_the_shapes_the_readme_states() -> None:
    awa = load_awa2()
    assert len(awa.classes) == 50 and len(awa.classes20) == 20
    assert set(awa.classes20) <= set(awa.classes)
    assert len(awa.questions) == 85 and awa.questions[0] == "Is the animal black?"
    assert awa.strengths.shape == (50, 85)
    assert awa.answers_yes["zebra"][awa.questions.index("Does the animal have stripes?")]
    assert not awa.answers_yes["blue whale"][awa.questions.index("Is the animal furry?")]


def test_the_20_animal_game_uses_the_paper_answers_and_the_scaled_matrix() -> None:
    awa = load_awa2()
    game = make_game(20, data=awa)
    assert game.labels == awa.classes20 and game.questions == awa.questions
    assert set(game.oracle_source) == {"answers_yesno"}
    zebra = game.labels.index("zebra")
    np.testing.assert_array_equal(game.oracle_yes[zebra], awa.answers_yes["zebra"])
    row = awa.strengths[awa.classes.index("zebra")]
    np.testing.assert_allclose(game.model.p_yes[zebra], np.clip(row / 100, 0.01, 0.99))
    assert game.model.name == "awa2-20"


def test_the_50_animal_variant_thresholds_the_matrix_for_the_other_30() -> None:
    awa = load_awa2()
    game = make_game(50, data=awa)
    assert game.labels == awa.classes
    antelope = game.labels.index("antelope")  # its first 4 strengths are missing (-1)
    assert game.oracle_source[antelope] == "matrix>=50"
    assert awa.strengths[antelope, :4].tolist() == [-1.0] * 4
    assert not game.oracle_yes[antelope, :4].any()
    assert (game.model.p_yes[antelope, :4] == 0.5).all()
    np.testing.assert_array_equal(game.oracle_yes[antelope, 4:], awa.strengths[antelope, 4:] >= 50)
    assert game.oracle_source[game.labels.index("zebra")] == "answers_yesno"
    with pytest.raises(InvalidInputError):
        make_game(30, data=awa)
