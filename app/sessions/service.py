"""The life of an interview session: create, answer, read, finalize, erase.

Long LLM work never runs inside a database transaction. Each change is: read a snapshot
(short transaction), plan the turn (seconds, no database), then apply it in one short
transaction guarded by the session's version (optimistic concurrency). Two concurrent
answers both plan, exactly one applies, the other gets 409; a crash or a client disconnect
before the apply leaves the session exactly as it was.

A turn run in the background (``app.sessions.jobs``) is the same call with two hooks: a
``progress`` callback the engine tells as it scores, and a ``commit`` hook that writes the
job's reply inside the apply transaction, so the turn and its job's result are committed
together or not at all.

This module is the orchestration only (transactions, the LLM slot, audit). What a reply
says, and its guarantee, is ``app.sessions.replies``'s; which calibration serves a session
is ``app.calibrations.lookup``'s; what a session stores of its settings and reads back is
``app.engine.settings.InterviewSettings``'s.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.auditor import NOT_FOUND, SUCCESS, Auditor, ResourceType
from app.calibrations.lookup import Calibrated, Serving, calibration_by_id, find_serving
from app.calibrations.matching import SessionPolicy
from app.context import cache_scope_var
from app.db.engine import statement_session
from app.db.models import IdempotencyRecord, InterviewSession, Turn
from app.db.status import SessionStatus
from app.engine import AnswerSource, InterviewConfig, TurnOutcome, plan_turn
from app.engine.banks import shipped_bank_options
from app.engine.options import AnswerOptions, provider_options
from app.engine.policy import QuestionPolicy
from app.engine.progress import ProgressFn
from app.engine.settings import InterviewSettings
from app.engine.types import QA, CaseContext, History, PosteriorProvider
from app.errors import (
    NO_LLM_SERVER,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    UpstreamUnavailableError,
)
from app.limits.budget import TenantBudget
from app.llm.cache import PurgeableCache, session_scope
from app.observability.metrics import Metrics
from app.pagination import Position, decode_cursor, encode_cursor, page_of
from app.sessions.cache import DetailCache
from app.sessions.replies import (
    answer_text,
    session_detail,
    session_fields,
    session_out,
    session_summary,
    turn_row,
)
from app.sessions.repository import SessionRepository, version_lookup
from app.sessions.schemas import (
    AnswerIn,
    DifferentialOut,
    FinalOut,
    SessionCreate,
    SessionDetail,
    SessionList,
    SessionOut,
)

LISTING = "sessions"  # the cursor namespace of GET /v1/sessions

# Called inside a turn's apply transaction with the session id and the reply (turn jobs
# record their result there); raising rolls the turn back.
TurnCommit = Callable[[AsyncSession, uuid.UUID, SessionOut], Awaitable[None]]


@dataclass
class SessionService:
    sessionmaker: async_sessionmaker[AsyncSession]
    provider: PosteriorProvider | None
    budget: TenantBudget | None = None
    metrics: Metrics | None = None
    tenant: str | None = None
    actor_key_id: str | None = None
    # Session states for GETs; the default keeps none.
    details: DetailCache = field(default_factory=lambda: DetailCache(maxsize=0, ttl_s=60.0))
    # The gateway's posterior cache: a session's entries are its own and go when it does.
    posterior_cache: PurgeableCache | None = None

    # -- commands ---------------------------------------------------------------------------

    def check_create(self, body: SessionCreate) -> None:
        """Refuse now what ``create`` would refuse before any LLM work (async turns)."""
        self._require_provider()
        _session_config(_settings(body))

    async def create(
        self,
        body: SessionCreate,
        *,
        progress: ProgressFn | None = None,
        commit: TurnCommit | None = None,
    ) -> SessionOut:
        provider = self._require_provider()
        settings = _settings(body)
        question = settings.question
        config = _session_config(settings)
        info = provider.info
        async with self.sessionmaker() as db:
            serving = await find_serving(
                db,
                tenant=self.tenant,
                model=info.model,
                prompt_version=info.prompt_version,
                policy=_session_policy(question, body),
            )
        calibration = serving.calibration
        seed = secrets.randbits(62)
        case = CaseContext(summary=body.patient.summary, age=body.patient.age, sex=body.patient.sex)
        session_id = uuid.uuid4()
        outcome = await self._plan(
            provider,
            session_id=session_id,
            case=case,
            history=(),
            inquiry=body.inquiry,
            labels=body.candidates,
            config=config,
            calibration=calibration,
            seed=seed,
            progress=progress,
        )
        async with self.sessionmaker.begin() as db:
            question_id = uuid.uuid4() if outcome.next_question else None
            row = InterviewSession(
                id=session_id,
                tenant=self.tenant,
                status=SessionStatus.ACTIVE if question_id else SessionStatus.STOPPED,
                version=1,
                step=0,
                patient_summary=body.patient.summary,
                patient_age=body.patient.age,
                patient_sex=body.patient.sex,
                inquiry=body.inquiry,
                candidates=list(body.candidates),
                config=_config_json(settings, body, serving),
                seed=seed,
                model=info.model,
                prompt_version=info.prompt_version,
                calibration_id=calibration.row.id if calibration else None,
                current_question_id=question_id,
                stop_reason=outcome.stop_reason.value if outcome.stop_reason else None,
            )
            repo = SessionRepository(db)
            await repo.add(row)
            options = self._answer_options(question.question_bank_name, outcome.next_question)
            turn = turn_row(row, outcome, question_id, serving, options=options)
            await repo.add(turn)
            await self._audit(db, "session.create", session_id, SUCCESS)
            created = session_out(row, turn)
            if commit is not None:
                await commit(db, session_id, created)
            return created

    async def answer(
        self,
        session_id: uuid.UUID,
        body: AnswerIn,
        *,
        idempotency_key: str | None,
        if_match: int | None,
        progress: ProgressFn | None = None,
        commit: TurnCommit | None = None,
    ) -> SessionOut:
        request_hash = answer_hash(body)
        snapshot = await self._answer_snapshot(
            session_id, body, idempotency_key=idempotency_key, if_match=if_match
        )
        if isinstance(snapshot, SessionOut):
            return snapshot
        row, turns, calibration = snapshot
        serving = Serving.restore(calibration, row.config.get("calibration_unmatched"))
        # Read the turns as of the session row we loaded: a concurrent answer may have added
        # a later turn since (it wins; this one then loses the version check below).
        earlier = [t for t in turns if t.step < row.step]
        current = next(t for t in turns if t.step == row.step)
        assert current.question is not None
        answer = answer_text(body, current)
        history: History = (
            *(QA(t.question, t.answer) for t in earlier if t.question and t.answer is not None),
            QA(current.question, answer),
        )
        config = _session_config(InterviewSettings.from_json(row.config))
        outcome = await self._plan(
            self._require_provider(row),
            session_id=row.id,
            case=CaseContext(summary=row.patient_summary, age=row.patient_age, sex=row.patient_sex),
            history=history,
            inquiry=row.inquiry,
            labels=row.candidates,
            config=config,
            calibration=calibration,
            seed=row.seed,
            progress=progress,
        )
        async with self.sessionmaker.begin() as db:
            repo = SessionRepository(db)
            question_id = uuid.uuid4() if outcome.next_question else None
            values: dict[str, Any] = {
                "step": row.step + 1,
                "current_question_id": question_id,
                "status": SessionStatus.ACTIVE if question_id else SessionStatus.STOPPED,
                "stop_reason": outcome.stop_reason.value if outcome.stop_reason else None,
            }
            if not await repo.bump_version(session_id, expected_version=row.version, values=values):
                raise ConflictError(
                    "the session changed while this answer was processed; reload it"
                )
            await repo.record_answer(current.id, answer)
            fresh = await repo.get(session_id, tenant=self.tenant)
            assert fresh is not None
            bank_name = row.config.get("question_bank_name")
            options = self._answer_options(
                bank_name if isinstance(bank_name, str) else None, outcome.next_question
            )
            turn = turn_row(fresh, outcome, question_id, serving, options=options)
            await repo.add(turn)
            response = session_out(fresh, turn)
            if idempotency_key is not None:
                await repo.add(
                    IdempotencyRecord(
                        session_id=session_id,
                        key=idempotency_key,
                        request_hash=request_hash,
                        status_code=200,
                        response=response.model_dump(mode="json"),
                    )
                )
            await self._audit(db, "session.answer", session_id, SUCCESS)
            if commit is not None:
                await commit(db, session_id, response)
        return response

    async def check_answer(
        self,
        session_id: uuid.UUID,
        body: AnswerIn,
        *,
        idempotency_key: str | None,
        if_match: int | None,
    ) -> None:
        """Refuse now what ``answer`` would refuse before any LLM work (async turns)."""
        snapshot = await self._answer_snapshot(
            session_id, body, idempotency_key=idempotency_key, if_match=if_match
        )
        if not isinstance(snapshot, SessionOut):
            row, turns, _ = snapshot
            answer_text(body, next(t for t in turns if t.step == row.step))  # a bad option
            self._require_provider(row)

    async def _answer_snapshot(
        self,
        session_id: uuid.UUID,
        body: AnswerIn,
        *,
        idempotency_key: str | None,
        if_match: int | None,
    ) -> SessionOut | tuple[InterviewSession, list[Turn], Calibrated | None]:
        """The replayed reply of a used Idempotency-Key, else the state the answer plans
        from (the session, its turns, its calibration), after every check an answer passes."""
        async with self.sessionmaker() as db:
            repo = SessionRepository(db)
            row = await self._load(db, session_id, "session.answer")
            if idempotency_key is not None:
                record = await repo.idempotency_record(session_id, idempotency_key)
                if record is not None:
                    if record.request_hash != answer_hash(body):
                        raise InvalidInputError(
                            "this Idempotency-Key was used with a different request body"
                        )
                    return SessionOut.model_validate(record.response)
            _check_if_match(row, if_match)
            if row.status != SessionStatus.ACTIVE:
                raise ConflictError(f"the session is {row.status}; it takes no more answers")
            if body.question_id != str(row.current_question_id):
                raise ConflictError(
                    f"question {body.question_id} is not the current question "
                    f"({row.current_question_id})"
                )
            turns = list(await repo.turns(session_id))
            calibration = await calibration_by_id(
                db, row.calibration_id, specialty=row.config.get("specialty")
            )
        return row, turns, calibration

    async def get(self, session_id: uuid.UUID) -> SessionDetail:
        """The whole state; an unchanged session's comes from ``details`` (read audited still).

        One statement reads the version and appends the read's audit event ("success", or
        "not_found": no such session, or another tenant's); a cache miss reads the session with
        its turns in a second. No transaction: each statement stands alone (a read changes
        nothing), which saves the BEGIN and COMMIT round trips on the most frequent request
        (docs/load.md, "GET of a session").
        """
        async with statement_session(self.sessionmaker) as db:
            version = await self._auditor.lookup(
                db,
                version_lookup(session_id, tenant=self.tenant),
                action="session.read",
                resource_id=session_id,
            )
            if version is None:
                raise NotFoundError(f"no session {session_id}")
            detail = self.details.get(session_id, version)
            if detail is None:
                found = await SessionRepository(db).with_turns(session_id, tenant=self.tenant)
                if found is None:  # erased since the version was read: the trail says so too
                    await self._audit(db, "session.read", session_id, NOT_FOUND)
                    raise NotFoundError(f"no session {session_id}")
                detail = session_detail(*found)
                self.details.put(session_id, detail)
        return detail

    async def page(
        self, *, status: SessionStatus | None, limit: int, cursor: str | None
    ) -> SessionList:
        """The tenant's sessions, newest first, one page (summaries: no patient text)."""
        after = decode_cursor(LISTING, cursor) if cursor is not None else None
        async with self.sessionmaker.begin() as db:
            rows = await SessionRepository(db).page(
                tenant=self.tenant, status=status, after=after, limit=limit
            )
            page = page_of(
                list(rows), limit=limit, position=lambda r: Position.of(r.created_at, r.id)
            )
            await self._auditor.record(db, action="session.list", resource_id=None)
            return SessionList(
                items=[session_summary(r) for r in page.rows],
                next_cursor=encode_cursor(LISTING, page.next) if page.next else None,
            )

    async def finalize(self, session_id: uuid.UUID, *, if_match: int | None) -> FinalOut:
        async with self.sessionmaker.begin() as db:
            repo = SessionRepository(db)
            row = await self._load(db, session_id, "session.finalize")
            _check_if_match(row, if_match)
            turn = await repo.current_turn(session_id, row.step)
            assert turn is not None
            differential = DifferentialOut.model_validate(turn.differential)
            final = {
                "final_answer": differential.top,
                "final_set": [x.label for x in differential.labels],
            }
            if row.status != SessionStatus.FINALIZED:
                values = {
                    "status": SessionStatus.FINALIZED,
                    "current_question_id": None,
                    "final": final,
                }
                if not await repo.bump_version(
                    session_id, expected_version=row.version, values=values
                ):
                    raise ConflictError("the session changed meanwhile; reload it")
                row = await repo.get(session_id, tenant=self.tenant) or row
            await self._audit(db, "session.finalize", session_id, SUCCESS)
            return FinalOut.model_validate({**session_fields(row, turn), **final})

    async def delete(self, session_id: uuid.UUID) -> None:
        async with self.sessionmaker.begin() as db:
            await self._load(db, session_id, "session.delete")
            await SessionRepository(db).delete(session_id)
            await self._audit(db, "session.delete", session_id, SUCCESS)
        self.details.drop(session_id)
        if self.posterior_cache is not None:
            await self.posterior_cache.purge(session_scope(session_id))

    # -- helpers ----------------------------------------------------------------------------

    def _answer_options(self, bank_name: str | None, question: str | None) -> AnswerOptions | None:
        """A question's options: its shipped bank's, else the provider's (generated: none)."""
        if question is None:
            return None
        if bank_name is not None:
            from_bank = shipped_bank_options(bank_name, question)
            if from_bank is not None:
                return from_bank
        return provider_options(self.provider, question)

    def _require_provider(self, row: InterviewSession | None = None) -> PosteriorProvider:
        if self.provider is None:
            raise UpstreamUnavailableError(NO_LLM_SERVER, retry_after_s=30)
        if row is not None and (self.provider.info.model, self.provider.info.prompt_version) != (
            row.model,
            row.prompt_version,
        ):
            raise ConflictError(
                f"this session was started with model {row.model!r} and prompt version "
                f"{row.prompt_version!r}; the server now runs {self.provider.info.model!r} / "
                f"{self.provider.info.prompt_version!r}, so its calibration would not apply"
            )
        return self.provider

    async def _load(self, db: AsyncSession, session_id: uuid.UUID, action: str) -> InterviewSession:
        row = await SessionRepository(db).get(session_id, tenant=self.tenant)
        if row is None:
            await self._audit_separately(action, session_id, NOT_FOUND)
            raise NotFoundError(f"no session {session_id}")
        return row

    async def _plan(
        self,
        provider: PosteriorProvider,
        *,
        session_id: uuid.UUID,
        case: CaseContext,
        history: History,
        inquiry: str,
        labels: list[str],
        config: InterviewConfig,
        calibration: Calibrated | None,
        seed: int,
        progress: ProgressFn | None = None,
    ) -> TurnOutcome:
        # Past the calibrated steps 0..T there is no calibrated set: the nominal one, so said.
        if calibration is not None and not calibration.covers(len(history)):
            calibration = None
        # The posterior cache entries of this turn are the session's own (purged on delete).
        scope = cache_scope_var.set(session_scope(session_id))
        try:
            async with self._llm_slot():
                outcome = await plan_turn(
                    provider=provider,
                    case=case,
                    history=history,
                    inquiry=inquiry,
                    labels=labels,
                    config=config,
                    thresholds=calibration.thresholds if calibration else None,
                    selection_thresholds=calibration.selection if calibration else None,
                    rng=np.random.default_rng([seed, len(history)]),
                    progress=progress,
                )
        finally:
            cache_scope_var.reset(scope)
        if self.metrics is not None:
            self.metrics.turns.labels(config.policy.value).inc()
            calibrated = str(outcome.differential.calibrated).lower()
            self.metrics.set_size.labels(calibrated).observe(outcome.differential.set_size)
            if outcome.stop_reason is not None:
                self.metrics.stops.labels(outcome.stop_reason.value).inc()
        return outcome

    def _llm_slot(self) -> AbstractAsyncContextManager[None]:
        """One of the tenant's slots of concurrent LLM work (no budget: no limit)."""
        if self.budget is None or self.tenant is None:
            return nullcontext()
        return self.budget.slot(self.tenant)

    @property
    def _auditor(self) -> Auditor:
        return Auditor(ResourceType.SESSION, tenant=self.tenant, actor_key_id=self.actor_key_id)

    async def _audit(
        self, db: AsyncSession, action: str, session_id: uuid.UUID, outcome: str
    ) -> None:
        await self._auditor.record(db, action=action, resource_id=session_id, outcome=outcome)

    async def _audit_separately(self, action: str, session_id: uuid.UUID, outcome: str) -> None:
        """Record a refused action in its own transaction (the request's will roll back)."""
        async with self.sessionmaker.begin() as db:
            await self._audit(db, action, session_id, outcome)


