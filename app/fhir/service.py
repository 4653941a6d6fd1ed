"""The SDC ``$next-question`` operation on top of the session service (no web framework)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app.db.status import SessionStatus
from app.errors import ConflictError, ForbiddenError
from app.fhir.bundle import session_bundle
from app.fhir.read import PostedResponse, conflicting_answer, read_next_question_input
from app.fhir.state import SessionState
from app.fhir.versions import DEFAULT_FHIR_VERSION, FhirVersion
from app.fhir.write import next_question_response
from app.sessions.service import SessionService

Json = dict[str, Any]


@dataclass
class FhirInterviews:
    """Adaptive-questionnaire calls mapped onto one stateful session each."""

    sessions: SessionService
    # Whether the caller may read sessions: continuing one returns its recorded answers.
    may_read: bool = True

    async def next_question(
        self, body: Any, *, version: FhirVersion = DEFAULT_FHIR_VERSION
    ) -> Json:
        """Apply the posted QR (FHIR ``version``) to its session (creating it on the first
        call); the next QR, as R5 (``app.fhir.versions.downgrade`` writes it as R4)."""
        posted = read_next_question_input(body, version=version)
        if posted.session_id is None:
            state = SessionState.started(await self.sessions.create(posted.session_create()))
        else:
            if not self.may_read:
                raise ForbiddenError(
                    "continuing a session through $next-question returns its recorded "
                    "answers: this API key needs the scope 'sessions:read' as well"
                )
            state = await self._apply_answer(posted, posted.session_id)
        if posted.completed and state.status != SessionStatus.FINALIZED:
            final = await self.sessions.finalize(uuid.UUID(state.session_id), if_match=None)
            state = state.advanced(final)
        return next_question_response(posted, state)

    async def bundle(self, session_id: uuid.UUID) -> Json:
        """The whole session as a ``collection`` Bundle."""
        return session_bundle(await self.sessions.get(session_id))

    async def _apply_answer(self, posted: PostedResponse, session_id: uuid.UUID) -> SessionState:
        state = SessionState.from_detail(await self.sessions.get(session_id))
        conflict = conflicting_answer(posted, state)
        if conflict is not None:
            raise ConflictError(conflict)
        current = state.current
        if current is None:
            unapplied = [a.id for a in state.asked if a.answer is None and posted.answer(a.id)]
            if unapplied:
                raise ConflictError(
                    f"session {session_id} is {state.status}; it takes no more answers "
                    f"(question {unapplied[0]} stays unanswered)"
                )
        answer = posted.answer_in(current) if current is not None else None
        if current is None or answer is None:
            # Nothing new (a re-post, or the current question left unanswered): the state.
            return state
        try:
            out = await self.sessions.answer(
                session_id, answer, idempotency_key=None, if_match=None
            )
        except ConflictError:
            # A concurrent post of the same QR may have applied this very answer: if so, the
            # re-post is answered with the current state instead of an error.
            state = SessionState.from_detail(await self.sessions.get(session_id))
            if conflicting_answer(posted, state) is None and all(
                a.answer is not None for a in state.asked if a.id == current.id
            ):
                return state
            raise
        assert answer.answer is not None  # the FHIR reader always sends text
        return state.advanced(out, answered=(current.id, answer.answer))
