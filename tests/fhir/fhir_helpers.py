"""Building $next-question inputs and checking every produced resource against FHIR R5 (or
R4: with fhir.resources' R4B models, the nearest it ships, and fhirclient's R4 models; see
app/fhir/versions.py)."""

from __future__ import annotations

import copy
from typing import Any

from fhir.resources import get_fhir_model_class
from fhir.resources.R4B import get_fhir_model_class as get_r4_model_class
from fhirclient.models.fhirelementfactory import FHIRElementFactory

from app.fhir.vocab import CONDITION_VER_STATUS, HIDDEN_EXTENSION

Json = dict[str, Any]

LABELS = ["Meningitis", "Migraine", "Influenza", "Sinusitis"]
SUMMARY = "34-year-old with fever and headache"
INQUIRY = "What is the most likely diagnosis?"


def questionnaire_response(
    *,
    candidates: list[str] = LABELS,
    candidates_type: str = "string",
    inquiry_as: str = "initial",
    summary: str | None = SUMMARY,
    config: dict[str, Any] | None = None,
    qr_id: str = "q",
) -> Json:
    """A first-call QR: summary/inquiry/candidates items plus optional hidden config items.

    ``config`` maps a linkId to its answer value, e.g. ``{"max-questions": {"valueInteger": 3}}``.
    """
    inquiry: Json = {
        "linkId": "inquiry",
        "text": "Clinical inquiry",
        "type": "string",
        "readOnly": True,
    }
    if inquiry_as == "initial":
        inquiry["initial"] = [{"valueString": INQUIRY}]
    candidate_item: Json = {
        "linkId": "candidates",
        "text": "Candidate answers",
        "type": candidates_type,
        "readOnly": True,
        "answerOption": [{"valueString": c} for c in candidates],
    }
    if candidates_type != "choice":
        candidate_item["answerConstraint"] = "optionsOnly"
    items: list[Json] = [
        {"linkId": "summary", "text": "Initial information", "type": "text", "readOnly": True},
        inquiry,
        candidate_item,
    ]
    answers: list[Json] = []
    if summary is not None:
        answers.append({"linkId": "summary", "answer": [{"valueString": summary}]})
    if inquiry_as == "answer":
        answers.append({"linkId": "inquiry", "answer": [{"valueString": INQUIRY}]})
    for link_id, value in (config or {}).items():
        kind = next(k for k in value if k.startswith("value"))[5:].lower()
        items.append(
            {
                "extension": [{"url": HIDDEN_EXTENSION, "valueBoolean": True}],
                "linkId": link_id,
                "type": {"coding": "coding"}.get(kind, kind),
                "readOnly": True,
            }
        )
        answers.append({"linkId": link_id, "answer": [value]})
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "in-progress",
        "questionnaire": f"#{qr_id}",
        "contained": [
            {
                "resourceType": "Questionnaire",
                "id": qr_id,
                "status": "active",
                "item": items,
            }
        ],
        "item": answers,
    }


def as_parameters(response: Json) -> Json:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "questionnaire-response", "resource": response}],
    }


def validate(resource: Json, *, r4: bool = False) -> Any:
    """Parse with fhir.resources (R5, or R4B for ``r4``) and check the invariants it does not
    check itself; ``r4`` output is also parsed strictly by fhirclient's R4 (4.0.1) models,
    which refuse any element R4 does not define (R4B's and R5's additions)."""
    if r4:
        FHIRElementFactory.instantiate(resource["resourceType"], copy.deepcopy(resource))
    model_class = (get_r4_model_class if r4 else get_fhir_model_class)(resource["resourceType"])
    model = model_class.model_validate(copy.deepcopy(resource))
    # The JSON it serialises back is again a valid resource of the same type.
    model_class.model_validate_json(model.model_dump_json())
    kind = resource["resourceType"]
    if kind == "Questionnaire":
        _check_item_types(resource, r4=r4)
    if kind == "QuestionnaireResponse":
        _check_response(resource, r4=r4)
    elif kind == "Condition":
        _check_condition(resource)
    elif kind == "RiskAssessment":
        _check_risk(resource)
    elif kind == "Bundle":
        assert resource["type"] == "collection"
        for entry in resource["entry"]:
            assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
            validate(entry["resource"], r4=r4)
    return model


