"""Labelled knowledge-base cases for ``pursuit calibrate``, and the patient who answers them.

A deployment that serves the HPO provider (``PURSUIT_PROVIDER=hpo``) is calibrated like any
other: ``pursuit calibrate --dataset FILE --patient kb ...`` on a MediQ-format file of cases
(``pursuit kb-cases --out FILE`` writes one).
``kb_cases`` writes those cases from the world of ``app.worlds.kb.world``: case i takes the
differential of world ``world_seed + i % worlds`` (``WorldConfig`` with those candidates), a
true disease drawn uniformly from it and one simulated patient (``patient_answers``), both
seeded by (seed, i). A record holds

- ``options``: the candidates as ``"<id> <name>"`` (what ``HpoProvider`` resolves), and
  ``answer_idx``, the true one's index;
- ``context[0]``: the case id and the presenting phenotype the differential was drawn for
  (the id keeps the fingerprints of one differential's patients apart);
- ``facts``: the patient's answer to every question of the world's bank, one line each,
  ``"Does the patient have <term>? Yes."`` (``No.``, ``Unsure.``): the whole patient, drawn
  once, so a question asked twice gets the same answer.

``KbCasePatient`` is the ``SimulatedPatient`` of such a case: it looks the question up in the
facts and replies with its answer; a question the case has no line for (a term outside the
world's bank) gets ``Unsure.``, which carries no information. The service's provider asks
about the same terms as the world's bank when both use the same ``max_terms``
(``discriminating_terms`` of the same candidates). Calibration with these cases covers
patients drawn like them: differentials that share a presenting phenotype, and patients
who depart from the naive-Bayes model as ``PatientConfig`` says.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from app.engine.banks import normalize_question
from app.errors import InvalidInputError
from app.worlds.kb.hpo import HpoKb
from app.worlds.kb.world import (
    UNSURE,
    KbWorld,
    PatientConfig,
    WorldConfig,
    answer_text,
    build_world,
    patient_answers,
)

__all__ = ["INQUIRY", "KbCasePatient", "kb_cases"]

INQUIRY = "Which of these diseases does the patient have?"
SPECIALTY = "rare disease"
# Seed-word tag of the cases' truth and patient draws (distinct from the bench's tags).
_CASES_TAG = (1 << 30) + 7


def kb_cases(
    kb: HpoKb,
    *,
    cases: int,
    worlds: int,
    world: WorldConfig = WorldConfig(),
    patient: PatientConfig = PatientConfig(),
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """``cases`` MediQ-format records over ``worlds`` differentials (``world.seed`` onward)."""
    if cases < 1 or worlds < 1:
        raise InvalidInputError("need at least one case and one world")
    built: dict[int, KbWorld] = {}
    for i in range(cases):
        world_seed = world.seed + i % worlds
        if world_seed not in built:
            built[world_seed] = build_world(kb, dataclasses.replace(world, seed=world_seed))
        w = built[world_seed]
        root = np.random.SeedSequence([seed, _CASES_TAG, i])
        truth_seed, patient_seed = root.spawn(2)
        truth = int(np.random.default_rng(truth_seed).integers(len(w.labels)))
        answers = patient_answers(w, [truth], [patient_seed], patient)[0]
        presenting = kb.names[w.presenting].casefold()
        case_id = f"hpo-{seed}-{i}"
        yield {
            "id": case_id,
            "question": INQUIRY,
            "options": list(w.labels),
            "answer_idx": truth,
            "answer": w.labels[truth],
            # The case id makes each patient's fingerprint its own: patients of one
            # differential share the inquiry and options (the split checks compare them).
            "context": [
                f"Patient {case_id} presents with {presenting}; a rare disease is suspected."
            ],
            "facts": [
                f"{question} {answer_text(int(code))}"
                for question, code in zip(w.model.questions, answers, strict=True)
            ],
            "patient": {"specialties": [SPECIALTY]},
            "world": {"seed": world_seed, "presenting": kb.term_id(w.presenting)},
        }


@functools.lru_cache(maxsize=64)
def _answer_book(facts: tuple[str, ...]) -> dict[str, str]:
    book: dict[str, str] = {}
    for fact in facts:
        asked, mark, answer = fact.rpartition("? ")
        if mark:
            book[normalize_question(asked + "?")] = answer
    if not book:
        raise InvalidInputError(
            "the kb patient answers cases written by `pursuit kb-cases`: this case's facts "
            "are not '<question>? <answer>' lines"
        )
    return book


class KbCasePatient:
    """Replies to a question with the case's answer line for it (``Unsure.`` when none)."""

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str:
        return _answer_book(tuple(facts)).get(normalize_question(question), UNSURE)
