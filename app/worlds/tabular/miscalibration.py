"""Miscalibration of a tabular model on purpose, in units a real model can be measured in.

A ``Miscalibration`` (mode, strength) turns into a ``Distortion`` against one table and one
player (``build_distortion``). The distorted posterior logits of a history with yes/no count
vectors (y, n) over the A attributes are::

    logits = log prior + bias + (1 + slope * N) * (y @ L_yes + n @ L_no) + sd * eps(h)

with N = sum(y) + sum(n) the informative answers, L the (modified) log-likelihood table, and
``eps(h)`` K standard normals drawn from a 64-bit hash of the history. The provider then
applies its global temperature (``-T``) to the whole vector. Modes (strength s > 0):

- ``temperature``: L = log-likelihood / s (with the uniform prior, the same as tempering).
- ``overconfident_attrs``: on 20% of the attributes, those whose table disagrees most with
  the player's answers (mean |oracle - P(yes)| over labels; ties broken by a seeded draw),
  L is multiplied by s, and the player answers them with 0.15 more flip probability
  (``player_extra_noise``): attractive but unreliable questions.
- ``polarity``: L_yes multiplied by s, L_no by 1 / s.
- ``label_bias``: bias = s * z, z ~ N(0, 1) per label, drawn once from the world seed.
- ``logit_noise``: sd = s. The hash is ``h = sum(y * key_yes) + sum(n * key_no) mod 2**64``
  with per-(attribute, answer) 64-bit keys drawn from the world seed: a function of the
  sorted (attribute, answer) pairs (order-free; repeats count), so the same history always
  gets the same noise and histories one answer apart get independent noise.
- ``length``: slope = s / 10.

Everything is a function of the count vectors, so the engine path (histories -> counts) and
a batched replica that updates counts and hashes incrementally compute the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from app.errors import InvalidInputError
from app.worlds.tabular.model import TabularModel

__all__ = [
    "OVERCONFIDENT_EXTRA_NOISE",
    "OVERCONFIDENT_FRACTION",
    "Distortion",
    "Miscalibration",
    "Mode",
    "build_distortion",
    "hash_normals",
    "history_hash",
    "parse_miscalibration",
]

FloatArray = npt.NDArray[np.float64]
UIntArray = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

OVERCONFIDENT_FRACTION: Final = 0.2
OVERCONFIDENT_EXTRA_NOISE: Final = 0.15
# Seed-word tags, one per seeded draw of a world.
_TAG_BIAS, _TAG_KEYS, _TAG_ATTRS = 0x6B1A5, 0x6B1A6, 0x6B1A7
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Mode(StrEnum):
    """Miscalibration modes."""

    TEMPERATURE = "temperature"
    OVERCONFIDENT_ATTRS = "overconfident_attrs"
    POLARITY = "polarity"
    LABEL_BIAS = "label_bias"
    LOGIT_NOISE = "logit_noise"
    LENGTH = "length"


@dataclass(frozen=True, slots=True)
class Miscalibration:
    """One mode at one strength (> 0, finite)."""

    mode: Mode
    strength: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        if not (math.isfinite(self.strength) and self.strength > 0):
            raise InvalidInputError(
                f"miscalibration strength must be a finite number > 0, got {self.strength!r}"
            )

    @property
    def label(self) -> str:
        """``mode=strength``, as on the command line."""
        return f"{self.mode.value}={self.strength:g}"


def parse_miscalibration(text: str) -> tuple[Miscalibration, ...]:
    """``NAME=S`` or ``NAME=S1,S2,...`` into one Miscalibration per strength."""
    name, sep, values = text.partition("=")
    known = ", ".join(m.value for m in Mode)
    if not sep or name.strip() not in {m.value for m in Mode}:
        raise InvalidInputError(f"miscalibration must be NAME=STRENGTH with NAME in {known}")
    parts = [v.strip() for v in values.split(",") if v.strip()]
    if not parts:
        raise InvalidInputError("miscalibration needs a strength: NAME=STRENGTH")
    try:
        strengths = [float(v) for v in parts]
    except ValueError:
        raise InvalidInputError("miscalibration strength must be a number") from None
    return tuple(Miscalibration(Mode(name.strip()), s) for s in strengths)


@dataclass(frozen=True, eq=False, slots=True)
class Distortion:
    """A miscalibration compiled against one table, player and world seed."""

    miscalibration: Miscalibration | None
    log_yes: FloatArray  # (A, K) modified log P(yes | class)
    log_no: FloatArray  # (A, K)
    bias: FloatArray  # (K,)
    slope: float  # length: log-likelihood times (1 + slope * N)
    noise_sd: float  # logit_noise
    keys: UIntArray  # (A, 2): hash keys of "yes" then "no" per attribute
    player_extra_noise: FloatArray  # (A,): added to the player's flip probability
    attributes: tuple[int, ...]  # overconfident_attrs: the chosen attributes

    @property
    def linear(self) -> bool:
        """Whether logits are linear in the counts (a posterior update is a product)."""
        return self.slope == 0 and self.noise_sd == 0

    def settings(self) -> dict[str, object]:
        """JSON-safe description for reports."""
        if self.miscalibration is None:
            return {"mode": None}
        out: dict[str, object] = {
            "mode": self.miscalibration.mode.value,
            "strength": self.miscalibration.strength,
        }
        if self.attributes:
            out["attributes"] = list(self.attributes)
            out["player_extra_noise"] = OVERCONFIDENT_EXTRA_NOISE
        if self.bias.any():
            out["label_bias"] = [round(float(b), 6) for b in self.bias]
        if self.noise_sd:
            out["noise_hash"] = "sum of per-(attribute, answer) keys of the sorted answers"
        return out

    def logits(self, log_prior: FloatArray, yes: npt.ArrayLike, no: npt.ArrayLike) -> FloatArray:
        """(..., K) distorted logits from (..., A) yes/no counts (before the global -T)."""
        y = np.asarray(yes, dtype=np.float64)
        n = np.asarray(no, dtype=np.float64)
        loglik = np.asarray(y @ self.log_yes + n @ self.log_no, dtype=np.float64)
        informative = np.asarray(y.sum(axis=-1) + n.sum(axis=-1), dtype=np.float64)
        return self.finish(log_prior, loglik, informative, history_hash(self.keys, y, n))

    def finish(
        self, log_prior: FloatArray, loglik: FloatArray, informative: FloatArray, hashes: UIntArray
    ) -> FloatArray:
        """Logits from a raw log-likelihood sum, its answer count and its history hash."""
        if self.slope:
            loglik = loglik * (1.0 + self.slope * informative)[..., None]
        out = log_prior + self.bias + loglik
        if self.noise_sd:
            out = out + self.noise_sd * hash_normals(hashes, loglik.shape[-1])
        return np.asarray(out, dtype=np.float64)


def history_hash(keys: UIntArray, yes: npt.ArrayLike, no: npt.ArrayLike) -> UIntArray:
    """(...,) 64-bit hash: sum of count * key over (attribute, answer), modulo 2**64."""
    y = np.asarray(yes).astype(np.uint64)
    n = np.asarray(no).astype(np.uint64)
    with np.errstate(over="ignore"):
        total = (y * keys[:, 0]).sum(axis=-1) + (n * keys[:, 1]).sum(axis=-1)
    return np.asarray(total, dtype=np.uint64)


def _splitmix(x: UIntArray) -> UIntArray:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def hash_normals(hashes: npt.ArrayLike, k: int) -> FloatArray:
    """(..., k) standard normals, a pure function of each 64-bit hash (splitmix64, Box-Muller)."""
    h = np.asarray(hashes, dtype=np.uint64)[..., None]
    counters = np.arange(1, 2 * k + 1, dtype=np.uint64) * _GOLDEN
    with np.errstate(over="ignore"):
        bits = _splitmix(h + counters)
    u = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    radius = np.sqrt(-2.0 * np.log1p(-u[..., :k]))  # 1 - u in (0, 1]
    return np.asarray(radius * np.cos(2.0 * np.pi * u[..., k:]), dtype=np.float64)


def _overconfident(model: TabularModel, player_yes: BoolArray, seed: int) -> tuple[int, ...]:
    disagreement = np.abs(player_yes.astype(np.float64) - model.p_yes).mean(axis=0)
    tiebreak = np.random.default_rng(np.random.SeedSequence([seed, _TAG_ATTRS])).random(
        disagreement.size
    )
    order = np.lexsort((tiebreak, -disagreement))
    count = max(1, round(OVERCONFIDENT_FRACTION * disagreement.size))
    return tuple(sorted(int(a) for a in order[:count]))


def build_distortion(
    model: TabularModel,
    miscalibration: Miscalibration | None,
    *,
    player_yes: npt.ArrayLike,
    seed: int,
) -> Distortion:
    """Compile ``miscalibration`` (None: the plain table) for ``model``, a player, a seed."""
    oracle = np.asarray(player_yes, dtype=np.bool_)
    if oracle.shape != model.p_yes.shape:
        raise InvalidInputError("player answers must be (labels, questions) like the table")
    n_a, n_k = oracle.shape[1], oracle.shape[0]
    log_yes, log_no = model.log_yes.copy(), model.log_no.copy()
    bias, slope, sd = np.zeros(n_k), 0.0, 0.0
    extra = np.zeros(n_a)
    attributes: tuple[int, ...] = ()
    mode = None if miscalibration is None else miscalibration.mode
    s = 1.0 if miscalibration is None else miscalibration.strength
    if mode is Mode.TEMPERATURE:
        log_yes, log_no = log_yes / s, log_no / s
    elif mode is Mode.OVERCONFIDENT_ATTRS:
        attributes = _overconfident(model, oracle, seed)
        chosen = list(attributes)
        log_yes[chosen] *= s
        log_no[chosen] *= s
        extra[chosen] = OVERCONFIDENT_EXTRA_NOISE
    elif mode is Mode.POLARITY:
        log_yes, log_no = log_yes * s, log_no / s
    elif mode is Mode.LABEL_BIAS:
        z = np.random.default_rng(np.random.SeedSequence([seed, _TAG_BIAS])).standard_normal(n_k)
        bias = np.asarray(s * z, dtype=np.float64)
    elif mode is Mode.LOGIT_NOISE:
        sd = s
    elif mode is Mode.LENGTH:
        slope = s / 10.0
    keys = np.random.default_rng(np.random.SeedSequence([seed, _TAG_KEYS])).integers(
        0, np.iinfo(np.uint64).max, size=(n_a, 2), dtype=np.uint64, endpoint=True
    )
    for array in (log_yes, log_no, bias, keys, extra):
        array.setflags(write=False)
    return Distortion(miscalibration, log_yes, log_no, bias, slope, sd, keys, extra, attributes)
