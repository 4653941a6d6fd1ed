"""A rare-disease case world on the HPO: a differential, its questions, a model and a patient.

``build_world`` picks, seeded, a presenting phenotype and K diseases annotated with it
(propagated), then the question bank: "Does the patient have <term name>?" for the terms
that discriminate them (annotated, after propagation, to at least one candidate and not to
all of them), the most evenly splitting first, at most ``max_terms``.

The model (``KbWorld.model``, a ``TabularModel``) is the naive Bayes of a symptom checker:
``P(yes | disease, term) = sensitivity`` when the propagated annotations contain the term,
else ``background``, one value of each for every term. It is misspecified on purpose: a
child term and its ancestors count as independent evidence (over-confident where terms
correlate), and it knows neither the patient's per-finding frequencies, nor that patients
sometimes report only a broader term, nor that they say "unsure".

The simulated patient (``PatientConfig``, ``patient_answers``) with true disease d:

- shows each direct annotation t of d with its own probability f(d, t): hpo3 does not ship
  the annotation frequencies, so f is drawn once per world, seeded, from the HPO frequency
  classes (very frequent 80-99%, frequent 30-79%, occasional 5-29%, uniform within each);
- reports a shown finding, with probability ``ancestor_rate``, as one of its parent terms
  instead (so it answers "yes" to the parent and its ancestors, "no" to the specific term);
- has background findings: each bank term with probability ``false_positive`` (with its
  ancestors, as a real finding would be);
- answers every question "yes" when the term is among its findings, else "no", except that
  with probability ``unsure_rate`` it answers "unsure" (which the model ignores).

A patient is one seeded draw of every finding, so asking the same question twice gets the
same answer; ``patient_answers`` gives the whole (G, A) answer matrix of a list of seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.errors import InvalidInputError
from app.worlds.kb.hpo import Disease, HpoKb
from app.worlds.tabular import ANSWER_NO, ANSWER_UNKNOWN, ANSWER_YES, NO, YES, TabularModel

__all__ = [
    "FREQUENCY_CLASSES",
    "UNSURE",
    "KbWorld",
    "PatientConfig",
    "WorldConfig",
    "answer_text",
    "build_world",
    "discriminating_terms",
    "naive_bayes",
    "patient_answers",
    "question_for",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
AnswerArray = npt.NDArray[np.int8]

# The HPO annotation frequency classes (HP:0040281..HP:0040283), as probability ranges.
FREQUENCY_CLASSES: tuple[tuple[float, float], ...] = ((0.80, 0.99), (0.30, 0.79), (0.05, 0.29))
_SOURCES = ("omim", "orpha", "both")
# Seed-word tag of the per-world frequency draws.
_FREQUENCY_TAG = 1 << 29


UNSURE = "Unsure."


def answer_text(code: int) -> str:
    """The patient's words for an answer code: "Yes.", "No." or "Unsure."."""
    if code == ANSWER_UNKNOWN:
        return UNSURE
    return YES if code == ANSWER_YES else NO


def question_for(name: str) -> str:
    """The question asked about a term."""
    return f"Does the patient have {name.casefold()}?"


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """Which differential, which questions, and the model's two numbers."""

    candidates: int = 15
    seed: int = 0
    source: str = "omim"  # omim | orpha | both (both may hold one disease twice)
    min_annotations: int = 8  # direct findings a candidate needs
    min_sharing: int = 40  # a presenting term is shared by this many diseases or more ...
    max_sharing: int = 400  # ... and by at most this many
    max_terms: int = 300
    sensitivity: float = 0.8
    background: float = 0.05

    def __post_init__(self) -> None:
        if self.candidates < 2:
            raise InvalidInputError(f"need at least 2 candidates, got {self.candidates}")
        if self.source not in _SOURCES:
            raise InvalidInputError(f"source must be one of {_SOURCES}, got {self.source!r}")
        if not 0 < self.background < self.sensitivity < 1:
            raise InvalidInputError("need 0 < background < sensitivity < 1")
        if self.max_terms < 1 or self.min_annotations < 1:
            raise InvalidInputError("need max_terms >= 1 and min_annotations >= 1")
        if not self.candidates <= self.min_sharing <= self.max_sharing:
            raise InvalidInputError("need candidates <= min_sharing <= max_sharing")

    def settings(self) -> dict[str, object]:
        """JSON-safe summary for reports."""
        return {
            "candidates": self.candidates,
            "world_seed": self.seed,
            "source": self.source,
            "min_annotations": self.min_annotations,
            "presenting term shared by": f"{self.min_sharing}..{self.max_sharing} diseases",
            "max_terms": self.max_terms,
            "model": f"naive Bayes, sensitivity {self.sensitivity}, background {self.background}",
        }