def contained_questionnaire(response: Json) -> Json:
    ref = response["questionnaire"]
    assert ref.startswith("#")
    (questionnaire,) = [
        r
        for r in response.get("contained", [])
        if r["resourceType"] == "Questionnaire" and r["id"] == ref[1:]
    ]
    found: Json = questionnaire
    return found


# Item types of each release (fhir.resources does not check codes against value sets).
R5_ITEM_TYPES = frozenset(
    [
        "group",
        "display",
        "question",
        "boolean",
        "decimal",
        "integer",
        "date",
        "dateTime",
        "time",
        "string",
        "text",
        "url",
        "coding",
        "attachment",
        "reference",
        "quantity",
    ]
)
R4_ITEM_TYPES = frozenset(
    [
        "group",
        "display",
        "boolean",
        "decimal",
        "integer",
        "date",
        "dateTime",
        "time",
        "string",
        "text",
        "url",
        "choice",
        "open-choice",
        "attachment",
        "reference",
        "quantity",
    ]
)


def _check_item_types(questionnaire: Json, *, r4: bool) -> None:
    allowed = R4_ITEM_TYPES if r4 else R5_ITEM_TYPES
    for definition in questionnaire.get("item", []):
        if definition["linkId"] == "candidates" and definition["type"] == "choice":
            continue  # the caller's own R4 habit, kept as it was posted
        assert definition["type"] in allowed, definition["type"]
        if r4:
            assert "answerConstraint" not in definition


def _check_response(response: Json, *, r4: bool = False) -> None:
    questionnaire = contained_questionnaire(response)
    validate(questionnaire, r4=r4)
    order = [item["linkId"] for item in questionnaire["item"]]
    assert len(order) == len(set(order)), "linkIds are unique"
    answered = [item["linkId"] for item in response.get("item", [])]
    # Every answered item is defined, and answers follow the Questionnaire's order.
    assert set(answered) <= set(order), set(answered) - set(order)
    assert answered == sorted(answered, key=order.index)
    for item in response.get("item", []):
        assert "item" not in item or "answer" not in item
    # dom-3: every contained resource is referenced from the container.
    text = str(response)
    for resource in response.get("contained", []):
        assert f"#{resource['id']}" in text, resource["id"]
        if resource["resourceType"] != "Questionnaire":
            validate(resource, r4=r4)


def _check_condition(condition: Json) -> None:
    assert condition["verificationStatus"]["coding"][0]["system"] == CONDITION_VER_STATUS
    assert condition["verificationStatus"]["coding"][0]["code"] == "differential"
    assert condition["code"]["text"]
    assert condition["subject"]


def _check_risk(risk: Json) -> None:
    probabilities = [p["probabilityDecimal"] for p in risk["prediction"]]
    assert all(0 <= p <= 1 for p in probabilities)
    assert abs(sum(probabilities) - 1) < 1e-4
    assert all(p["outcome"]["text"] for p in risk["prediction"])


def item(resource: Json, link_id: str) -> Json | None:
    return next((i for i in resource.get("item", []) if i["linkId"] == link_id), None)


def answer_value(response: Json, link_id: str) -> Any:
    found = item(response, link_id)
    if found is None:
        return None
    (answer,) = found["answer"]
    (value,) = (v for k, v in answer.items() if k.startswith("value"))
    return value


def hidden(definition: Json) -> bool:
    return any(
        e["url"] == HIDDEN_EXTENSION and e["valueBoolean"] for e in definition.get("extension", [])
    )


def contained_of(response: Json, kind: str) -> list[Json]:
    return [r for r in response.get("contained", []) if r["resourceType"] == kind]


def last_question(response: Json) -> Json:
    """The last item of the contained Questionnaire (the question to answer now)."""
    question: Json = contained_questionnaire(response)["item"][-1]
    return question


def answer(response: Json, text: str) -> Json:
    """The QR with ``text`` answering the last question (what a client posts next)."""
    out = copy.deepcopy(response)
    question = last_question(out)
    out["item"].append({"linkId": question["linkId"], "answer": [{"valueString": text}]})
    return out
