"""The HPO loader and the case world: propagation, the shared presenting phenotype, the bank,
the two-number model and the simulated patient's rates (seeded binomial bands)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from app.errors import InvalidInputError
from app.worlds.kb.hpo import PHENOTYPIC_ABNORMALITY, HpoKb
from app.worlds.kb.world import PatientConfig, WorldConfig, build_world, patient_answers
from app.worlds.tabular import ANSWER_UNKNOWN, ANSWER_YES

SEIZURE, FOCAL_SEIZURE = 1250, 7359
NERVOUS_SYSTEM = 707  # HP:0000707 Abnormality of the nervous system
LEVEL = 0.001


def test_the_wheel_ships_the_release_and_both_disease_sources(hpo: HpoKb) -> None:
    assert hpo.version == "2025-11-24"
    prefixes = {d.id.split(":")[0] for d in hpo.diseases}
    assert prefixes == {"OMIM", "ORPHA"}
    assert "Human Phenotype Ontology" in hpo.attribution and hpo.version in hpo.attribution
    # Only the findings branch is kept: every term reaches HP:0000118.
    assert all(PHENOTYPIC_ABNORMALITY in hpo.ancestors(t) for t in list(hpo.names)[:500])


def test_propagation_follows_the_parents_up_to_the_root(hpo: HpoKb) -> None:
    assert hpo.names[SEIZURE] == "Seizure"
    focal = hpo.ancestors(FOCAL_SEIZURE)
    assert {FOCAL_SEIZURE, SEIZURE, NERVOUS_SYSTEM, PHENOTYPIC_ABNORMALITY} <= focal
    for term in focal - {PHENOTYPIC_ABNORMALITY}:
        assert any(p in focal for p in hpo.parents[term])  # closed under parents
        assert hpo.ancestors(term) <= focal
    disease = next(d for d in hpo.diseases if FOCAL_SEIZURE in d.direct)
    assert SEIZURE in hpo.propagated(disease)
    assert hpo.propagated(disease) == frozenset().union(*(hpo.ancestors(t) for t in disease.direct))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_differential_shares_the_presenting_phenotype_and_the_bank_discriminates(
    hpo: HpoKb, seed: int
) -> None:
    config = WorldConfig(candidates=12, seed=seed)
    world = build_world(hpo, config)
    assert len(world.diseases) == 12 == len({d.name.casefold() for d in world.diseases})
    for disease in world.diseases:
        assert world.presenting in hpo.propagated(disease)
        assert len(disease.direct) >= config.min_annotations
    counts = world.annotated.sum(axis=0)
    assert ((counts > 0) & (counts < 12)).all()
    assert world.presenting not in world.terms
    assert set(np.unique(world.model.p_yes)) == {config.sensitivity, config.background}
    assert build_world(hpo, config).terms == world.terms  # seeded


def test_a_differential_no_term_can_present_is_refused(hpo: HpoKb) -> None:
    with pytest.raises(InvalidInputError, match="no presenting term"):
        build_world(hpo, WorldConfig(min_sharing=100_000, max_sharing=100_000))


def test_the_patient_departs_from_the_model_at_its_rates(hpo: HpoKb) -> None:
    world = build_world(hpo, WorldConfig(candidates=15, seed=0))
    n = 400
    truth = np.arange(n) % 15
    seeds = [np.random.SeedSequence([99, i]) for i in range(n)]
    patient = PatientConfig(ancestor_rate=0.2, false_positive=0.02, unsure_rate=0.1)
    answers = patient_answers(world, truth, seeds, patient)
    unsure = int((answers == ANSWER_UNKNOWN).sum())
    assert binomtest(unsure, answers.size, 0.1).pvalue > LEVEL
    annotated = world.annotated[truth]
    informative = answers != ANSWER_UNKNOWN
    yes = answers == ANSWER_YES
    # Unannotated terms: "yes" only from background findings (and their descendants' ones),
    # well below the model's sensitivity and above zero.
    fp = yes[~annotated & informative].mean()
    assert 0.005 < fp < 0.2
    # Annotated terms are shown with their own frequencies, not the model's one 0.8.
    shown = yes[annotated & informative].mean()
    assert 0.3 < shown < 0.8
    # Same seeds, same patients.
    assert (patient_answers(world, truth, seeds, patient) == answers).all()
