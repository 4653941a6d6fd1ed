"""The MediQ JSONL loader and the seeded splits."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from app.datasets import (
    SHIPPED_DATASETS_DIR,
    DatasetError,
    SplitFractions,
    filter_specialty,
    load_mediq,
    split_cases,
)
from tests.calibrations.fakes import OPTIONS, record, write_dataset


def test_a_good_file(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "good.jsonl", n=8)
    data = load_mediq(path)
    assert len(data) == 8 and data.problems == ()
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    case = data.cases[3]
    assert case.case_id == "3" and case.line == 4
    assert case.labels == tuple(OPTIONS.values())
    assert case.true_label == "Common cold" and case.answer_index == 3
    assert case.summary == "Patient 3 feels unwell." and case.inquiry.startswith("What")
    # The leading "1. " numbering is stripped: the patient prompt numbers facts itself.
    assert case.facts == ("The patient has a fever of 39 C.", "No rash.")
    assert case.specialty == "Internal Medicine" and case.age == 23 and case.sex == "female"
    assert case.case_context.summary == case.summary


def test_bad_lines_are_reported_with_their_numbers(tmp_path: Path) -> None:
    lines = [
        "{not json",
        json.dumps(record(100, answer_idx="E")),
        json.dumps(record(101, options={"A": "x", "B": "x"})),
        json.dumps({k: v for k, v in record(102).items() if k != "atomic_facts"}),
        json.dumps(record(103, context=[])),
        json.dumps(record(3)),  # duplicate id
        json.dumps(record(104, answer="Measles", answer_idx="A")),
    ]
    path = write_dataset(tmp_path / "bad.jsonl", n=4, lines=lines)
    with pytest.raises(DatasetError) as info:
        load_mediq(path)
    assert [p.line for p in info.value.problems] == [5, 6, 7, 8, 9, 10, 11]
    assert "line 5" in info.value.detail and "duplicate id '3'" in info.value.detail
    assert info.value.status == 422

    lenient = load_mediq(path, strict=False)
    assert [c.case_id for c in lenient.cases] == ["0", "1", "2", "3"]
    assert [p.line for p in lenient.problems] == [5, 6, 7, 8, 9, 10, 11]
    assert "answer_idx" in lenient.problems[1].message


def test_the_facts_variant_and_specialty_fallbacks(tmp_path: Path) -> None:
    base = {k: v for k, v in record(0).items() if k != "atomic_facts"}
    rows = [
        {**base, "id": "a", "facts": ["Fever.", "Cough."]},
        {**base, "id": "b", "facts": ["Fever."], "patient": {"gpt_specialty": "Urology"}},
        {**base, "id": "c", "facts": [], "patient": {}, "options": ["x", "y"], "answer_idx": 1},
    ]
    for r in rows[2:]:
        r.pop("answer")
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = load_mediq(path)
    assert data.cases[0].facts == ("Fever.", "Cough.")
    assert [c.specialty for c in data.cases] == ["Internal Medicine", "Urology", "unknown"]
    assert data.cases[2].labels == ("x", "y") and data.cases[2].true_label == "y"


def test_the_shipped_dev_split_loads_and_reports_its_three_contextless_lines() -> None:
    data = load_mediq(SHIPPED_DATASETS_DIR / "imedqa_dev.jsonl", strict=False)
    assert len(data) == 1269
    assert [p.line for p in data.problems] == [225, 299, 780]
    with pytest.raises(DatasetError):
        load_mediq(SHIPPED_DATASETS_DIR / "imedqa_dev.jsonl")


def test_an_unreadable_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_mediq(tmp_path / "missing.jsonl")


def test_splits_are_deterministic_disjoint_and_order_independent(tmp_path: Path) -> None:
    cases = load_mediq(write_dataset(tmp_path / "d.jsonl", n=90)).cases
    a = split_cases(cases, seed=7)
    b = split_cases(tuple(reversed(cases)), seed=7)
    assert a == b
    ids = [{c.case_id for c in part} for part in (a.estimation, a.calibration, a.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {c.case_id for c in cases}
    assert a.sizes() == {"estimation": 9, "calibration": 41, "test": 40}
    other = split_cases(cases, seed=8)
    assert [c.case_id for c in other.calibration] != [c.case_id for c in a.calibration]


def test_stratified_splits_keep_each_specialty_share(tmp_path: Path) -> None:
    cases = load_mediq(write_dataset(tmp_path / "d.jsonl", n=90)).cases  # 30 per specialty
    splits = split_cases(
        cases, seed=1, fractions=SplitFractions(0.2, 0.4, 0.4), stratify="specialty"
    )
    for part, per_specialty in ((splits.estimation, 6), (splits.calibration, 12)):
        assert set(Counter(c.specialty for c in part).values()) == {per_specialty}
    only = filter_specialty(cases, "pediatrics")
    assert len(only) == 30 and {c.specialty for c in only} == {"Pediatrics"}
    with pytest.raises(Exception, match="sum to 1"):
        SplitFractions(0.5, 0.5, 0.5)
