"""Which active calibration may serve a session, and why the others may not (pure).

A calibration's thresholds hold only for interviews run with the question policy it was
made with: the same model and prompt version (the repository filters on those), policy and
alpha, and the same way candidate questions and answers are produced. Which settings make
the policy depends on the policy:

- ``cip``/``ip`` score every candidate question against simulated answers: question source,
  bank, candidate questions per turn and answers per candidate all matter;
- ``random`` draws uniformly among the candidates: source and bank matter, and the number
  of generated proposals (for a bank, a uniform draw from a uniform subset is a uniform draw
  from the bank, so the subset size does not);
- ``fixed`` takes the bank in order: source and bank;
- ``none`` asks nothing.

A calibration whose answer source is ``estimation`` never serves (serving simulates answers
with the LLM), and one made on a single specialty's cases does not serve a session that
declares another specialty. A setting the calibration does not record never matches.

Not matched, on purpose:

- the question budget T: the question asked at step k does not depend on the budget, so a
  calibration of steps 0..T serves steps 0..T of any session; later steps are uncalibrated
  (the session service says so at those steps). A calibration covering the whole budget is
  preferred;
- the stop rules (singleton, no gain, spread): they end an interview but never change the
  question asked at a step, so the histories at step k are the calibrated ones (coverage at
  a data-dependent stopping step is another matter, stated in the guarantee);
- grouping (per specialty) and anytime: they change the thresholds, not the policy.

At most one calibration is active per ``serving_key`` (``CalibrationRepository.activate``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "ALPHA_TOLERANCE",
    "ActiveCalibration",
    "Match",
    "Mismatch",
    "SessionPolicy",
    "choose",
    "mismatches",
    "serving_key",
    "specialty_key",
]

ALPHA_TOLERANCE = 1e-9
CUSTOM_BANK = "(caller-supplied list)"

Value = str | int | float | None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The session options a calibration must share (model and prompt version aside)."""

    policy: str
    alpha: float
    question_source: str
    bank: str | None  # a named bank, CUSTOM_BANK for a caller-supplied list, None: generated
    n_questions: int
    n_answers: int
    max_questions: int
    specialty: str | None = None


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


def _fields(policy: str, question_source: Value) -> tuple[str, ...]:
    """The settings that define ``policy``'s questions (besides policy and alpha)."""
    bank = ("bank",) if question_source == "bank" else ()
    if policy in ("cip", "ip"):
        return ("question_source", *bank, "n_questions", "n_answers")
    if policy == "random":
        n = ("n_questions",) if question_source == "generated" else ()
        return ("question_source", *bank, *n)
    if policy == "fixed":
        return ("question_source", *bank)
    return ()


def _recorded(params: Mapping[str, Any], field: str) -> Value:
    value = params.get(field)
    if value is None:
        return None
    if field in ("n_questions", "n_answers"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return str(value)


def specialty_key(name: str) -> str:
    """How specialty names compare: whitespace collapsed, case folded."""
    return " ".join(name.split()).casefold()


def mismatches(session: SessionPolicy, calibration: ActiveCalibration) -> tuple[Mismatch, ...]:
    """Every setting of the session's policy in which the calibration differs (empty: it serves)."""
    params = calibration.params
    out: list[Mismatch] = []
    if calibration.policy != session.policy:
        out.append(Mismatch("policy", session.policy, calibration.policy))
    if not math.isclose(calibration.alpha, session.alpha, rel_tol=0, abs_tol=ALPHA_TOLERANCE):
        out.append(Mismatch("alpha", session.alpha, calibration.alpha))
    answer_source = _recorded(params, "answer_source")
    if answer_source != "llm":
        out.append(Mismatch("answer_source", "llm", answer_source))
    wanted: dict[str, Value] = {
        "question_source": session.question_source,
        "bank": session.bank,
        "n_questions": session.n_questions,
        "n_answers": session.n_answers,
    }
    for field in _fields(session.policy, session.question_source):
        have = _recorded(params, field)
        if field == "bank" and _recorded(params, "question_source") != "bank":
            continue  # the source already differs; a bank name would add nothing
        if have != wanted[field]:
            out.append(Mismatch(field, wanted[field], have))
    only = _recorded(params, "specialty")
    if (
        session.specialty
        and isinstance(only, str)
        and specialty_key(only) != specialty_key(session.specialty)
    ):
        out.append(Mismatch("specialty", session.specialty, only))
    return tuple(out)


def serving_key(policy: str, params: Mapping[str, Any]) -> tuple[tuple[str, Value], ...]:
    """What two calibrations (same model, prompt version and alpha) must share to compete."""
    source = _recorded(params, "question_source")
    fields = ("answer_source", *_fields(policy, source))
    return (("policy", policy), *((f, _recorded(params, f)) for f in fields))


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
