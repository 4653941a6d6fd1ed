"""Seeded, deterministic estimation / calibration / test splits of a case list.

Each case gets the key ``sha256(f"{seed}:{case_id}")``; cases are ordered by that key, so
the assignment depends only on the seed and the case ids, not on the order of the file.
Without stratification the first ``round(n * estimation)`` keys are the estimation split,
the next ``round(n * (estimation + calibration)) - ...`` the calibration split, the rest
the test split. Stratified (``stratify="specialty"``), the same cut is made within every
specialty (``MediQCase.specialty``), so each split keeps the dataset's mix of specialties
up to rounding. Within a split, cases stay in key order: "the first N calibration cases"
is a seeded random sample of the split.

Splits are disjoint by construction; callers that combine runs (a stored calibration and a
test run) also check disjointness by ``MediQCase.fingerprint``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from app.datasets.mediq import MediQCase
from app.errors import InvalidInputError

__all__ = [
    "DEFAULT_FRACTIONS",
    "SplitFractions",
    "Splits",
    "filter_specialty",
    "shared_cases",
    "split_cases",
]

Stratify = Literal["specialty"] | None


@dataclass(frozen=True, slots=True)
class SplitFractions:
    """Shares of the estimation, calibration and test splits (they must sum to 1)."""

    estimation: float = 0.1
    calibration: float = 0.45
    test: float = 0.45

    def __post_init__(self) -> None:
        parts = (self.estimation, self.calibration, self.test)
        if any(not 0 <= p <= 1 for p in parts) or abs(sum(parts) - 1.0) > 1e-9:
            raise InvalidInputError(f"split fractions must be in [0, 1] and sum to 1, got {parts}")

    def as_dict(self) -> dict[str, float]:
        return {"estimation": self.estimation, "calibration": self.calibration, "test": self.test}


DEFAULT_FRACTIONS = SplitFractions()


@dataclass(frozen=True, slots=True)
class Splits:
    """Three disjoint case lists, each in seeded key order."""

    estimation: tuple[MediQCase, ...]
    calibration: tuple[MediQCase, ...]
    test: tuple[MediQCase, ...]

    def sizes(self) -> dict[str, int]:
        return {
            "estimation": len(self.estimation),
            "calibration": len(self.calibration),
            "test": len(self.test),
        }


def _key(seed: int, case_id: str) -> str:
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()


def _cut(
    ordered: Sequence[MediQCase], fractions: SplitFractions
) -> tuple[list[MediQCase], list[MediQCase], list[MediQCase]]:
    n = len(ordered)
    first = round(n * fractions.estimation)
    second = round(n * (fractions.estimation + fractions.calibration))
    return list(ordered[:first]), list(ordered[first:second]), list(ordered[second:])


def split_cases(
    cases: Iterable[MediQCase],
    *,
    seed: int,
    fractions: SplitFractions = DEFAULT_FRACTIONS,
    stratify: Stratify = None,
) -> Splits:
    """Deterministic disjoint splits (see the module docstring)."""
    if stratify not in (None, "specialty"):
        raise InvalidInputError(f"stratify must be None or 'specialty', got {stratify!r}")
    keyed = sorted(cases, key=lambda c: (_key(seed, c.case_id), c.case_id))
    if stratify is None:
        est, cal, test = _cut(keyed, fractions)
    else:
        est, cal, test = [], [], []
        strata: dict[str, list[MediQCase]] = {}
        for case in keyed:
            strata.setdefault(case.specialty, []).append(case)
        for name in sorted(strata):
            e, c, t = _cut(strata[name], fractions)
            est += e
            cal += c
            test += t
    order = {c.case_id: i for i, c in enumerate(keyed)}

    def ordered(items: list[MediQCase]) -> tuple[MediQCase, ...]:
        return tuple(sorted(items, key=lambda c: order[c.case_id]))

    return Splits(ordered(est), ordered(cal), ordered(test))


def filter_specialty(cases: Iterable[MediQCase], specialty: str | None) -> tuple[MediQCase, ...]:
    """Cases whose specialty equals ``specialty`` (case-insensitive); all when None."""
    if specialty is None:
        return tuple(cases)
    want = specialty.strip().casefold()
    return tuple(c for c in cases if c.specialty.casefold() == want)


def shared_cases(a: Iterable[MediQCase], b: Iterable[MediQCase]) -> int:
    """How many cases of ``a`` are also in ``b``, by ``MediQCase.fingerprint`` (the same
    case under another id, or in another file, counts)."""
    return len({c.fingerprint for c in a} & {c.fingerprint for c in b})
