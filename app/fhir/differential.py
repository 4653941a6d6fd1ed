"""A differential as FHIR: one Condition per label in the set, one RiskAssessment for all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.fhir.vocab import CONDITION_CATEGORY, CONDITION_CLINICAL, CONDITION_VER_STATUS
from app.sessions.schemas import DifferentialOut

Json = dict[str, Any]

DIFFERENTIAL_STATUS = {
    "system": CONDITION_VER_STATUS,
    "code": "differential",
    "display": "Differential",
}
# R5 makes clinicalStatus mandatory. "active" says: if the patient has this condition, it is
# current; the uncertainty about whether they have it at all is the verificationStatus.
CLINICAL_ACTIVE = {"system": CONDITION_CLINICAL, "code": "active", "display": "Active"}
ENCOUNTER_DIAGNOSIS = {
    "system": CONDITION_CATEGORY,
    "code": "encounter-diagnosis",
    "display": "Encounter Diagnosis",
}


@dataclass(frozen=True)
class DifferentialResources:
    """The Conditions (labels in the set, most probable first) and the RiskAssessment."""

    conditions: list[Json]
    risk_assessment: Json


def anonymous_subject(session_id: str) -> Json:
    """The subject when the caller named none: R5 Condition and RiskAssessment need one."""
    return {"display": f"The patient of Pursuit interview {session_id}"}


def differential_resources(
    differential: DifferentialOut,
    *,
    subject: Json,
    condition_ids: list[str],
    risk_id: str,
    basis: Json | None,
    method: str,
    final: bool,
) -> DifferentialResources:
    """Map one differential; ``condition_ids`` names the Conditions (one per label in set)."""
    if len(condition_ids) < len(differential.labels):
        raise ValueError("one condition id is needed per label in the set")
    target = f"{differential.coverage_target:.0%}"
    conditions: list[Json] = []
    for label, condition_id in zip(differential.labels, condition_ids, strict=False):
        condition: Json = {
            "resourceType": "Condition",
            "id": condition_id,
            "clinicalStatus": {"coding": [CLINICAL_ACTIVE]},
            "verificationStatus": {"coding": [DIFFERENTIAL_STATUS]},
            "category": [{"coding": [ENCOUNTER_DIAGNOSIS]}],
            "code": {"text": label.label},
            "subject": subject,
            "note": [
                {
                    "text": f"In the {target} conformal prediction set at step "
                    f"{differential.step} (model probability {label.probability:.3f}). "
                    "A candidate to consider, not a diagnosis."
                }
            ],
        }
        conditions.append(condition)
    predictions = []
    for label in differential.all_labels:
        rationale = "in the prediction set" if label.in_set else "outside the prediction set"
        if label.p_value is not None:
            rationale += f"; conformal p-value {label.p_value:.3f}"
        predictions.append(
            {
                "outcome": {"text": label.label},
                "probabilityDecimal": round(label.probability, 6),
                "rationale": rationale,
            }
        )
    risk: Json = {
        "resourceType": "RiskAssessment",
        "id": risk_id,
        "status": "final" if final else "preliminary",
        "subject": subject,
        "method": {"text": method},
        "prediction": predictions,
        "note": [{"text": differential.guarantee}],
    }
    if basis is not None:
        risk["basis"] = [basis]
    return DifferentialResources(conditions=conditions, risk_assessment=risk)


def method_text(*, policy: str, model: str, differential: DifferentialOut) -> str:
    """What produced the probabilities and the set, in words."""
    calibration = (
        f"calibration {differential.calibration_id}"
        if differential.calibrated
        else "no matching calibration (uncalibrated)"
    )
    return (
        f"Pursuit: LLM posterior ({model}), questions chosen by the {policy} policy, "
        f"conformal set at alpha {differential.alpha:g} with {calibration}"
    )
