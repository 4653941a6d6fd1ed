"""Animals with Attributes as a 20 Questions game: labels, question bank, model, oracle.

- Labels: the paper's 20 animals (``classes20.txt``) or all 50 (``classes.txt``).
- Question bank: ``questions.txt``, one yes/no question per attribute, in attribute order.
- Model: ``TabularModel.from_strengths`` on ``predicate-matrix-continuous.txt`` (strengths
  0..100; ``P(yes) = clip(value / 100, eps, 1 - eps)``, missing -1 -> 0.5).
- Oracle (the player's true answers): ``answers_yesno/<animal>.json`` for the 20 animals (the
  paper's answers, which disagree with "strength >= 50" on about 18% of entries); for the 30
  other animals, the continuous matrix thresholded at 50 (yes iff strength >= 50; a missing
  value, -1, answers "no").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.engine.banks import normalize_question
from app.errors import InvalidInputError
from app.worlds.tabular import DEFAULT_EPS, TabularModel

__all__ = [
    "AWA2_DIR",
    "ORACLE_THRESHOLD",
    "Awa2",
    "TwentyQuestions",
    "load_awa2",
    "make_game",
]

AWA2_DIR = Path(__file__).resolve().parents[2] / "data" / "awa2"
# Strength at or above which the simulated player says "yes" for animals without answers.
ORACLE_THRESHOLD = 50.0
MISSING = -1.0

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False, slots=True)
class Awa2:
    """The raw files: classes, the paper's 20, questions, strengths, the 20's yes/no answers."""

    classes: tuple[str, ...]
    classes20: tuple[str, ...]
    questions: tuple[str, ...]
    strengths: FloatArray  # (50, 85), -1 = missing
    answers_yes: dict[str, tuple[bool, ...]]  # animal -> yes? per question, for the 20


@dataclass(frozen=True, eq=False, slots=True)
class TwentyQuestions:
    """One game definition: the model the questioner uses and the answers the player gives."""

    name: str
    model: TabularModel
    oracle_yes: BoolArray  # (K, A): the player's noise-free answer, True = "Yes."
    oracle_source: tuple[str, ...]  # per label: "answers_yesno" or "matrix>=50"

    @property
    def labels(self) -> tuple[str, ...]:
        """The candidate animals."""
        return self.model.labels

    @property
    def questions(self) -> tuple[str, ...]:
        """The closed question bank."""
        return self.model.questions


def _names(path: Path) -> tuple[str, ...]:
    # Lines are "<index><TAB><name>", possibly indented; names may contain spaces.
    return tuple(
        line.split("\t")[-1].strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    )


def load_awa2(data_dir: Path = AWA2_DIR) -> Awa2:
    """Read the Animals with Attributes files shipped in ``app/data/awa2``."""
    classes = _names(data_dir / "classes.txt")
    classes20 = _names(data_dir / "classes20.txt")
    questions = tuple(
        line.strip()
        for line in (data_dir / "questions.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    strengths = np.loadtxt(data_dir / "predicate-matrix-continuous.txt", dtype=np.float64)
    if strengths.shape != (len(classes), len(questions)):
        raise InvalidInputError(
            f"strength matrix is {strengths.shape}, expected {(len(classes), len(questions))}"
        )
    if unknown := sorted(set(classes20) - set(classes)):
        raise InvalidInputError(f"classes20 names not in classes.txt: {unknown}")
    keys = [normalize_question(q) for q in questions]
    answers: dict[str, tuple[bool, ...]] = {}
    for animal in classes20:
        raw = json.loads((data_dir / "answers_yesno" / f"{animal}.json").read_text("utf-8"))
        by_key = {normalize_question(q): a for q, a in raw.items()}
        row = []
        for key, question in zip(keys, questions, strict=True):
            if key not in by_key:
                raise InvalidInputError(f"no answer for {question!r} in {animal}.json")
            value = by_key[key]
            text = value[0] if isinstance(value, list) else value
            row.append(str(text).strip().casefold().startswith("yes"))
        answers[animal] = tuple(row)
    return Awa2(classes, classes20, questions, strengths, answers)


def make_game(
    animals: int = 20, *, eps: float = DEFAULT_EPS, data: Awa2 | None = None
) -> TwentyQuestions:
    """The 20-animal game of the paper, or the 50-animal variant."""
    if animals not in (20, 50):
        raise InvalidInputError(f"animals must be 20 or 50, got {animals}")
    awa = data if data is not None else load_awa2()
    labels = awa.classes20 if animals == 20 else awa.classes
    rows = [awa.classes.index(label) for label in labels]
    strengths = awa.strengths[rows]
    model = TabularModel.from_strengths(
        name=f"awa2-{animals}",
        labels=labels,
        questions=awa.questions,
        strengths=strengths,
        scale=100.0,
        eps=eps,
        missing=MISSING,
    )
    oracle = np.empty(strengths.shape, dtype=np.bool_)
    source: list[str] = []
    for k, label in enumerate(labels):
        if label in awa.answers_yes:
            oracle[k] = awa.answers_yes[label]
            source.append("answers_yesno")
        else:
            oracle[k] = (strengths[k] != MISSING) & (strengths[k] >= ORACLE_THRESHOLD)
            source.append(f"matrix>={ORACLE_THRESHOLD:g}")
    oracle.setflags(write=False)
    return TwentyQuestions(model.name, model, oracle, tuple(source))
