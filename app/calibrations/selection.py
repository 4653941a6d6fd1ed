"""Selection calibrations: the thresholds C-IP counts its objective's sets with.

A selection run (``RunSpec.purpose == "selection"``) interviews its cases by asking bank
questions in a seeded random order (the paper's length marginalisation: it depends on no
question policy) and calibrates tau_k for k = 0..T+1. A C-IP display run names one in
``selection_calibration_id``; it is checked once, when the display run is created:

- it exists, is a selection run and has succeeded;
- same model, prompt version and alpha as the display run;
- it covers the display run's steps (tau_{k+1} is needed at every step k < T);
- its cases and the display run's share no case (by ``MediQCase.fingerprint``).

The display run's result stores the selection thresholds with the selection run's id
(``result["selection"]``), so serving uses exactly what calibration used.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from app.calibrations.matching import ALPHA_TOLERANCE
from app.calibrations.repository import CalibrationRepository
from app.calibrations.spec import Purpose, RunSpec
from app.datasets import shared_cases
from app.db.models import Calibration
from app.db.status import CalibrationStatus
from app.engine.types import ProviderInfo
from app.errors import InvalidInputError

__all__ = ["check_selection", "selection_payload"]


async def check_selection(
    repo: CalibrationRepository, spec: RunSpec, info: ProviderInfo, *, owner: str | None
) -> Calibration | None:
    """The selection run ``spec`` names, checked (see the module docstring); None if none.

    ``owner`` owns the display run: it may name its own selection runs or the platform's.
    """
    selection_id = spec.question.selection_calibration_id
    if selection_id is None:
        return None
    row = await repo.get_visible(selection_id, owner=owner)
    if row is None:
        raise InvalidInputError(f"no selection calibration {selection_id}")
    if row.params.get("purpose") != Purpose.SELECTION.value:
        raise InvalidInputError(
            f"calibration {selection_id} is a display calibration; name a run made with "
            "purpose 'selection'"
        )
    if row.status != CalibrationStatus.SUCCEEDED or row.result is None:
        raise InvalidInputError(
            f"selection calibration {selection_id} has not succeeded (status {row.status})"
        )
    if (row.model, row.prompt_version) != (info.model, info.prompt_version):
        raise InvalidInputError(
            f"selection calibration {selection_id} was made with {row.model!r} / "
            f"{row.prompt_version!r}; this run uses {info.model!r} / {info.prompt_version!r}"
        )
    if not math.isclose(row.alpha, spec.alpha, rel_tol=0, abs_tol=ALPHA_TOLERANCE):
        raise InvalidInputError(
            f"selection calibration {selection_id} is at alpha {row.alpha}, this run at "
            f"{spec.alpha}"
        )
    if row.max_questions + 1 < spec.max_questions:
        raise InvalidInputError(
            f"selection calibration {selection_id} covers steps 0..{row.max_questions + 1}; "
            f"a {spec.max_questions}-question interview needs tau_k up to k = "
            f"{spec.max_questions}"
        )
    # Reading and hashing dataset files is blocking work: off the event loop.
    overlap = await asyncio.to_thread(_shared_cases, RunSpec.from_params(row.params), spec)
    if overlap:
        raise InvalidInputError(
            f"{overlap} of this run's cases are also cases of selection calibration "
            f"{selection_id}; calibrate the selection on other cases (another seed, or fewer "
            "cases in one of the runs)"
        )
    return row


def selection_payload(row: Calibration) -> dict[str, Any]:
    """What a display run stores as ``result["selection"]``: thresholds, scores, its id."""
    assert row.result is not None
    keys = ("alpha", "step_alpha", "thresholds", "n_per_step", "scores")
    return {**{k: row.result[k] for k in keys}, "calibration_id": str(row.id)}


def _shared_cases(selection: RunSpec, display: RunSpec) -> int:
    return shared_cases(
        selection.calibration_cases(selection.load_dataset()),
        display.calibration_cases(display.load_dataset()),
    )