def answer_hash(body: AnswerIn) -> str:
    """What an Idempotency-Key of an answer is bound to: the SHA-256 of its body (without
    unset fields: an answer as text hashes as it did before answers could be options)."""
    return hashlib.sha256(body.model_dump_json(exclude_none=True).encode()).hexdigest()


def _session_policy(question: QuestionPolicy, body: SessionCreate) -> SessionPolicy:
    """What the calibration lookup matches a new session on (``find_serving``)."""
    return SessionPolicy(
        question=question,
        max_questions=body.max_questions,
        specialty=body.specialty,
        any_selection=body.selection_calibration_id is None,
    )


def _check_if_match(row: InterviewSession, if_match: int | None) -> None:
    if if_match is not None and if_match != row.version:
        raise PreconditionFailedError(
            f"If-Match names version {if_match}; the session is at version {row.version}"
        )


def _settings(body: SessionCreate) -> InterviewSettings:
    """The body's question policy (its own fields, validated by the shared type), budget
    and stop rules."""
    question = QuestionPolicy.model_validate(
        body.model_dump(include=set(QuestionPolicy.model_fields), exclude_unset=False)
    )
    return InterviewSettings(
        question=question,
        max_questions=body.max_questions,
        stop_on_no_gain=body.stop_on_no_gain,
        spread_epsilon=body.spread_epsilon,
    )


def _session_config(settings: InterviewSettings) -> InterviewConfig:
    """The engine configuration of a session: its policy and its budget and stop rules."""
    question = settings.question
    if question.answer_source is not AnswerSource.LLM:
        raise InvalidInputError(
            f"answer_source {question.answer_source.value!r} is for calibration runs and "
            "benchmarks (it needs labelled draws or an estimation split); sessions simulate "
            "answers with the LLM: use 'llm'"
        )
    return settings.config()


def _config_json(
    settings: InterviewSettings, body: SessionCreate, serving: Serving
) -> dict[str, Any]:
    """What a session stores of its settings: the policy as it was served (the selection
    calibration resolved), the budget and stop rules, and which calibration applies
    (read back by ``InterviewSettings.from_json``, which ignores the session's own keys)."""
    selection = serving.calibration.selection_id if serving.calibration else None
    served = settings.question.model_copy(
        update={"selection_calibration_id": uuid.UUID(selection) if selection else None}
    )
    return {
        **replace(settings, question=served).to_json(),
        # Not the policy: which calibration thresholds apply, and why none did.
        "specialty": body.specialty,
        "calibration_unmatched": serving.unmatched_json(),
    }
