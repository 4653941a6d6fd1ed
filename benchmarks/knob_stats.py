"""Estimators that read the tabular 20Q miscalibration knobs off measured posteriors.

Pure numpy, no I/O: ``benchmarks.model_knobs`` feeds them letter probabilities from a live
LLM, the tests feed them posteriors made with a known knob strength. Each estimator returns
the strength in the knob's own units (issue 17):

- ``label_bias`` s: a fixed per-label logit offset s * z_k, z ~ N(0, 1);
- ``polarity`` s: "yes" evidence weighted by s, "no" evidence by 1/s;
- ``logit_noise`` s: per-label N(0, s^2) logit noise that differs between near-identical prompts;
- ``length`` s: the log-likelihood multiplied by (1 + s * n / 10) after n answers;
- ``temperature`` T: logits divided by T.

"Logits" are log-probabilities centred over the labels of one prompt (softmax is blind to a
common shift), so every offset and noise term is read after centring and corrected for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Letter probabilities below this are read as this (vLLM returns finite logprobs; a
# renormalised probability can still underflow to 0 in float64 for far-off letters).
PROB_FLOOR = 1e-12
LENGTH_UNIT = 10.0  # the length knob's n / 10
_T_RANGE = (0.02, 50.0)


def centered_logits(probs: npt.ArrayLike) -> FloatArray:
    """log p minus its mean over the last axis (the labels)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] < 2:
        raise InvalidInputError("need at least two labels")
    logp = np.log(np.maximum(p, PROB_FLOOR))
    return np.asarray(logp - logp.mean(axis=-1, keepdims=True), dtype=np.float64)


def entropy(probs: npt.ArrayLike) -> FloatArray:
    """Shannon entropy (nats) along the last axis."""
    p = np.asarray(probs, dtype=np.float64)
    logp = np.log(np.maximum(p, PROB_FLOOR))
    return np.asarray(-(p * logp).sum(axis=-1), dtype=np.float64)


def softmax(logits: npt.ArrayLike) -> FloatArray:
    """Rows of exp(logits) normalised along the last axis."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True), dtype=np.float64)


# --- label_bias: position offsets from every cyclic order ------------------------------------


@dataclass(frozen=True, slots=True)
class PositionBias:
    """Per letter position, the mean centred logit offset, and its spread across positions."""

    offsets: tuple[float, ...]
    sd: float  # across positions, ddof=1: unbiased for s^2 of s * z_k
    sd_noise_corrected: float | None  # minus the sampling variance of the mean (>= 2 items)
    first_share: float  # mean probability on the option shown first
    items: int


def position_bias(letter_probs: npt.ArrayLike) -> PositionBias:
    """From (items, K shifts, K positions): every item scored in all K cyclic orders.

    With all K cyclic orders each label sits at each position once, so the mean over orders
    of the centred logit at a position is that position's offset plus the mean label effect,
    which centring makes 0: the design is balanced and the estimate exact under an additive
    label + position model.
    """
    p = np.asarray(letter_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] != p.shape[2] or p.shape[0] < 1:
        raise InvalidInputError("need (items, K, K): every item in all K cyclic orders")
    per_item = centered_logits(p).mean(axis=1)  # (items, K positions)
    offsets = per_item.mean(axis=0)
    k = p.shape[2]
    sd = float(np.std(offsets, ddof=1))
    corrected: float | None = None
    if p.shape[0] >= 2:
        # Var of a position's mean over items, averaged over positions; (1 - 1/K) undoes the
        # centring of that noise across positions.
        noise = float(per_item.var(axis=0, ddof=1).mean()) / p.shape[0] * (1 - 1 / k)
        corrected = math.sqrt(max(0.0, sd**2 - noise))
    return PositionBias(
        offsets=tuple(float(x) for x in offsets),
        sd=sd,
        sd_noise_corrected=corrected,
        first_share=float(p[:, :, 0].mean()),
        items=int(p.shape[0]),
    )


# --- polarity: how far "yes" and "no" move the consistent labels ------------------------------


def contrast(delta: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """mean(delta[mask]) - mean(delta[~mask]): movement of the masked labels against the rest."""
    d = np.asarray(delta, dtype=np.float64)
    m = np.asarray(mask, dtype=np.bool_)
    if m.all() or not m.any():
        raise InvalidInputError("the mask must split the labels")
    return float(d[m].mean() - d[~m].mean())


@dataclass(frozen=True, slots=True)
class PolarityItem:
    """One question asked after one history: the model's and the table's contrasts."""

    moved_yes: float  # contrast of log p(.|h+yes) - log p(.|h) on the yes-consistent labels
    moved_no: float  # the same for "no" on the no-consistent labels
    table_yes: float  # contrast of log P(yes | label) on the yes-consistent labels
    table_no: float  # contrast of log P(no | label) on the no-consistent labels


def polarity_item(
    *,
    before: npt.ArrayLike,
    after_yes: npt.ArrayLike,
    after_no: npt.ArrayLike,
    yes_consistent: npt.ArrayLike,
    log_p_yes: npt.ArrayLike,
    log_p_no: npt.ArrayLike,
) -> PolarityItem:
    """Contrasts of one (history, question) from the model's three posteriors and the table."""
    mask = np.asarray(yes_consistent, dtype=np.bool_)
    base = centered_logits(before)
    return PolarityItem(
        moved_yes=contrast(centered_logits(after_yes) - base, mask),
        moved_no=contrast(centered_logits(after_no) - base, ~mask),
        table_yes=contrast(log_p_yes, mask),
        table_no=contrast(log_p_no, ~mask),
    )


