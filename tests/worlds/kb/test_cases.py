"""Knowledge-base cases for ``pursuit calibrate --patient kb``: a MediQ file the loader reads,
a patient who answers like the world's patient, and answers that follow the true disease."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.datasets import load_mediq
from app.errors import InvalidInputError
from app.worlds.kb.cases import KbCasePatient, kb_cases
from app.worlds.kb.hpo import HpoKb
from app.worlds.kb.world import UNSURE, WorldConfig, build_world

WORLD = WorldConfig(candidates=8, max_terms=60, seed=5)


def _write(path: Path, hpo: HpoKb, *, cases: int, worlds: int, seed: int = 0) -> Path:
    records = kb_cases(hpo, cases=cases, worlds=worlds, world=WORLD, seed=seed)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_cases_load_as_a_mediq_dataset_over_the_worlds_differentials(
    tmp_path: Path, hpo: HpoKb
) -> None:
    dataset = load_mediq(_write(tmp_path / "kb.jsonl", hpo, cases=12, worlds=3), strict=True)
    assert len(dataset.cases) == 12 and not dataset.problems
    worlds = {
        s: build_world(hpo, WorldConfig(candidates=8, max_terms=60, seed=s)) for s in (5, 6, 7)
    }
    for i, case in enumerate(dataset.cases):
        world = worlds[5 + i % 3]  # case i takes world seed + i % worlds
        assert case.labels == world.labels
        assert case.true_label in world.labels
        # One answer line per bank question, in bank order.
        assert [f.rsplit("? ", 1)[0] + "?" for f in case.facts] == list(world.model.questions)
        assert {f.rsplit("? ", 1)[1] for f in case.facts} <= {"Yes.", "No.", UNSURE}


def test_the_same_seed_writes_the_same_file_and_another_seed_other_patients(
    tmp_path: Path, hpo: HpoKb
) -> None:
    one = _write(tmp_path / "a.jsonl", hpo, cases=6, worlds=2, seed=1).read_bytes()
    again = _write(tmp_path / "b.jsonl", hpo, cases=6, worlds=2, seed=1).read_bytes()
    other = _write(tmp_path / "c.jsonl", hpo, cases=6, worlds=2, seed=2).read_bytes()
    assert one == again
    assert one != other


async def test_the_patient_answers_from_its_case_and_is_unsure_of_anything_else(
    tmp_path: Path, hpo: HpoKb
) -> None:
    case = load_mediq(_write(tmp_path / "kb.jsonl", hpo, cases=1, worlds=1)).cases[0]
    patient = KbCasePatient()
    for fact in case.facts[:20]:
        question, answer = fact.rsplit("? ", 1)
        # Matched with whitespace and case folded, as the engine compares questions.
        asked = "  " + question.upper() + "? "
        assert await patient.patient_reply(facts=case.facts, question=asked) == answer
    elsewhere = "Does the patient have a term outside this differential?"
    assert await patient.patient_reply(facts=case.facts, question=elsewhere) == UNSURE
    with pytest.raises(InvalidInputError, match="kb-cases"):
        await patient.patient_reply(facts=("The patient is 34.", "Fever."), question=elsewhere)


def test_the_patients_answers_follow_their_true_disease(tmp_path: Path, hpo: HpoKb) -> None:
    """'Yes' is far more frequent on the true disease's annotated terms than elsewhere: the
    label written into each case is the disease its patient was drawn from."""
    dataset = load_mediq(_write(tmp_path / "kb.jsonl", hpo, cases=60, worlds=1))
    world = build_world(hpo, WORLD)
    yes_on, yes_off = [], []
    for case in dataset.cases:
        truth = case.labels.index(case.true_label)
        said_yes = np.array([f.endswith("? Yes.") for f in case.facts])
        yes_on.append(said_yes[world.annotated[truth]].mean())
        yes_off.append(said_yes[~world.annotated[truth]].mean())
    assert np.mean(yes_on) > 0.3 > 0.1 > np.mean(yes_off)
