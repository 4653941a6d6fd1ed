"""Test doubles for calibration runs: a tiny MediQ file, a scripted provider, a patient."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.calibrations.interviews import CaseResult, compute_calibration
from app.calibrations.spec import RunSpec
from app.engine.types import ProviderInfo, WeightedAnswer
from tests.engine.scripted import ScriptedProvider

QUESTIONS = ["Do you have a fever?", "Any cough?", "Any rash?", "Any headache?"]
OPTIONS = {"A": "Influenza", "B": "Measles", "C": "Migraine", "D": "Common cold"}
SPECIALTIES = ["Internal Medicine", "Pediatrics", "Neurology"]


def record(i: int, **overrides: Any) -> dict[str, Any]:
    """A well-formed MediQ record; case i has answer letter A..D cycling."""
    rec: dict[str, Any] = {
        "id": i,
        "question": "What is the most likely diagnosis?",
        "context": [f"Patient {i} feels unwell.", "More detail."],
        "options": dict(OPTIONS),
        "answer_idx": "ABCD"[i % 4],
        "answer": OPTIONS["ABCD"[i % 4]],
        "patient": {
            "age": f"{20 + i} years old",
            "gender": "Female" if i % 2 else "Male",
            "specialties": [SPECIALTIES[i % 3]],
        },
        "atomic_facts": [f"1. The patient has a fever of {38 + i % 2} C.", "2. No rash."],
    }
    rec.update(overrides)
    return rec


def write_dataset(path: Path, n: int = 40, lines: Sequence[str] = ()) -> Path:
    """n good records, then any raw extra ``lines``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps(record(i)) for i in range(n)] + list(lines)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def scripted_provider() -> ScriptedProvider:
    """Posteriors keyed by the last (question, answer); answers yes/no half and half."""
    table: dict[Any, Sequence[float]] = {(): [0.4, 0.3, 0.2, 0.1]}
    for i, q in enumerate(QUESTIONS):
        table[((q, "yes"),)] = [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]][i % 2]
        table[((q, "no"),)] = [[0.1, 0.1, 0.4, 0.4], [0.2, 0.2, 0.5, 0.1]][i % 2]
    return ScriptedProvider(
        table=table,
        default_answers=(WeightedAnswer("yes", 0.5), WeightedAnswer("no", 0.5)),
        proposals=QUESTIONS,
    )


class Crash(BaseException):
    """A process dying: not an Exception, so nothing marks the run failed."""


class StubPatient:
    """Fact-select patient stand-in: 'yes' for even-numbered cases' facts, else 'no'."""

    def __init__(self, *, crash_after: int | None = None, error_after: int | None = None):
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.crash_after = crash_after
        self.error_after = error_after

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str:
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise Crash("killed")
        if self.error_after is not None and len(self.calls) >= self.error_after:
            raise RuntimeError("vLLM went away")
        self.calls.append((tuple(facts), question))
        return "yes" if "38 C" in " ".join(facts) else "no"


def grouped_result(
    sizes: dict[str, int],
    *,
    group_by: str | None = "specialty",
    anytime: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Any], list[str]]:
    """A stored result (as a run computes it) over cases of these groups, steps 0..2, and the
    cases' group keys in position order."""
    rng = np.random.default_rng(seed)
    keys = [g for g, n in sizes.items() for _ in range(n)]
    # Groups differ: the later a group, the higher its scores, so group thresholds differ.
    offsets = {g: i * 0.2 for i, g in enumerate(sizes)}
    results = [
        CaseResult(
            case_id=f"c{i}",
            position=i,
            group=g,
            scores=tuple(float(min(1.0, offsets[g] + rng.uniform(0, 0.6))) for _ in range(3)),
            steps_run=2,
            stop_reason="budget",
            posterior_evaluations=1,
            seconds=0.0,
        )
        for i, g in enumerate(keys)
    ]
    spec = RunSpec.create(
        dataset="x.jsonl",
        dataset_hash="0" * 64,
        policy="cip",
        alpha=0.1,
        max_questions=2,
        cases=len(keys),
        group_by=group_by,
        anytime=anytime,
        question_source="generated",
        bank=None,
        n_questions=3,
        n_answers=2,
    )
    _, result = compute_calibration(
        results, spec=spec, info=ProviderInfo(model="scripted", prompt_version="test")
    )
    return result, keys
