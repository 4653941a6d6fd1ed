"""Tabular Bayesian posterior provider: a class x attribute table behind the engine's Protocol.

Pure numpy. Any table works (animals x attributes, diagnoses x findings): build a
``TabularModel`` and wrap it in a ``TabularProvider`` with an optional temperature/bias
or a miscalibration (``build_distortion``).
"""

from app.worlds.tabular.miscalibration import (
    Distortion,
    Miscalibration,
    Mode,
    build_distortion,
    parse_miscalibration,
)
from app.worlds.tabular.model import (
    ANSWER_NO,
    ANSWER_UNKNOWN,
    ANSWER_YES,
    DEFAULT_EPS,
    TabularModel,
    parse_answer,
    tempered_softmax,
)
from app.worlds.tabular.provider import NO, YES, TabularProvider

__all__ = [
    "ANSWER_NO",
    "ANSWER_UNKNOWN",
    "ANSWER_YES",
    "DEFAULT_EPS",
    "NO",
    "YES",
    "Distortion",
    "Miscalibration",
    "Mode",
    "TabularModel",
    "TabularProvider",
    "build_distortion",
    "parse_answer",
    "parse_miscalibration",
    "tempered_softmax",
]
