"""A cheap fact-select patient: answer with the case's most similar atomic fact.

MediQ's simulated patient is an LLM that picks the facts answering a question, or says it
cannot answer. On a CPU that costs a generation per question (seconds on Qwen-1.5B), which
dominates a benchmark that uses bank questions and estimation answers. This patient embeds
the question and the case's facts with all-MiniLM-L6-v2 (:mod:`app.patients.minilm`,
milliseconds) and answers with the most similar fact when its cosine similarity reaches
``threshold``, else with ``CANNOT_ANSWER``, the LLM patient's refusal text.

It is an approximation of the LLM patient, not the same patient: it never combines facts,
never paraphrases, and its threshold decides how often it refuses. A calibration is valid
for the patient it was made with, so the run's spec records which one answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from app.llm.prompts import CANNOT_ANSWER
from app.patients.minilm import Array, MiniLM

__all__ = ["DEFAULT_THRESHOLD", "RetrievalPatient"]

# Measured on 20 iMedQA cases x the internal-medicine bank (1,947 questions): the nearest
# fact reaches 0.3 for 31% of the pairs, 0.35 for 19%, 0.4 for 10%, 0.5 for 3%. MiniLM is
# no clinical model: "Do you have a fever?" meets "The patient's temperature is 38.9 C."
# at only 0.35 ("What is your temperature?": 0.57), while loose matches start near 0.35 too
# (a question on symptom duration -> the vital signs, 0.36). 0.35 keeps the fever answer.
DEFAULT_THRESHOLD = 0.35


class RetrievalPatient:
    """A ``SimulatedPatient`` answering with the nearest fact (one at a time, cached)."""

    def __init__(self, model: MiniLM, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
        self._model = model
        self.threshold = threshold
        self._vectors: dict[str, Array] = {}
        self._lock = asyncio.Lock()  # one encoder call at a time (it uses every core)
        self.replies = 0
        self.refusals = 0

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str:
        self.replies += 1
        if not facts:
            self.refusals += 1
            return CANNOT_ANSWER
        async with self._lock:
            await asyncio.to_thread(self._embed_missing, [question, *facts])
        q = self._vectors[question]
        sims = np.array([float(self._vectors[f] @ q) for f in facts])
        best = int(np.argmax(sims))
        if sims[best] < self.threshold:
            self.refusals += 1
            return CANNOT_ANSWER
        return facts[best].strip()

    def _embed_missing(self, texts: Sequence[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self._model.encode(missing), strict=True):
                self._vectors[text] = vector
