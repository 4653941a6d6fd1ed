"""A ``PosteriorProvider`` over a ``TabularModel``, with knobs to miscalibrate it on purpose.

Posterior: ``p_T(y | h) ∝ exp((log prior(y) + bias(y) + log P(h | y)) / T)``. T = 1 is the
Bayes posterior of the table (with ``bias`` 0); T < 1 sharpens it (over-confident), T > 1
flattens it (under-confident). ``label_bias`` adds a fixed log-odds offset per label (a
model that favours some labels whatever it hears). A ``distortion``
(``app.worlds.tabular.miscalibration``) replaces the log joint by a miscalibrated one (modified
likelihood table, label offsets, length-dependent confidence, history-hashed logit noise);
T then tempers the distorted logits.

Candidate answers to a question about attribute a are ``[("Yes.", w), ("No.", 1 - w)]`` with
``w = sum_y p_T(y | h) P(yes | y, a)``: the answer distribution is the mixture under the same
tempered (and biased) posterior that is displayed, so a miscalibrated model is miscalibrated
consistently in what it shows and in what it expects to hear. The posterior after an answer
is the tempered posterior of the longer history (tempering is applied to the whole log
joint, not compounded turn by turn).

The case context and the inquiry text are not used: the table is all the model knows.
Candidate questions are the closed bank (``model.questions``), for the engine's bank mode
(``InterviewConfig(question_source="bank", bank=provider.bank)``) or, in generated mode,
``propose_questions`` returning the first unasked bank questions in bank order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.engine.banks import dedupe_questions
from app.engine.types import CaseContext, History, ProviderInfo, WeightedAnswer
from app.errors import InvalidInputError
from app.worlds.tabular.miscalibration import Distortion
from app.worlds.tabular.model import TabularModel, tempered_softmax

__all__ = ["NO", "YES", "TabularProvider"]

FloatArray = npt.NDArray[np.float64]

YES = "Yes."
NO = "No."


class TabularProvider:
    """Tempered (and optionally biased) Bayes posteriors of a class x attribute table."""

    def __init__(
        self,
        model: TabularModel,
        *,
        temperature: float = 1.0,
        label_bias: Sequence[float] | None = None,
        distortion: Distortion | None = None,
    ) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidInputError(f"temperature must be a finite number > 0, got {temperature!r}")
        bias = np.zeros(len(model.labels))
        if label_bias is not None:
            bias = np.asarray(label_bias, dtype=np.float64)
            if bias.shape != (len(model.labels),) or not np.isfinite(bias).all():
                raise InvalidInputError("label_bias needs one finite log-odds offset per label")
        bias.setflags(write=False)
        self.model = model
        self.temperature = float(temperature)
        self.label_bias = bias
        # None or no mode: the plain table (the log joint exactly as before).
        plain = distortion is None or distortion.miscalibration is None
        self.distortion = None if plain else distortion

    @property
    def info(self) -> ProviderInfo:
        """``tabular:<name>:T=<t>`` (``:bias=<hash>`` when biased); the table's fingerprint."""
        model = f"tabular:{self.model.name}:T={self.temperature:g}"
        extra = {"temperature": f"{self.temperature!r}"}
        if self.label_bias.any():
            bias_hash = _hash_array(self.label_bias)
            model += f":bias={bias_hash}"
            extra["label_bias"] = ",".join(f"{b!r}" for b in self.label_bias.tolist())
        if self.distortion is not None and self.distortion.miscalibration is not None:
            model += f":{self.distortion.miscalibration.label}"
            extra["miscalibration"] = self.distortion.miscalibration.label
        return ProviderInfo(model=model, prompt_version=self.model.fingerprint, extra=extra)

    @property
    def bank(self) -> tuple[str, ...]:
        """The closed question bank, in attribute order."""
        return self.model.questions

    # Vectorised core, shared by the Protocol methods and batch simulators.

    def logits(self, yes_counts: npt.ArrayLike, no_counts: npt.ArrayLike) -> FloatArray:
        """(..., K) untempered (distorted) log joint plus bias, from (..., A) yes/no counts."""
        if self.distortion is not None:
            distorted = self.distortion.logits(self.model.log_prior, yes_counts, no_counts)
            return np.asarray(distorted + self.label_bias)
        return np.asarray(self.model.log_joint(yes_counts, no_counts) + self.label_bias)

    def posterior_from_logits(self, logits: npt.ArrayLike) -> FloatArray:
        """(..., K) tempered posterior over all the model's labels."""
        return tempered_softmax(logits, self.temperature)

    def yes_probability(self, posterior: npt.ArrayLike) -> FloatArray:
        """(..., A) P(yes to each question | h) under a (..., K) posterior: the mixture."""
        return np.asarray(np.asarray(posterior, dtype=np.float64) @ self.model.p_yes)

    def posteriors(self, histories: Sequence[History]) -> FloatArray:
        """(H, K) tempered posteriors over all the model's labels."""
        yes, no = self.model.evidence(histories)
        return self.posterior_from_logits(self.logits(yes, no))

    # The PosteriorProvider Protocol.

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> FloatArray:
        """(H, len(labels)); a subset of the model's labels gets the posterior given the subset."""
        columns = self.model.label_positions(labels)
        yes, no = self.model.evidence(histories)
        logits = self.logits(yes, no)
        if columns != list(range(len(self.model.labels))):
            logits = logits[:, columns]
        return self.posterior_from_logits(logits)

    async def propose_questions(
        self,
        *,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: Sequence[str],
        n: int,
    ) -> list[str]:
        """The first ``n`` unasked bank questions, in bank order."""
        return dedupe_questions(self.model.questions, exclude=[qa.question for qa in history])[
            : max(n, 0)
        ]

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        """``[("Yes.", P(yes | h)), ("No.", P(no | h))]``; with m = 1 the likelier one, weight 1."""
        a = self.model.require_question(question)
        w_yes = float(self.yes_probability(self.posteriors([history])[0])[a])
        answers = [WeightedAnswer(YES, w_yes), WeightedAnswer(NO, 1.0 - w_yes)]
        if m >= 2:
            return answers
        if m == 1:
            return [WeightedAnswer(max(answers, key=lambda x: x.weight).text, 1.0)]
        return []


def _hash_array(values: FloatArray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()[:8]
