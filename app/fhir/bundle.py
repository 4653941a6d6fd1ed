"""A whole session as a FHIR ``collection`` Bundle: QuestionnaireResponse, Conditions, risk."""

from __future__ import annotations

import uuid
from typing import Any

from app.db.status import SessionStatus
from app.fhir.differential import anonymous_subject, differential_resources, method_text
from app.fhir.state import SessionState
from app.fhir.write import session_response, write_state
from app.sessions.schemas import SessionDetail

Json = dict[str, Any]


def session_bundle(detail: SessionDetail) -> Json:
    """The session's transcript and current differential; ids are stable per session."""
    state = SessionState.from_detail(detail)
    namespace = uuid.UUID(detail.id)
    response_id = str(uuid.uuid5(namespace, "questionnaire-response"))
    response, questionnaire = session_response(detail, response_id=response_id)
    differential = state.differential
    resources = differential_resources(
        differential,
        subject=anonymous_subject(detail.id),
        # One id per label, so a label's Condition keeps its id from step to step.
        condition_ids=[
            str(uuid.uuid5(namespace, f"condition:{x.label}")) for x in differential.labels
        ],
        risk_id=str(uuid.uuid5(namespace, "risk-assessment")),
        basis={"reference": f"urn:uuid:{response_id}"},
        method=method_text(policy=state.policy, model=state.model, differential=differential),
        final=state.status == SessionStatus.FINALIZED,
    )
    others = [*resources.conditions, resources.risk_assessment]
    write_state(
        response,
        questionnaire,
        state,
        differential_refs=[f"urn:uuid:{r['id']}" for r in others],
    )
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(namespace, f"bundle:{detail.version}")),
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in (response, *others)],
    }
