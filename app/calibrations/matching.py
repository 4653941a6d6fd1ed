"""Which active calibration may serve a session, and why the others may not (pure).

A calibration's thresholds hold only for interviews run with the question policy it was
made with: the same model and prompt version (the repository filters on those), policy and
alpha, and the same way candidate questions and answers are produced. Which settings make
the policy depends on the policy:

- ``cip``/``ip`` score every candidate question against simulated answers: question source,
  bank, candidate questions per turn and answers per candidate all matter; for ``cip`` also
  the objective and the selection calibration whose thresholds count its sets (a session
  that leaves ``selection_calibration_id`` out takes the calibration's);
- ``random`` draws uniformly among the candidates: source and bank matter, and the number
  of generated proposals (for a bank, a uniform draw from a uniform subset is a uniform draw
  from the bank, so the subset size does not);
- ``fixed`` takes the bank in order: source and bank;
- ``none`` asks nothing.

A calibration whose answer source is not ``llm`` never serves (serving simulates answers
with the LLM), nor does a selection calibration (its thresholds count the sets inside the
objective, not the shown set), and one made on a single specialty's cases does not serve a
session that declares another specialty. A setting the calibration does not record never matches.

Not matched, on purpose:

- the question budget T: the question asked at step k does not depend on the budget, so a
  calibration of steps 0..T serves steps 0..T of any session; later steps are uncalibrated
  (the session service says so at those steps). A calibration covering the whole budget is
  preferred;
- the stop rules (singleton, no gain, spread): they end an interview but never change the
  question asked at a step, so the histories at step k are the calibrated ones (coverage at
  a data-dependent stopping step is another matter, stated in the guarantee);
- grouping (per specialty) and anytime: they change the thresholds, not the policy.

At most one calibration is active per ``policy_key`` (``CalibrationRepository.activate``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.engine.policy import OLDER_SPELLINGS, QuestionPolicy
from app.errors import InvalidInputError

__all__ = [
    "ALPHA_TOLERANCE",
    "ActiveCalibration",
    "Match",
    "Mismatch",
    "SessionPolicy",
    "choose",
    "mismatches",
    "policy_key",
    "specialty_key",
]

ALPHA_TOLERANCE = 1e-9

Value = str | int | float | None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """What a calibration must share with a session: its question policy (model and prompt
    version aside), and what else selects among matches."""

    question: QuestionPolicy
    max_questions: int
    specialty: str | None = None
    # The session left selection_calibration_id out: any the calibration names will do.
    any_selection: bool = True


@dataclass(frozen=True, slots=True)
class ActiveCalibration:
    """What matching reads of an active calibration row (not its scores)."""

    id: uuid.UUID
    policy: str
    alpha: float
    max_questions: int
    params: Mapping[str, Any]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One session option that differs from a calibration's."""

    field: str
    session: Value
    calibration: Value

    def describe(self) -> str:
        if self.calibration is None:
            return f"{self.field}: session {self.session!r}, not recorded by the calibration"
        return f"{self.field}: session {self.session!r}, calibration {self.calibration!r}"


@dataclass(frozen=True, slots=True)
class Match:
    """The calibration that serves, or why none does (the closest one's differences)."""

    calibration_id: uuid.UUID | None
    mismatches: tuple[Mismatch, ...] = ()
    reason: str | None = None


# The settings, named as the session API names them (and mismatches report them).
_BANK, _N_QUESTIONS, _SELECTION = (
    "question_bank_name",
    "n_candidate_questions",
    "selection_calibration_id",
)


def _fields(policy: str, question_source: Value) -> tuple[str, ...]:
    """The settings that define ``policy``'s questions (besides policy and alpha)."""
    bank = (_BANK,) if question_source == "bank" else ()
    if policy == "cip":
        return ("question_source", *bank, _N_QUESTIONS, "n_answers", "objective", _SELECTION)
    if policy == "ip":
        return ("question_source", *bank, _N_QUESTIONS, "n_answers")
    if policy == "random":
        n = (_N_QUESTIONS,) if question_source == "generated" else ()
        return ("question_source", *bank, *n)
    if policy == "fixed":
        return ("question_source", *bank)
    return ()


