"""Calibration runs as resources: create (queued for a worker), read, list, activate, resume."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.auditor import Auditor, ResourceType
from app.auth.repository import ApiKeyRepository
from app.calibrations.repository import (
    CalibrationRepository,
)
from app.calibrations.schemas import (
    CalibrationCreate,
    CalibrationList,
    CalibrationOut,
    LeaseOut,
    ProgressOut,
    ResultOut,
)
from app.calibrations.selection import check_selection
from app.calibrations.spec import RunSpec, serving_refusal
from app.datasets import SHIPPED_DATASETS_DIR, SplitFractions, load_mediq
from app.db.models import Calibration, CalibrationLease
from app.db.status import CalibrationStatus
from app.engine.policy import OLDER_SPELLINGS
from app.engine.types import PosteriorProvider, ProviderInfo
from app.errors import (
    NO_LLM_SERVER,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UpstreamUnavailableError,
)
from app.pagination import Position, decode_cursor, encode_cursor, page_of

__all__ = [
    "CalibrationService",
    "create_run",
    "dataset_dirs",
    "prepare_spec",
    "public_params",
    "record_activation",
    "resolve_dataset",
    "unfinished_progress",
]

_MAX_PROBLEMS_STORED = 50
# A running run whose worker has not heartbeated for this long is taken for dead (the
# worker's own default lease timeout, app.calibrations.executor.DEFAULT_LEASE_TIMEOUT_S).
RESUME_STALE_AFTER_S = 60.0
LISTING = "calibrations"  # the cursor namespace of GET /v1/calibrations


def dataset_dirs(data_dir: Path) -> tuple[Path, ...]:
    """Where API dataset names are looked up, first match wins."""
    return (data_dir / "datasets", SHIPPED_DATASETS_DIR)


def resolve_dataset(name: str, data_dir: Path) -> Path:
    """A dataset name (no path) to its JSONL file; InvalidInputError lists what exists."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise InvalidInputError("a dataset is named, not given as a path")
    for folder in dataset_dirs(data_dir):
        path = folder / f"{name}.jsonl"
        if path.is_file():
            return path.resolve()
    known = sorted(
        {p.stem for d in dataset_dirs(data_dir) if d.is_dir() for p in d.glob("*.jsonl")}
    )
    raise InvalidInputError(
        f"'dataset' names no dataset here; available: {', '.join(known) or 'none'}"
    )


def prepare_spec(path: Path, **fields: Any) -> tuple[RunSpec, dict[str, Any]]:
    """Load the dataset (lenient), build the spec, check the split is big enough.

    Returns the spec and extra params: the dataset's skipped lines, reported, not hidden.
    """
    dataset = load_mediq(path, strict=False)
    spec = RunSpec.create(dataset=str(path.resolve()), dataset_hash=dataset.sha256, **fields)
    spec.calibration_cases(dataset)
    extra: dict[str, Any] = {
        "dataset_cases": len(dataset),
        "dataset_skipped": len(dataset.problems),
        "dataset_problems": [
            {"line": p.line, "message": p.message} for p in dataset.problems[:_MAX_PROBLEMS_STORED]
        ],
        "splits": spec.splits(dataset).sizes(),
    }
    return spec, extra


async def create_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    spec: RunSpec,
    info: ProviderInfo,
    name: str | None,
    activate: bool,
    extra_params: dict[str, Any] | None = None,
    actor_key_id: str | None = None,
    tenant: str | None = None,
    owner: str | None = None,
) -> Calibration:
    """Insert a queued run with its lease row (claimable by any worker on this model).

    ``owner`` is the tenant whose sessions it may serve (None: the platform's); ``tenant``
    and ``actor_key_id`` say who asked, for the audit trail.
    """
    refusal = serving_refusal(spec.to_params())
    if activate and refusal:
        raise InvalidInputError(f"{refusal}; run it without activate")
    params = {
        **spec.to_params(),
        **(extra_params or {}),
        "activate": activate,
        "provider": dict(info.extra),
        # The worker's audit events go to the tenant that asked for the run.
        "requested_by": {"tenant": tenant, "key_id": actor_key_id},
    }
    async with sessionmaker.begin() as db:
        repo = CalibrationRepository(db)
        await check_selection(repo, spec, info, owner=owner)
        row = await repo.add(
            Calibration(
                tenant=owner,
                name=name,
                status=CalibrationStatus.QUEUED,
                model=info.model,
                prompt_version=info.prompt_version,
                policy=spec.policy.value,
                alpha=spec.alpha,
                anytime=spec.anytime,
                max_questions=spec.max_questions,
                dataset_hash=spec.dataset_hash,
                params=params,
                progress_done=0,
                progress_total=spec.cases,
                active=False,
            )
        )
        await repo.add_lease(row.id)
        await Auditor(ResourceType.CALIBRATION, tenant=tenant, actor_key_id=actor_key_id).record(
            db, action="calibration.create", resource_id=row.id
        )
    return row


