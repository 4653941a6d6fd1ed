"""All SQL for calibration runs, their finished cases and their leases.

Claiming is a compare-and-set on ``calibration_leases.token`` (an UPDATE whose WHERE names
the token the claimer saw; rowcount 1 = won), which is atomic on PostgreSQL (the second
updater re-checks the WHERE after the first commits) and on SQLite (one writer at a time).
Every later write of the run (progress, the result) is guarded by the claimer's token, so
a worker that lost its lease can no longer change the run.

Cases are shared: every worker on a run (its owner, holding the run lease, and any number
of helpers) claims cases one at a time in ``calibration_case_claims`` (``claim_case``: an
UPDATE of one unclaimed or stale row chosen ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
concurrent claimers never wait on each other; on SQLite the one statement is atomic, one
writer at a time). A case is stored only by the holder of its claim, in the transaction
that marks the claim done (``finish_case``), so it is stored once even when a worker that
was thought dead comes back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.calibrations.matching import (
    ALPHA_TOLERANCE,
    ActiveCalibration,
    Match,
    SessionPolicy,
    choose,
    policy_key,
)
from app.db.base import utcnow
from app.db.keyset import newest_first
from app.db.models import Calibration, CalibrationCase, CalibrationCaseClaim, CalibrationLease
from app.db.status import CalibrationStatus
from app.pagination import Position


def owned_by(owner: str | None) -> sa.ColumnElement[bool]:
    """Runs of this owner: a tenant's, or (None) the platform's."""
    return Calibration.tenant.is_(None) if owner is None else Calibration.tenant == owner


def visible_to(owner: str | None) -> sa.ColumnElement[bool]:
    """Runs a caller may read: its own and the platform's (which serve it where it has none)."""
    return owned_by(None) if owner is None else sa.or_(owned_by(None), owned_by(owner))


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


class CalibrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, calibration_id: uuid.UUID) -> Calibration | None:
        """Any run, whoever owns it: for workers and the CLI, never for a tenant's request."""
        return await self._session.get(Calibration, calibration_id)

    async def get_visible(
        self, calibration_id: uuid.UUID, *, owner: str | None
    ) -> Calibration | None:
        """The run if ``owner`` may read it (``visible_to``), else None."""
        stmt = sa.select(Calibration).where(Calibration.id == calibration_id, visible_to(owner))
        return (await self._session.scalars(stmt)).one_or_none()

    async def list(
        self, *, owner: str | None, limit: int = 100, after: Position | None = None
    ) -> Sequence[Calibration]:
        """The runs ``owner`` may read, newest first, after ``after``: ``limit + 1`` rows
        (see ``newest_first``)."""
        stmt = newest_first(
            sa.select(Calibration).where(visible_to(owner)),
            at=Calibration.created_at,
            row_id=Calibration.id,
            after=after,
            limit=limit,
        )
        return (await self._session.scalars(stmt)).all()

    async def unfinished_progress(self) -> Sequence[tuple[uuid.UUID, int, int]]:
        """(id, cases done, cases in all) of every queued or running run."""
        stmt = sa.select(
            Calibration.id, Calibration.progress_done, Calibration.progress_total
        ).where(Calibration.status.in_((CalibrationStatus.QUEUED, CalibrationStatus.RUNNING)))
        return [(r[0], r[1], r[2]) for r in (await self._session.execute(stmt)).all()]

    async def add(self, calibration: Calibration) -> Calibration:
        self._session.add(calibration)
        await self._session.flush()
        return calibration

    async def active_for(
        self, *, model: str, prompt_version: str, owner: str | None
    ) -> Sequence[ActiveCalibration]:
        """``owner``'s active, finished calibrations of this model and prompt version."""
        stmt = sa.select(
            Calibration.id,
            Calibration.policy,
            Calibration.alpha,
            Calibration.max_questions,
            Calibration.params,
            Calibration.updated_at,
        ).where(
            Calibration.active.is_(True),
            Calibration.status == CalibrationStatus.SUCCEEDED,
            Calibration.model == model,
            Calibration.prompt_version == prompt_version,
            owned_by(owner),
        )
        return [
            ActiveCalibration(
                id=r.id,
                policy=r.policy,
                alpha=r.alpha,
                max_questions=r.max_questions,
                params=r.params or {},
                updated_at=r.updated_at,
            )
            for r in (await self._session.execute(stmt)).all()
        ]

    async def find_active(
        self, *, model: str, prompt_version: str, session: SessionPolicy, tenant: str | None
    ) -> tuple[Calibration | None, Match]:
        """The active calibration made with this session's model, prompts and question policy:
        the tenant's own, else the platform's.

        Returns it (None when none applies) and the match: which one, or why none does (the
        tenant's closest run when it has active runs and the platform has no match).
        """
        key = {"model": model, "prompt_version": prompt_version}
        own: Sequence[ActiveCalibration] = []
        if tenant is not None:
            own = await self.active_for(**key, owner=tenant)
        match = choose(session, own)
        if match.calibration_id is None:
            platform = choose(session, await self.active_for(**key, owner=None))
            if platform.calibration_id is not None or not own:
                match = platform
        if match.calibration_id is None:
            return None, match
        return await self.get(match.calibration_id), match

    async def activate(self, calibration: Calibration) -> None:
        """Make this its owner's one active calibration for its model, prompt version, alpha
        and question policy (``policy_key``); other policies' and other owners' stay active."""
        key = policy_key(calibration.policy, calibration.params or {})
        rivals = await self._session.execute(
            sa.select(Calibration.id, Calibration.params).where(
                Calibration.active.is_(True),
                Calibration.model == calibration.model,
                Calibration.prompt_version == calibration.prompt_version,
                Calibration.policy == calibration.policy,
                sa.func.abs(Calibration.alpha - calibration.alpha) < ALPHA_TOLERANCE,
                Calibration.id != calibration.id,
                owned_by(calibration.tenant),
            )
        )
        same = [r.id for r in rivals.all() if policy_key(calibration.policy, r.params or {}) == key]
        if same:
            await self._session.execute(
                sa.update(Calibration).where(Calibration.id.in_(same)).values(active=False)
            )
        calibration.active = True
        await self._session.flush()

    async def requeue(
        self,
        calibration_id: uuid.UUID,
        *,
        expected_token: uuid.UUID | None,
        stale_before: datetime | None,
    ) -> bool:
        """Put a failed (or, with ``stale_before``, a silent running) run back in the queue.

        A compare-and-set on the lease token like ``try_claim``: when a worker claimed the
        run meanwhile (or heartbeated, for a running one), nothing changes and it is False.
        Finished cases stay; the next worker skips them.
        """
        conditions = _lease_is(calibration_id, expected_token, stale_before)
        freed = await self._session.execute(
            sa.update(CalibrationLease)
            .where(*conditions)
            .values(token=None, worker=None, heartbeat_at=None)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(freed) != 1:
            return False
        wanted = CalibrationStatus.RUNNING if stale_before is not None else CalibrationStatus.FAILED
        requeued = await self._session.execute(
            sa.update(Calibration)
            .where(Calibration.id == calibration_id, Calibration.status == wanted)
            .values(status=CalibrationStatus.QUEUED, error=None)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(requeued) == 1

    async def group_keys(self, calibration_id: uuid.UUID) -> Sequence[str | None]:
        """Each stored case's Mondrian group, in case-position order (as the scores are)."""
        stmt = (
            sa.select(CalibrationCase.group_key)
            .where(CalibrationCase.calibration_id == calibration_id)
            .order_by(CalibrationCase.position)
        )
        return (await self._session.scalars(stmt)).all()

    # -- finished cases ---------------------------------------------------------------------

    async def add_case(self, case: CalibrationCase) -> bool:
        """Insert a finished case unless (calibration, case) exists; True when inserted."""
        values = {
            column.key: getattr(case, column.key)
            for column in CalibrationCase.__table__.columns
            if getattr(case, column.key) is not None
        }
        dialect = self._session.get_bind().dialect.name
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(CalibrationCase).values(**values).on_conflict_do_nothing()
        return _rowcount(await self._session.execute(stmt)) == 1

    async def cases(self, calibration_id: uuid.UUID) -> Sequence[CalibrationCase]:
        stmt = (
            sa.select(CalibrationCase)
            .where(CalibrationCase.calibration_id == calibration_id)
            .order_by(CalibrationCase.position)
        )
        return (await self._session.scalars(stmt)).all()

    async def case_ids(self, calibration_id: uuid.UUID) -> set[str]:
        stmt = sa.select(CalibrationCase.case_id).where(
            CalibrationCase.calibration_id == calibration_id
        )
        return set((await self._session.scalars(stmt)).all())

    async def case_count(self, calibration_id: uuid.UUID) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(CalibrationCase)
            .where(CalibrationCase.calibration_id == calibration_id)
        )
        return int((await self._session.execute(stmt)).scalar_one())

    async def stop_reasons(self, calibration_id: uuid.UUID) -> dict[str, int]:
        stmt = (
            sa.select(CalibrationCase.stop_reason, sa.func.count())
            .where(CalibrationCase.calibration_id == calibration_id)
            .group_by(CalibrationCase.stop_reason)
        )
        return {str(r): int(n) for r, n in (await self._session.execute(stmt)).all()}

    # -- leases -----------------------------------------------------------------------------

    async def add_lease(self, calibration_id: uuid.UUID) -> CalibrationLease:
        lease = CalibrationLease(calibration_id=calibration_id, token=None, attempts=0)
        self._session.add(lease)
        await self._session.flush()
        return lease

    async def lease(self, calibration_id: uuid.UUID) -> CalibrationLease | None:
        return await self._session.get(CalibrationLease, calibration_id)

    async def claimable(
        self, *, model: str, prompt_version: str, stale_before: datetime, limit: int = 5
    ) -> Sequence[tuple[uuid.UUID, str, uuid.UUID | None]]:
        """(id, status, token) of queued runs and of running runs whose heartbeat is stale."""
        stmt = (
            sa.select(Calibration.id, Calibration.status, CalibrationLease.token)
            .join(CalibrationLease, CalibrationLease.calibration_id == Calibration.id)
            .where(
                Calibration.model == model,
                Calibration.prompt_version == prompt_version,
                sa.or_(
                    Calibration.status == CalibrationStatus.QUEUED,
                    sa.and_(
                        Calibration.status == CalibrationStatus.RUNNING,
                        sa.or_(
                            CalibrationLease.heartbeat_at.is_(None),
                            CalibrationLease.heartbeat_at < stale_before,
                        ),
                    ),
                ),
            )
            .order_by(Calibration.created_at)
            .limit(limit)
        )
        return [(r[0], r[1], r[2]) for r in (await self._session.execute(stmt)).all()]

    async def try_claim(
        self,
        calibration_id: uuid.UUID,
        *,
        expected_token: uuid.UUID | None,
        stale_before: datetime | None,
        new_token: uuid.UUID,
        worker: str,
        now: datetime,
    ) -> bool:
        """Compare-and-set the lease to ``new_token``; on success the run is ``running``.

        ``stale_before`` (reclaiming a running run) also requires the heartbeat to be older,
        so a worker that heartbeated meanwhile keeps its run.
        """
        conditions = _lease_is(calibration_id, expected_token, stale_before)
        result = await self._session.execute(
            sa.update(CalibrationLease)
            .where(*conditions)
            .values(
                token=new_token,
                worker=worker,
                claimed_at=now,
                heartbeat_at=now,
                attempts=CalibrationLease.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            return False
        await self.guarded_update(
            calibration_id, new_token, status=CalibrationStatus.RUNNING, error=None
        )
        return True

    async def heartbeat(self, calibration_id: uuid.UUID, token: uuid.UUID, now: datetime) -> bool:
        """Renew the lease; False when another worker has taken it."""
        result = await self._session.execute(
            sa.update(CalibrationLease)
            .where(
                CalibrationLease.calibration_id == calibration_id,
                CalibrationLease.token == token,
            )
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def release(self, calibration_id: uuid.UUID, token: uuid.UUID) -> bool:
        """Give a running run back to the queue (graceful shutdown)."""
        if not await self.guarded_update(calibration_id, token, status=CalibrationStatus.QUEUED):
            return False
        await self._session.execute(
            sa.update(CalibrationLease)
            .where(
                CalibrationLease.calibration_id == calibration_id,
                CalibrationLease.token == token,
            )
            .values(token=None, heartbeat_at=None, worker=None)
            .execution_options(synchronize_session=False)
        )
        return True

    async def running_progress(
        self, calibration_id: uuid.UUID, *, progress_done: int, progress_total: int
    ) -> None:
        """Progress written by a helper: only while the run is running (no lease needed)."""
        await self._session.execute(
            sa.update(Calibration)
            .where(
                Calibration.id == calibration_id, Calibration.status == CalibrationStatus.RUNNING
            )
            .values(progress_done=progress_done, progress_total=progress_total)
            .execution_options(synchronize_session=False)
        )

    async def guarded_update(
        self, calibration_id: uuid.UUID, token: uuid.UUID, **values: Any
    ) -> bool:
        """Update the run only while ``token`` holds its lease; False otherwise."""
        holds = (
            sa.select(CalibrationLease.calibration_id)
            .where(
                CalibrationLease.calibration_id == calibration_id,
                CalibrationLease.token == token,
            )
            .exists()
        )
        result = await self._session.execute(
            sa.update(Calibration)
            .where(Calibration.id == calibration_id, holds)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


class CaseClaimRepository:
    """The per-case claims of runs (see the module docstring)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def seed(self, calibration_id: uuid.UUID, cases: Sequence[tuple[int, str]]) -> None:
        """One claim row per (position, case id), unless present; stored cases start done."""
        stored = await CalibrationRepository(self._session).case_ids(calibration_id)
        have = set(
            (
                await self._session.scalars(
                    sa.select(CalibrationCaseClaim.position).where(
                        CalibrationCaseClaim.calibration_id == calibration_id
                    )
                )
            ).all()
        )
        rows = [
            {
                "calibration_id": calibration_id,
                "position": position,
                "case_id": case_id,
                "attempts": 0,
                "done_at": utcnow() if case_id in stored else None,
            }
            for position, case_id in cases
            if position not in have
        ]
        if rows:
            dialect = self._session.get_bind().dialect.name
            insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
            await self._session.execute(
                insert(CalibrationCaseClaim).values(rows).on_conflict_do_nothing()
            )

    async def claim_case(
        self,
        calibration_id: uuid.UUID,
        *,
        token: uuid.UUID,
        worker: str,
        now: datetime,
        stale_before: datetime,
    ) -> tuple[int, int] | None:
        """Claim the first unclaimed (or stale) unfinished case: (position, attempts), or None."""
        claimable = (
            CalibrationCaseClaim.calibration_id == calibration_id,
            CalibrationCaseClaim.done_at.is_(None),
            sa.or_(
                CalibrationCaseClaim.token.is_(None),
                CalibrationCaseClaim.heartbeat_at < stale_before,
            ),
        )
        pick = (
            sa.select(CalibrationCaseClaim.position)
            .where(*claimable)
            .order_by(CalibrationCaseClaim.position)
            .limit(1)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders nothing
            .scalar_subquery()
        )
        row = (
            await self._session.execute(
                sa.update(CalibrationCaseClaim)
                .where(*claimable, CalibrationCaseClaim.position == pick)
                .values(
                    token=token,
                    worker=worker,
                    heartbeat_at=now,
                    attempts=CalibrationCaseClaim.attempts + 1,
                )
                .returning(CalibrationCaseClaim.position, CalibrationCaseClaim.attempts)
                .execution_options(synchronize_session=False)
            )
        ).first()
        return None if row is None else (int(row[0]), int(row[1]))

    async def finish_case(self, case: CalibrationCase, *, token: uuid.UUID, now: datetime) -> bool:
        """Store a finished case if ``token`` still holds its claim; True when stored."""
        result = await self._session.execute(
            sa.update(CalibrationCaseClaim)
            .where(
                CalibrationCaseClaim.calibration_id == case.calibration_id,
                CalibrationCaseClaim.position == case.position,
                CalibrationCaseClaim.token == token,
                CalibrationCaseClaim.done_at.is_(None),
            )
            .values(done_at=now, token=None)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            return False
        return await CalibrationRepository(self._session).add_case(case)

    async def release(self, calibration_id: uuid.UUID, token: uuid.UUID) -> None:
        """Give back this token's unfinished cases (a worker leaving, or failing)."""
        await self._session.execute(
            sa.update(CalibrationCaseClaim)
            .where(
                CalibrationCaseClaim.calibration_id == calibration_id,
                CalibrationCaseClaim.token == token,
                CalibrationCaseClaim.done_at.is_(None),
            )
            .values(token=None, worker=None, heartbeat_at=None)
            .execution_options(synchronize_session=False)
        )

    async def heartbeat(self, calibration_id: uuid.UUID, token: uuid.UUID, now: datetime) -> int:
        """Renew this token's unfinished claims; how many it still holds."""
        result = await self._session.execute(
            sa.update(CalibrationCaseClaim)
            .where(
                CalibrationCaseClaim.calibration_id == calibration_id,
                CalibrationCaseClaim.token == token,
                CalibrationCaseClaim.done_at.is_(None),
            )
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result)

    async def unfinished(self, calibration_id: uuid.UUID) -> int:
        """Cases of the run not stored yet (claimed or not); 0 once seeded and done."""
        stmt = (
            sa.select(sa.func.count())
            .select_from(CalibrationCaseClaim)
            .where(
                CalibrationCaseClaim.calibration_id == calibration_id,
                CalibrationCaseClaim.done_at.is_(None),
            )
        )
        return int((await self._session.execute(stmt)).scalar_one())

    async def joinable(
        self, *, model: str, prompt_version: str, stale_before: datetime, limit: int = 5
    ) -> Sequence[uuid.UUID]:
        """Running runs of this provider with a case nobody (alive) holds: for helpers."""
        open_case = (
            sa.select(CalibrationCaseClaim.position)
            .where(
                CalibrationCaseClaim.calibration_id == Calibration.id,
                CalibrationCaseClaim.done_at.is_(None),
                sa.or_(
                    CalibrationCaseClaim.token.is_(None),
                    CalibrationCaseClaim.heartbeat_at < stale_before,
                ),
            )
            .exists()
        )
        stmt = (
            sa.select(Calibration.id)
            .where(
                Calibration.model == model,
                Calibration.prompt_version == prompt_version,
                Calibration.status == CalibrationStatus.RUNNING,
                open_case,
            )
            .order_by(Calibration.created_at)
            .limit(limit)
        )
        return (await self._session.scalars(stmt)).all()

    async def attempts(self, calibration_id: uuid.UUID) -> dict[int, int]:
        """Claims per case position (1: done by its first claimer)."""
        stmt = sa.select(CalibrationCaseClaim.position, CalibrationCaseClaim.attempts).where(
            CalibrationCaseClaim.calibration_id == calibration_id
        )
        return {int(p): int(a) for p, a in (await self._session.execute(stmt)).all()}


def _lease_is(
    calibration_id: uuid.UUID, expected_token: uuid.UUID | None, stale_before: datetime | None
) -> list[sa.ColumnElement[bool]]:
    """The lease still holds ``expected_token`` (and, given ``stale_before``, is silent)."""
    token_matches = (
        CalibrationLease.token.is_(None)
        if expected_token is None
        else CalibrationLease.token == expected_token
    )
    conditions = [CalibrationLease.calibration_id == calibration_id, token_matches]
    if stale_before is not None:
        conditions.append(
            sa.or_(
                CalibrationLease.heartbeat_at.is_(None),
                CalibrationLease.heartbeat_at < stale_before,
            )
        )
    return conditions