def _values(question: QuestionPolicy) -> dict[str, Value]:
    """The policy's settings (a bank by ``bank_label``, ids as text)."""
    return {
        "question_source": question.question_source.value,
        _BANK: question.bank_label,
        _N_QUESTIONS: question.n_candidate_questions,
        "n_answers": question.n_answers,
        "objective": question.objective.value,
        _SELECTION: None
        if question.selection_calibration_id is None
        else str(question.selection_calibration_id),
        "answer_source": question.answer_source.value,
    }


def _recorded(params: Mapping[str, Any]) -> dict[str, Value] | None:
    """A calibration's settings; a setting its params do not record (under either
    spelling) is None and so never matches, except the objective and selection, which older
    runs did not record and which then were set_size and none. None when the params are no
    valid policy."""
    readable = dict(params)
    if readable.get("question_source") != "bank":  # a bank name there says nothing
        for key in (_BANK, OLDER_SPELLINGS[_BANK]):
            readable.pop(key, None)
    try:
        values = _values(QuestionPolicy.from_json(readable))
    except InvalidInputError:
        return None
    for field in values:
        older = OLDER_SPELLINGS.get(field)
        if field not in ("objective", _SELECTION) and field not in params and older not in params:
            values[field] = None
    return values


def specialty_key(name: str) -> str:
    """How specialty names compare: whitespace collapsed, case folded."""
    return " ".join(name.split()).casefold()


def mismatches(session: SessionPolicy, calibration: ActiveCalibration) -> tuple[Mismatch, ...]:
    """Every setting of the session's policy in which the calibration differs (empty: it serves)."""
    params = calibration.params
    question = session.question
    out: list[Mismatch] = []
    if calibration.policy != question.policy.value:
        out.append(Mismatch("policy", question.policy.value, calibration.policy))
    if not math.isclose(calibration.alpha, question.alpha, rel_tol=0, abs_tol=ALPHA_TOLERANCE):
        out.append(Mismatch("alpha", question.alpha, calibration.alpha))
    if params.get("purpose", "display") != "display":
        out.append(Mismatch("purpose", "display", str(params.get("purpose"))))
    answer_source = params.get("answer_source")
    if answer_source != "llm":
        out.append(Mismatch("answer_source", "llm", answer_source))
    wanted = _values(question)
    fields = _fields(question.policy.value, wanted["question_source"])
    have = _recorded(params)
    if have is None:
        return (*out, Mismatch("question_policy", "valid", None)) if fields else tuple(out)
    for field in fields:
        if field == _BANK and have["question_source"] != "bank":
            continue  # the source already differs; a bank name would add nothing
        if field == _SELECTION and session.any_selection:
            continue  # the session takes whichever selection calibration serves
        if have[field] != wanted[field]:
            out.append(Mismatch(field, wanted[field], have[field]))
    only = params.get("specialty")
    if (
        session.specialty
        and isinstance(only, str)
        and specialty_key(only) != specialty_key(session.specialty)
    ):
        out.append(Mismatch("specialty", session.specialty, only))
    return tuple(out)


def policy_key(policy: str, params: Mapping[str, Any]) -> tuple[tuple[str, Value], ...]:
    """What two calibrations (same model, prompt version and alpha) must share to compete."""
    have = _recorded(params) or {}
    fields = ("answer_source", *_fields(policy, have.get("question_source")))
    return (("policy", policy), *((f, have.get(f)) for f in fields))


def choose(session: SessionPolicy, candidates: Sequence[ActiveCalibration]) -> Match:
    """The active calibration that serves the session, else the closest one's differences.

    Among matches, one covering the session's whole budget (T >= max_questions) wins, then
    the most recently updated.
    """
    if not candidates:
        return Match(None, (), "no calibration is active for this model and prompt version")
    scored = [(mismatches(session, c), c) for c in candidates]
    exact = [c for found, c in scored if not found]
    if exact:
        best = max(exact, key=lambda c: (c.max_questions >= session.max_questions, c.updated_at))
        return Match(best.id)
    found, _ = min(scored, key=lambda fc: (len(fc[0]), -fc[1].updated_at.timestamp()))
    reason = "the closest active one differs in " + "; ".join(m.describe() for m in found)
    return Match(None, found, reason)