@dataclass(frozen=True, slots=True)
class PolarityFit:
    """Evidence weights relative to the table, and the polarity s they imply.

    Intervals are 95% percentile bootstraps over items; s's is given only when s exists in
    at least 95% of the resamples.
    """

    weight_yes: float  # sum moved_yes / sum table_yes: 1 for a calibrated model
    weight_no: float
    s: float | None  # sqrt(weight_yes / weight_no); None unless both are positive
    evidence_weight: float | None  # sqrt(weight_yes * weight_no): beta in beta * s, beta / s
    weight_yes_interval: tuple[float, float] | None
    weight_no_interval: tuple[float, float] | None
    s_interval: tuple[float, float] | None
    items: int


def percentile_interval(draws: Sequence[float], *, least: int) -> tuple[float, float] | None:
    """The 2.5% and 97.5% quantiles of the finite draws; None if fewer than ``least``."""
    finite = np.asarray(draws, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) < max(1, least):
        return None
    return float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))


def _weights(items: Sequence[PolarityItem]) -> tuple[float, float]:
    wy = sum(i.moved_yes for i in items) / sum(i.table_yes for i in items)
    wn = sum(i.moved_no for i in items) / sum(i.table_no for i in items)
    return wy, wn


def _s_of(wy: float, wn: float) -> float:
    return math.sqrt(wy / wn) if wy > 0 and wn > 0 else math.nan


def fit_polarity(items: list[PolarityItem], *, seed: int, resamples: int = 1000) -> PolarityFit:
    """Under polarity s and an overall weight beta: yes moves beta * s, no beta / s (x table)."""
    if not items:
        raise InvalidInputError("no polarity items")
    wy, wn = _weights(items)
    s = _s_of(wy, wn)
    draws: list[tuple[float, float]] = []
    if len(items) >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            draws.append(_weights([items[i] for i in rng.integers(len(items), size=len(items))]))
    least = resamples if draws else 1
    return PolarityFit(
        weight_yes=wy,
        weight_no=wn,
        s=None if math.isnan(s) else s,
        evidence_weight=math.sqrt(wy * wn) if wy > 0 and wn > 0 else None,
        weight_yes_interval=percentile_interval([d[0] for d in draws], least=least),
        weight_no_interval=percentile_interval([d[1] for d in draws], least=least),
        s_interval=percentile_interval([_s_of(*d) for d in draws], least=math.ceil(0.95 * least)),
        items=len(items),
    )


# --- length: the evidence weight after n answers ----------------------------------------------


