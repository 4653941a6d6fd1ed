"""The FHIR versions, media type, code systems, extensions and linkIds of the FHIR surface."""

from __future__ import annotations

FHIR_VERSION = "5.0.0"  # R5, the default model set of fhir.resources 8, and the default here
FHIR_R4_VERSION = "4.0.1"
FHIR_MEDIA_TYPE = "application/fhir+json"

HIDDEN_EXTENSION = "http://hl7.org/fhir/StructureDefinition/questionnaire-hidden"
# On each question item Pursuit asked: which sets scored the candidates, from which selection
# calibration, and what the policy minimised (QuestionOut's fields of the same names).
PURSUIT_EXTENSION_BASE = "https://pursuit.invalid/fhir/StructureDefinition/"
SELECTION_RULE_EXTENSION = PURSUIT_EXTENSION_BASE + "selection-rule"
SELECTION_CALIBRATION_EXTENSION = PURSUIT_EXTENSION_BASE + "selection-calibration-id"
OBJECTIVE_EXTENSION = PURSUIT_EXTENSION_BASE + "objective"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
# The codes of a question's answer options (``AnswerOption.code``: yes, no, unsure, or a bank's).
ANSWER_OPTION_SYSTEM = "https://pursuit.invalid/fhir/CodeSystem/answer-option"
# OperationOutcome: the request id to quote to support (the problem type's code system is
# app.errors.PROBLEM_TYPE_SYSTEM).
REQUEST_ID_EXTENSION = PURSUIT_EXTENSION_BASE + "request-id"
SDC_NEXT_QUESTION = "http://hl7.org/fhir/uv/sdc/OperationDefinition/Questionnaire-next-question"
SDC_IMPLEMENTATION_GUIDE = "http://hl7.org/fhir/uv/sdc/ImplementationGuide/hl7.fhir.uv.sdc"

# The $next-question input parameter (SDC OperationDefinition Questionnaire-next-question).
PARAMETER_NAME = "questionnaire-response"

# Items the caller's contained Questionnaire starts with.
SUMMARY = "summary"
INQUIRY = "inquiry"
CANDIDATES = "candidates"
AGE = "age"
SEX = "sex"

# Optional items that configure a new session (answer or ``initial``), with the
# SessionCreate field each one sets: the field's name in kebab case. ``question-bank`` is
# the older linkId of ``question-bank-name``, still read (the later item wins when both are
# given, and error messages name the newer).
CONFIG_ITEMS: dict[str, str] = {
    "alpha": "alpha",
    "policy": "policy",
    "max-questions": "max_questions",
    "question-source": "question_source",
    "question-bank": "question_bank_name",
    "question-bank-name": "question_bank_name",
    "n-candidate-questions": "n_candidate_questions",
    "n-answers": "n_answers",
    "objective": "objective",
    "selection-calibration-id": "selection_calibration_id",
    "stop-on-no-gain": "stop_on_no_gain",
}

# Hidden, read-only items Pursuit writes (and reads ``session-id`` back from).
SESSION_ID = "session-id"
ALPHA = "alpha"
SET_SIZE = "set-size"
CALIBRATION_ID = "calibration-id"
GUARANTEE = "guarantee"
STOP_REASON = "stop-reason"
DIFFERENTIAL = "differential"

# Contained resources Pursuit owns in a returned QuestionnaireResponse (replaced every call).
OWNED_ID_PREFIX = "pursuit-"
QUESTIONNAIRE_ID = "questionnaire"