@dataclass(frozen=True, slots=True)
class PatientConfig:
    """How the simulated patient departs from the model."""

    ancestor_rate: float = 0.2
    false_positive: float = 0.02
    unsure_rate: float = 0.1

    def __post_init__(self) -> None:
        for name in ("ancestor_rate", "false_positive", "unsure_rate"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise InvalidInputError(f"{name} must lie in [0, 1), got {value!r}")

    def settings(self) -> dict[str, object]:
        """JSON-safe summary for reports."""
        return {
            "finding frequencies": "seeded per world from the HPO frequency classes "
            "(hpo3 ships no annotation frequencies)",
            "ancestor_rate": self.ancestor_rate,
            "false_positive": self.false_positive,
            "unsure_rate": self.unsure_rate,
        }


@dataclass(frozen=True, eq=False, slots=True)
class KbWorld:
    """One differential: the candidates, the bank's terms, the model, the patient's data."""

    config: WorldConfig
    presenting: int
    diseases: tuple[Disease, ...]
    terms: tuple[int, ...]  # bank order
    annotated: BoolArray  # (K, A): propagated annotation
    model: TabularModel
    # Per candidate: (probability shown, bank indices if reported as itself, bank indices of
    # each parent's ancestors) per direct finding.
    findings: tuple[tuple[tuple[float, IntArray, tuple[IntArray, ...]], ...], ...]
    term_ancestors: tuple[IntArray, ...]  # per bank term: bank indices of it and its ancestors

    @property
    def labels(self) -> tuple[str, ...]:
        """The candidate diseases, as ``"<id> <name>"``."""
        return self.model.labels

    def summary(self, kb: HpoKb) -> dict[str, object]:
        """JSON-safe description of the differential."""
        return {
            "presenting": f"{kb.term_id(self.presenting)} {kb.names[self.presenting]}",
            "diseases": list(self.labels),
            "terms": len(self.terms),
            "annotated fraction": round(float(self.annotated.mean()), 3),
        }


def _eligible(kb: HpoKb, config: WorldConfig) -> list[Disease]:
    prefixes = {"omim": ("OMIM",), "orpha": ("ORPHA",), "both": ("OMIM", "ORPHA")}[config.source]
    return [
        d
        for d in kb.diseases
        if d.id.split(":")[0] in prefixes and len(d.direct) >= config.min_annotations
    ]


def _differential(kb: HpoKb, config: WorldConfig) -> tuple[int, list[Disease]]:
    """A seeded presenting term among those shared by min..max_sharing eligible diseases,
    and K of those diseases (distinct names), uniformly."""
    pool = _eligible(kb, config)
    sharing: dict[int, list[Disease]] = {}
    for disease in pool:
        for term in kb.propagated(disease):
            sharing.setdefault(term, []).append(disease)
    terms = sorted(
        t for t, ds in sharing.items() if config.min_sharing <= len(ds) <= config.max_sharing
    )
    if not terms:
        raise InvalidInputError("no presenting term is shared by that many diseases")
    rng = np.random.default_rng(np.random.SeedSequence([config.seed]))
    presenting = terms[int(rng.integers(len(terms)))]
    chosen: list[Disease] = []
    names: set[str] = set()
    for j in rng.permutation(len(sharing[presenting])):
        disease = sharing[presenting][int(j)]
        if disease.name.casefold() not in names:
            chosen.append(disease)
            names.add(disease.name.casefold())
        if len(chosen) == config.candidates:
            break
    return presenting, chosen


def naive_bayes(
    kb: HpoKb,
    diseases: Sequence[Disease],
    terms: Sequence[int],
    *,
    name: str,
    sensitivity: float,
    background: float,
) -> TabularModel:
    """The symptom checker's model: P(yes) = sensitivity where the propagated annotations
    hold the term, else background; labels ``Disease.label``, uniform prior."""
    annotated = np.array([[t in kb.propagated(d) for t in terms] for d in diseases], np.bool_)
    return TabularModel(
        name=name,
        labels=tuple(d.label for d in diseases),
        questions=tuple(question_for(kb.names[t]) for t in terms),
        p_yes=np.where(annotated, sensitivity, background),
        prior=np.full(len(diseases), 1.0 / len(diseases)),
    )


def discriminating_terms(kb: HpoKb, diseases: Sequence[Disease], max_terms: int) -> tuple[int, ...]:
    """Discriminating terms, most even split first (ties by term number), at most max_terms."""
    counts: dict[int, int] = {}
    for disease in diseases:
        for term in kb.propagated(disease):
            counts[term] = counts.get(term, 0) + 1
    k = len(diseases)
    useful = [t for t, c in counts.items() if 0 < c < k]
    # Distinct questions: two terms with the same name (case-insensitive) would clash.
    seen: set[str] = set()
    ordered = []
    for t in sorted(useful, key=lambda t: (abs(2 * counts[t] - k), t)):
        name = kb.names[t].casefold()
        if name not in seen:
            seen.add(name)
            ordered.append(t)
    return tuple(ordered[:max_terms])


def build_world(kb: HpoKb, config: WorldConfig = WorldConfig()) -> KbWorld:
    """The differential, its bank, the naive-Bayes model and the patient's finding data."""
    presenting, diseases = _differential(kb, config)
    if len(diseases) < config.candidates:
        raise InvalidInputError(
            f"only {len(diseases)} distinct diseases share the presenting term; "
            f"asked for {config.candidates}"
        )
    terms = discriminating_terms(kb, diseases, config.max_terms)
    index = {t: a for a, t in enumerate(terms)}
    model = naive_bayes(
        kb,
        diseases,
        terms,
        name=f"hpo:{config.source}:K={config.candidates}:seed={config.seed}",
        sensitivity=config.sensitivity,
        background=config.background,
    )
    annotated = np.asarray(model.p_yes == config.sensitivity, dtype=np.bool_)

    def in_bank(ancestors: frozenset[int]) -> IntArray:
        return np.array(sorted(index[t] for t in ancestors if t in index), dtype=np.intp)

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _FREQUENCY_TAG]))
    findings = []
    for disease in diseases:
        rows = []
        for term in sorted(disease.direct):
            low, high = FREQUENCY_CLASSES[int(rng.integers(len(FREQUENCY_CLASSES)))]
            shown = float(rng.uniform(low, high))
            parents = tuple(in_bank(kb.ancestors(p)) for p in kb.parents.get(term, ()))
            rows.append((shown, in_bank(kb.ancestors(term)), parents))
        findings.append(tuple(rows))
    return KbWorld(
        config=config,
        presenting=presenting,
        diseases=tuple(diseases),
        terms=terms,
        annotated=annotated,
        model=model,
        findings=tuple(findings),
        term_ancestors=tuple(in_bank(kb.ancestors(t)) for t in terms),
    )