def evidence_terms(moved: npt.ArrayLike, loglik: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per row, the numerator and denominator of the least-squares c in moved ~ c * loglik.

    ``moved``: (G, K) change of the model's centred logits since the empty history;
    ``loglik``: (G, K) the calibrated model's log-likelihood of the same histories; both are
    centred over labels. Pooled, c = sum(numerators) / sum(denominators): a model that weighs
    every answer as the table does has c = 1 (its own prior, letter bias included, cancels
    in the change).
    """
    d = np.asarray(moved, dtype=np.float64)
    ll = np.asarray(loglik, dtype=np.float64)
    if d.shape != ll.shape or d.ndim != 2:
        raise InvalidInputError("need (G, K) changes and log-likelihoods of the same shape")
    d = d - d.mean(axis=1, keepdims=True)
    ll = ll - ll.mean(axis=1, keepdims=True)
    return (d * ll).sum(axis=1), (ll * ll).sum(axis=1)


@dataclass(frozen=True, slots=True)
class LengthFit:
    """c_n = beta * (1 + s * n / 10) fitted by least squares over n = 1..N.

    Intervals are 95% percentile bootstraps over games; s's is given only when the intercept
    is positive in at least 95% of the resamples.
    """

    beta: float
    s: float | None  # None when the intercept beta is not positive
    weights: tuple[float, ...]  # c_n for n = 1..N
    beta_interval: tuple[float, float] | None
    s_interval: tuple[float, float] | None
    games: int


def _line(num: FloatArray, den: FloatArray) -> tuple[float, float, FloatArray]:
    c = num.sum(axis=0) / den.sum(axis=0)
    slope, intercept = np.polyfit(np.arange(1, len(c) + 1, dtype=np.float64), c, 1)
    s = float(LENGTH_UNIT * slope / intercept) if intercept > 0 else math.nan
    return float(intercept), s, c


def fit_length(
    numerators: npt.ArrayLike, denominators: npt.ArrayLike, *, seed: int, resamples: int = 1000
) -> LengthFit:
    """From (G games, N lengths) ``evidence_terms`` at n = 1..N, N >= 2."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2 or num.shape[1] < 2 or num.shape[0] < 1:
        raise InvalidInputError("need (games, >= 2 lengths) evidence terms")
    if (den.sum(axis=0) <= 0).any():
        raise InvalidInputError("the log-likelihoods do not tell the labels apart")
    beta, s, c = _line(num, den)
    draws: list[tuple[float, float]] = []
    if num.shape[0] >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            pick = rng.integers(num.shape[0], size=num.shape[0])
            draws.append(_line(num[pick], den[pick])[:2])  # den > 0 per row: sums stay > 0
    least = resamples if draws else 1
    return LengthFit(
        beta=beta,
        s=None if math.isnan(s) else s,
        weights=tuple(float(v) for v in c),
        beta_interval=percentile_interval([d[0] for d in draws], least=least),
        s_interval=percentile_interval([d[1] for d in draws], least=math.ceil(0.95 * least)),
        games=int(num.shape[0]),
    )


# --- logit_noise: spread across wordings of the same answer -----------------------------------


@dataclass(frozen=True, slots=True)
class ParaphraseNoise:
    """The per-label logit sd across wordings, in the logit_noise knob's units."""

    s: float
    top_changes: float  # share of groups whose top label is not the same for every wording
    groups: int
    wordings: int


def paraphrase_noise(groups: npt.ArrayLike) -> ParaphraseNoise:
    """From (groups, W wordings, K labels) probabilities: sqrt of the pooled variance.

    A knob draw N(0, s^2) per label, centred over K labels, has variance s^2 (1 - 1/K): the
    pooled variance over wordings (ddof=1) is divided by that factor.
    """
    p = np.asarray(groups, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] < 2 or p.shape[0] < 1:
        raise InvalidInputError("need (groups, >= 2 wordings, K labels)")
    k = p.shape[2]
    pooled = float(centered_logits(p).var(axis=1, ddof=1).mean())
    top = p.argmax(axis=2)
    changes = float((top != top[:, :1]).any(axis=1).mean())
    return ParaphraseNoise(math.sqrt(pooled / (1 - 1 / k)), changes, int(p.shape[0]), p.shape[1])


# --- temperature: the T that makes the true label's probability calibrated ------------------


@dataclass(frozen=True, slots=True)
class TemperatureFit:
    """T* minimising the true label's NLL under p^(1/T); > 1: over-confident."""

    t: float
    nll_at_1: float
    nll_at_t: float
    mean_p_true: float
    mean_max_p: float
    accuracy: float
    n: int


def _nll(logp: FloatArray, true: npt.NDArray[np.intp], t: float) -> float:
    z = logp / t
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float((lse - z[np.arange(len(true)), true]).mean())


def fit_temperature(probs: npt.ArrayLike, true: npt.ArrayLike) -> TemperatureFit:
    """Golden-section search over log T in [0.02, 50] (the NLL is convex in 1/T)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(true, dtype=np.intp)
    if p.ndim != 2 or len(y) != len(p) or len(y) == 0:
        raise InvalidInputError("need (N, K) probabilities and N true labels")
    logp = np.log(np.maximum(p, PROB_FLOOR))
    lo, hi = math.log(_T_RANGE[0]), math.log(_T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _nll(logp, y, math.exp(a)) <= _nll(logp, y, math.exp(b)):
            hi = b
        else:
            lo = a
    t = math.exp((lo + hi) / 2)
    return TemperatureFit(
        t=t,
        nll_at_1=_nll(logp, y, 1.0),
        nll_at_t=_nll(logp, y, t),
        mean_p_true=float(p[np.arange(len(y)), y].mean()),
        mean_max_p=float(p.max(axis=1).mean()),
        accuracy=float((p.argmax(axis=1) == y).mean()),
        n=len(y),
    )
