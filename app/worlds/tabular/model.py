"""A class x attribute Bayesian model: yes/no answers independent given the class.

The model is a table ``P(yes | class, attribute)`` (K x A) and a prior over the K classes.
A history is a sequence of (question, answer) pairs; every question maps to one attribute
(``questions[a]`` asks about attribute a) and every answer to yes, no or no information:

- an answer whose first word is "yes" (case-insensitive: "Yes.", "yes, it is") is yes;
- an answer whose first word is "no" ("No.", "no it isn't") is no;
- anything else ("unsure", "Nope", "Not really") carries no information and is ignored.

The log-likelihood of a history is the sum over its answers of ``log P(answer | class)``; a
question asked twice contributes both answers (they are independent draws given the class).
Histories are reduced to two (H, A) count matrices (yes counts, no counts), so the log joint
of many histories is two matrix products.

Mapping from a strength matrix (``from_strengths``): ``P(yes) = clip(value / scale, eps,
1 - eps)``, and a missing value (``missing``, -1 in Animals with Attributes) gives 0.5.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.engine.banks import normalize_question
from app.engine.types import History
from app.errors import InvalidInputError

__all__ = [
    "ANSWER_NO",
    "ANSWER_UNKNOWN",
    "ANSWER_YES",
    "DEFAULT_EPS",
    "TabularModel",
    "parse_answer",
    "tempered_softmax",
]

FloatArray = npt.NDArray[np.float64]

ANSWER_YES = 1
ANSWER_NO = -1
ANSWER_UNKNOWN = 0
# Clipping of P(yes | class): an answer the table calls impossible would otherwise rule the
# class out for good, and real answerers (people, LLMs, noisy players) contradict tables.
DEFAULT_EPS = 0.01

_FIRST_WORD = re.compile(r"\s*([a-z]+)")


def parse_answer(text: str) -> int:
    """ANSWER_YES when the first word is "yes", ANSWER_NO when it is "no", else ANSWER_UNKNOWN."""
    match = _FIRST_WORD.match(text.casefold())
    if match is None:
        return ANSWER_UNKNOWN
    word = match.group(1)
    if word == "yes":
        return ANSWER_YES
    if word == "no":
        return ANSWER_NO
    return ANSWER_UNKNOWN


@dataclass(frozen=True, eq=False, slots=True)
class TabularModel:
    """``p_yes[k, a] = P(yes to questions[a] | labels[k])`` in (0, 1) and a prior over labels."""

    name: str
    labels: tuple[str, ...]
    questions: tuple[str, ...]
    p_yes: FloatArray
    prior: FloatArray
    _index: dict[str, int] = field(init=False, repr=False)
    _log_yes: FloatArray = field(init=False, repr=False)
    _log_no: FloatArray = field(init=False, repr=False)
    _log_prior: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        labels, questions = tuple(self.labels), tuple(self.questions)
        p_yes = np.array(self.p_yes, dtype=np.float64)  # a private copy, read-only below
        prior = np.array(self.prior, dtype=np.float64)
        if not labels or len(set(labels)) != len(labels):
            raise InvalidInputError("labels must be non-empty and distinct")
        index = {normalize_question(q): a for a, q in enumerate(questions)}
        if not questions or len(index) != len(questions) or "" in index:
            raise InvalidInputError("questions must be non-empty and distinct (normalised)")
        if p_yes.shape != (len(labels), len(questions)):
            raise InvalidInputError(
                f"p_yes must be (labels, questions) = {(len(labels), len(questions))}, "
                f"got {p_yes.shape}"
            )
        if not (np.isfinite(p_yes).all() and (p_yes > 0).all() and (p_yes < 1).all()):
            raise InvalidInputError("p_yes must lie strictly between 0 and 1")
        if prior.shape != (len(labels),) or not (np.isfinite(prior).all() and (prior > 0).all()):
            raise InvalidInputError("prior must be positive, one value per label")
        prior = prior / prior.sum()
        p_yes.setflags(write=False)
        prior.setflags(write=False)
        for name, value in (
            ("labels", labels),
            ("questions", questions),
            ("p_yes", p_yes),
            ("prior", prior),
            ("_index", index),
            ("_log_yes", np.log(p_yes).T.copy()),  # (A, K): evidence @ log table
            ("_log_no", np.log1p(-p_yes).T.copy()),
            ("_log_prior", np.log(prior)),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_strengths(
        cls,
        *,
        name: str,
        labels: Sequence[str],
        questions: Sequence[str],
        strengths: npt.ArrayLike,
        scale: float = 100.0,
        eps: float = DEFAULT_EPS,
        missing: float | None = -1.0,
        prior: npt.ArrayLike | None = None,
    ) -> TabularModel:
        """``P(yes) = clip(strength / scale, eps, 1 - eps)``; ``missing`` values give 0.5."""
        if not 0 < eps < 0.5:
            raise InvalidInputError(f"eps must lie in (0, 0.5), got {eps!r}")
        s = np.asarray(strengths, dtype=np.float64)
        is_missing = np.zeros(s.shape, dtype=np.bool_) if missing is None else s == missing
        if not np.isfinite(s).all():
            raise InvalidInputError("strengths must be finite")
        p = np.where(is_missing, 0.5, np.clip(s / scale, eps, 1.0 - eps))
        uniform = np.full(len(labels), 1.0 / len(labels))
        return cls(
            name=name,
            labels=tuple(labels),
            questions=tuple(questions),
            p_yes=p,
            prior=uniform if prior is None else np.asarray(prior, dtype=np.float64),
        )

    @property
    def log_yes(self) -> FloatArray:
        """(A, K): log P(yes | class), attribute-major."""
        return self._log_yes

    @property
    def log_no(self) -> FloatArray:
        """(A, K): log P(no | class), attribute-major."""
        return self._log_no

    @property
    def log_prior(self) -> FloatArray:
        """(K,): log prior."""
        return self._log_prior

    @property
    def fingerprint(self) -> str:
        """Hash of labels, questions, table and prior: a calibration is valid for this only."""
        digest = hashlib.sha256()
        for part in (*self.labels, "\x1e", *(normalize_question(q) for q in self.questions)):
            digest.update(part.encode("utf-8") + b"\x1f")
        digest.update(np.ascontiguousarray(self.p_yes, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(self.prior, dtype="<f8").tobytes())
        return digest.hexdigest()[:16]

    def question_index(self, question: str) -> int | None:
        """The attribute a question asks about (whitespace/case-insensitive), or None."""
        return self._index.get(normalize_question(question))

    def require_question(self, question: str) -> int:
        """As question_index, but a question outside the bank is an InvalidInputError."""
        a = self.question_index(question)
        if a is None:
            raise InvalidInputError(f"question not in the {self.name!r} bank: {question!r}")
        return a

    def evidence(self, histories: Iterable[History]) -> tuple[FloatArray, FloatArray]:
        """(H, A) yes counts and no counts; a question outside the bank is an error."""
        rows: list[tuple[list[int], list[int]]] = []
        for history in histories:
            yes: list[int] = []
            no: list[int] = []
            for qa in history:
                a = self.require_question(qa.question)
                parsed = parse_answer(qa.answer)
                if parsed == ANSWER_YES:
                    yes.append(a)
                elif parsed == ANSWER_NO:
                    no.append(a)
            rows.append((yes, no))
        n_a = len(self.questions)
        yes_counts = np.zeros((len(rows), n_a))
        no_counts = np.zeros((len(rows), n_a))
        for h, (yes, no) in enumerate(rows):
            np.add.at(yes_counts[h], yes, 1.0)
            np.add.at(no_counts[h], no, 1.0)
        return yes_counts, no_counts

    def log_joint(self, yes_counts: npt.ArrayLike, no_counts: npt.ArrayLike) -> FloatArray:
        """(..., K): log prior + sum of answer log-likelihoods, from (..., A) counts."""
        y = np.asarray(yes_counts, dtype=np.float64)
        n = np.asarray(no_counts, dtype=np.float64)
        return np.asarray(self._log_prior + y @ self._log_yes + n @ self._log_no, np.float64)

    def label_positions(self, labels: Sequence[str]) -> list[int]:
        """Column of each requested label; a label the model does not know is an error."""
        position = {label: k for k, label in enumerate(self.labels)}
        missing = [label for label in labels if label not in position]
        if missing:
            raise InvalidInputError(f"labels unknown to the {self.name!r} model: {missing}")
        return [position[label] for label in labels]


def tempered_softmax(logits: npt.ArrayLike, temperature: float) -> FloatArray:
    """Rows of ``exp(logits / T)`` normalised along the last axis (max subtracted first)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise InvalidInputError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True), dtype=np.float64)