def _one_patient(
    world: KbWorld, disease: int, patient: PatientConfig, rng: np.random.Generator
) -> AnswerArray:
    has = np.zeros(len(world.terms), dtype=np.bool_)
    for shown, itself, parents in world.findings[disease]:
        draw, broader, which = rng.random(3)
        if draw >= shown:
            continue
        if parents and broader < patient.ancestor_rate:
            has[parents[int(which * len(parents))]] = True
        else:
            has[itself] = True
    for a in np.flatnonzero(rng.random(len(world.terms)) < patient.false_positive):
        has[world.term_ancestors[int(a)]] = True
    answers = np.where(has, ANSWER_YES, ANSWER_NO).astype(np.int8)
    answers[rng.random(len(world.terms)) < patient.unsure_rate] = ANSWER_UNKNOWN
    return answers


def patient_answers(
    world: KbWorld,
    truth: npt.ArrayLike,
    seeds: Sequence[np.random.SeedSequence],
    patient: PatientConfig = PatientConfig(),
) -> AnswerArray:
    """(G, A) answers (ANSWER_YES / ANSWER_NO / ANSWER_UNKNOWN): patient g has disease
    ``truth[g]`` and draws every finding from ``seeds[g]``."""
    labels = np.asarray(truth, dtype=np.intp)
    if labels.shape != (len(seeds),):
        raise InvalidInputError("need one seed per patient")
    out = np.empty((len(seeds), len(world.terms)), dtype=np.int8)
    for g, (disease, seed) in enumerate(zip(labels, seeds, strict=True)):
        out[g] = _one_patient(world, int(disease), patient, np.random.default_rng(seed))
    return out
