"""FHIR R5 (5.0.0) views of interview sessions: pure mapping, no web framework.

``read`` reads an SDC adaptive QuestionnaireResponse (with its contained Questionnaire)
into session-service inputs; ``write`` writes the session's state (``state``: the asked
questions and answers) back into it;
``differential`` exports a differential as Condition resources plus a RiskAssessment;
``bundle`` gives a whole session as a ``collection`` Bundle; ``service`` runs the
``$next-question`` operation on top of :class:`app.sessions.service.SessionService`.
Conventions: docs/fhir.md.
"""

from app.fhir.vocab import FHIR_MEDIA_TYPE, FHIR_VERSION

__all__ = ["FHIR_MEDIA_TYPE", "FHIR_VERSION"]
