"""What serves a session, as a later turn rebuilds it from what the session stored."""

from __future__ import annotations

import json
import uuid

from app.calibrations.lookup import Calibrated, Serving
from app.calibrations.matching import Match, Mismatch
from app.calibrations.results import calibration_result, thresholds_for_group
from app.db.models import Calibration

MATCH = Match(
    None,
    (Mismatch("n_answers", 2, 4), Mismatch("alpha", 0.1, 0.2), Mismatch("bank", "a", None)),
    "the closest active one differs in n_answers",
)


def test_why_no_calibration_applies_survives_the_sessions_json() -> None:
    serving = Serving.unmatched(MATCH)
    stored = json.loads(json.dumps(serving.unmatched_json()))
    assert stored["reason"] == "the closest active one differs in n_answers"
    assert stored["mismatches"][0] == {"field": "n_answers", "session": 2, "calibration": 4}
    assert Serving.restore(None, stored) == serving


def test_a_match_without_a_reason_and_a_session_without_a_record_get_one() -> None:
    assert Serving.unmatched(Match(None)).reason == "no calibration applies"
    restored = Serving.restore(None, None)
    assert restored.reason == "no calibration applies to this session"
    assert restored.mismatches == () and restored.calibration is None


def test_a_served_session_stores_no_reason_and_is_rebuilt_from_its_calibration() -> None:
    result = calibration_result(
        thresholds=[0.6, 0.7], scores=[[0.5] * 9] * 2, alpha=0.1, step_alpha=0.1, n_per_step=[9, 9]
    )
    display = thresholds_for_group(result, group_by=None, group=None)
    calibration = Calibrated(Calibration(id=uuid.uuid4()), display, selection=None)
    assert Serving(calibration).unmatched_json() is None
    restored = Serving.restore(calibration, {"reason": "stale", "mismatches": []})
    assert restored == Serving(calibration) and restored.reason is None
    assert calibration.covers(1) and not calibration.covers(2)
    assert calibration.thresholds.thresholds == (0.6, 0.7)