@dataclass
class CalibrationService:
    sessionmaker: async_sessionmaker[AsyncSession]
    provider: PosteriorProvider | None
    data_dir: Path
    tenant: str | None = None
    actor_key_id: str | None = None
    # Whose runs this caller manages: its tenant's, or (None) the platform's.
    owner: str | None = None
    # Whether a worker runs inside this process (what a queued run's reply says).
    runs_worker: bool = False

    async def create(self, body: CalibrationCreate) -> CalibrationOut:
        if self.provider is None:
            raise UpstreamUnavailableError(NO_LLM_SERVER, retry_after_s=30)
        path = resolve_dataset(body.dataset, self.data_dir)
        fields = {**body.run_fields(), "fractions": SplitFractions()}
        # Reading and hashing a dataset file is blocking work: off the event loop.
        spec, extra = await asyncio.to_thread(prepare_spec, path, **fields)
        extra["dataset_name"] = body.dataset
        row = await create_run(
            self.sessionmaker,
            spec=spec,
            info=self.provider.info,
            name=body.name,
            activate=body.activate,
            extra_params=extra,
            actor_key_id=self.actor_key_id,
            tenant=self.tenant,
            owner=self.owner,
        )
        return await self.get(row.id)

    async def get(self, calibration_id: uuid.UUID) -> CalibrationOut:
        """A run the caller may read: its own, or the platform's."""
        async with self.sessionmaker() as db:
            repo = CalibrationRepository(db)
            row = await repo.get_visible(calibration_id, owner=self.owner)
            if row is None:
                raise NotFoundError(f"no calibration {calibration_id}")
            return await _out(repo, row, runs_worker=self.runs_worker)

    async def list(self, *, limit: int, cursor: str | None = None) -> CalibrationList:
        """The caller's runs and the platform's, newest first, one page."""
        after = decode_cursor(LISTING, cursor) if cursor is not None else None
        async with self.sessionmaker() as db:
            repo = CalibrationRepository(db)
            rows = await repo.list(owner=self.owner, limit=limit, after=after)
            page = page_of(
                list(rows), limit=limit, position=lambda r: Position.of(r.created_at, r.id)
            )
            return CalibrationList(
                calibrations=[await _out(repo, r, runs_worker=self.runs_worker) for r in page.rows],
                next_cursor=encode_cursor(LISTING, page.next) if page.next else None,
            )

    async def _owned(self, repo: CalibrationRepository, calibration_id: uuid.UUID) -> Calibration:
        """The run, if the caller owns it: another tenant's is not found, and the platform's
        is forbidden to a tenant (it may read it, not change it)."""
        row = await repo.get_visible(calibration_id, owner=self.owner)
        if row is None:
            raise NotFoundError(f"no calibration {calibration_id}")
        if row.tenant != self.owner:
            raise ForbiddenError(
                f"calibration {calibration_id} is the platform's; only an operator's key "
                "(platform:admin) can change it"
            )
        return row

    async def activate(self, calibration_id: uuid.UUID) -> CalibrationOut:
        async with self.sessionmaker.begin() as db:
            repo = CalibrationRepository(db)
            row = await self._owned(repo, calibration_id)
            if row.status != CalibrationStatus.SUCCEEDED:
                raise ConflictError(f"calibration {calibration_id} is {row.status}, not succeeded")
            refusal = serving_refusal(row.params)
            if refusal:
                raise ConflictError(refusal)
            await repo.activate(row)
            await record_activation(db, row, by=self._auditor)
        return await self.get(calibration_id)

    async def resume(self, calibration_id: uuid.UUID) -> CalibrationOut:
        """Queue a failed run, or a running one whose worker went silent, for any worker.

        The worker that claims it skips the cases already stored (``execute_run``); the run's
        last error is cleared here and kept in the audit trail of its failure.
        """
        async with self.sessionmaker.begin() as db:
            repo = CalibrationRepository(db)
            row = await self._owned(repo, calibration_id)
            lease = await repo.lease(calibration_id)
            if lease is None:
                raise NotFoundError(f"no calibration {calibration_id}")
            stale_before: datetime | None = None
            if row.status == CalibrationStatus.RUNNING:
                stale_before = datetime.now(UTC) - timedelta(seconds=RESUME_STALE_AFTER_S)
            elif row.status != CalibrationStatus.FAILED:
                raise ConflictError(
                    f"calibration {calibration_id} is {row.status}; only a failed run, or a "
                    "running one whose worker stopped heartbeating, can be resumed"
                )
            if not await repo.requeue(
                calibration_id, expected_token=lease.token, stale_before=stale_before
            ):
                raise ConflictError(
                    f"calibration {calibration_id} is being run by a live worker (heartbeat "
                    f"within {RESUME_STALE_AFTER_S:g} s) or was claimed meanwhile; it needs "
                    "no resume"
                )
            await self._auditor.record(db, action="calibration.resume", resource_id=calibration_id)
        return await self.get(calibration_id)

    @property
    def _auditor(self) -> Auditor:
        return Auditor(ResourceType.CALIBRATION, tenant=self.tenant, actor_key_id=self.actor_key_id)


async def unfinished_progress(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> dict[uuid.UUID, float]:
    """How far each queued or running run is: the share of its cases done (0 before it has
    any)."""
    async with sessionmaker.begin() as db:
        rows = await CalibrationRepository(db).unfinished_progress()
    return {calibration_id: done / total if total else 0.0 for calibration_id, done, total in rows}


async def record_activation(db: AsyncSession, row: Calibration, *, by: Auditor) -> None:
    """Audit an activation in the trail of every tenant whose sessions it may change: the
    owner's, or for a platform run every tenant with a key (and the actor's, ``by``'s)."""
    affected: set[str | None] = {row.tenant, by.tenant}
    if row.tenant is None:
        affected |= set(await ApiKeyRepository(db).tenants())
    for tenant in sorted(affected, key=lambda t: (t is not None, t or "")):
        await by.in_trail_of(tenant).record(db, action="calibration.activate", resource_id=row.id)


# Params kept out of replies: who asked (another tenant's key id, for the platform's runs)
# and where the worker read the dataset (a server path; ``dataset_name`` names it).
_PRIVATE_PARAMS = frozenset({"requested_by"})


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """A run's params as a reply shows them: no key ids, tenant names or server paths, and
    the policy's fields under the sessions API's names (runs stored before the shared
    policy type recorded ``bank`` and ``n_questions``)."""
    shown = {k: v for k, v in params.items() if k not in _PRIVATE_PARAMS}
    for name, older in OLDER_SPELLINGS.items():
        if older in shown:
            value = shown.pop(older)
            shown.setdefault(name, value)
    if isinstance(shown.get("dataset"), str):
        shown["dataset"] = shown.get("dataset_name") or Path(shown["dataset"]).stem
    return shown


WORKER_NOTES = {
    True: "Queued: this service's own worker runs it (one run at a time, after any run "
    "before it); progress shows here.",
    False: "Queued: `pursuit worker` processes execute calibration runs, and this service "
    "runs none itself (PURSUIT_INPROCESS_WORKER). It stays queued until a worker for its model "
    "runs against this database: start one with `pursuit worker`.",
}


async def _out(
    repo: CalibrationRepository, row: Calibration, *, runs_worker: bool
) -> CalibrationOut:
    lease = await repo.lease(row.id)
    if row.result is not None:
        done = row.progress_done
        stop_reasons: dict[str, int] = dict(row.result.get("stop_reasons") or {})
    else:
        done = await repo.case_count(row.id)
        stop_reasons = await repo.stop_reasons(row.id)
    return CalibrationOut(
        id=str(row.id),
        name=row.name,
        status=row.status,
        active=row.active,
        model=row.model,
        prompt_version=row.prompt_version,
        policy=row.policy,
        alpha=row.alpha,
        anytime=row.anytime,
        max_questions=row.max_questions,
        dataset_hash=row.dataset_hash,
        owner="platform" if row.tenant is None else "tenant",
        params=public_params(row.params),
        progress=ProgressOut(
            done=done,
            total=row.progress_total,
            # Every stored case has a score at every step (exhausted ones repeat the last).
            n_per_step=[done] * (row.max_questions + 1),
            stop_reasons=stop_reasons,
        ),
        result=_result_out(row.result),
        error=row.error,
        lease=_lease_out(lease),
        worker_note=WORKER_NOTES[runs_worker] if row.status == CalibrationStatus.QUEUED else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _result_out(result: dict[str, Any] | None) -> ResultOut | None:
    if result is None:
        return None
    return ResultOut(
        thresholds=result["thresholds"],
        n_per_step=result["n_per_step"],
        step_alpha=result["step_alpha"],
        insufficient_steps=result.get("insufficient_steps", []),
        groups=result.get("groups"),
    )


def _lease_out(lease: CalibrationLease | None) -> LeaseOut | None:
    if lease is None or lease.worker is None:
        return None
    return LeaseOut(worker=lease.worker, heartbeat_at=lease.heartbeat_at, attempts=lease.attempts)
