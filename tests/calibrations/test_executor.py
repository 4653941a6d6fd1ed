"""Calibration runs in the database: per-case persistence, resume, leases (SQLite + PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.calibrations.executor import _stop, claim_run, execute_run
from app.calibrations.repository import CalibrationRepository
from app.calibrations.service import create_run
from app.calibrations.spec import RunSpec
from app.datasets import MediQDataset, load_mediq
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import AuditEvent, CalibrationCase
from app.errors import InvalidInputError
from tests.calibrations.fakes import StubPatient, scripted_provider, write_dataset
from tests.calibrations.test_runner import spec_for

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
async def maker(clean_database: str) -> AsyncIterator[Maker]:
    engine = create_engine(clean_database)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def dataset(tmp_path: Path) -> MediQDataset:
    return load_mediq(write_dataset(tmp_path / "tiny.jsonl", n=40))


async def _queued(maker: Maker, spec: RunSpec) -> uuid.UUID:
    row = await create_run(
        maker, spec=spec, info=scripted_provider().info, name="test", activate=False
    )
    return row.id


async def _cases(maker: Maker, calibration_id: uuid.UUID) -> list[CalibrationCase]:
    async with maker() as db:
        return list(await CalibrationRepository(db).cases(calibration_id))


async def test_a_run_stores_every_case_and_its_thresholds(
    maker: Maker, dataset: MediQDataset
) -> None:
    spec = spec_for(dataset, cases=10)
    calibration_id = await _queued(maker, spec)
    token = await claim_run(maker, calibration_id, worker="test")
    seen: list[tuple[int, int]] = []
    outcome = await execute_run(
        maker,
        calibration_id,
        token,
        provider=scripted_provider(),
        patient=StubPatient(),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert outcome.status == "succeeded" and outcome.computed_cases == 10
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)
    async with maker() as db:
        row = await CalibrationRepository(db).get(calibration_id)
    assert row is not None and row.status == "succeeded" and row.result is not None
    assert row.progress_done == row.progress_total == 10 and not row.active
    stored = await _cases(maker, calibration_id)
    assert [c.position for c in stored] == list(range(10))
    assert row.result["scores"] == [[c.scores[k] for c in stored] for k in range(3)]
    with pytest.raises(InvalidInputError, match="already succeeded"):
        await claim_run(maker, calibration_id, worker="again")


async def test_a_crashed_run_resumes_without_recomputing_finished_cases(
    maker: Maker, dataset: MediQDataset
) -> None:
    spec = spec_for(dataset, cases=10, concurrency=1)
    calibration_id = await _queued(maker, spec)
    token = await claim_run(maker, calibration_id, worker="first")
    # Two answers per case (T = 2): the 8th patient call fails, after 3 finished cases.
    failed = await execute_run(
        maker,
        calibration_id,
        token,
        provider=scripted_provider(),
        patient=StubPatient(error_after=7),
    )
    assert failed.status == "failed" and "vLLM went away" in (failed.error or "")
    assert failed.computed_cases == 3
    assert len(await _cases(maker, calibration_id)) == 3

    provider, patient = scripted_provider(), StubPatient()
    token = await claim_run(maker, calibration_id, worker="second")
    resumed = await execute_run(maker, calibration_id, token, provider=provider, patient=patient)
    assert resumed.status == "succeeded"
    assert (resumed.computed_cases, resumed.skipped_cases) == (7, 3)
    # Only the 7 unfinished cases were interviewed: 3 posterior calls and 2 answers each.
    assert len(provider.posterior_calls) == 7 * 3 and len(patient.calls) == 7 * 2

    # Same result as a run that never crashed.
    clean_id = await _queued(maker, spec)
    clean_token = await claim_run(maker, clean_id, worker="clean")
    await execute_run(
        maker, clean_id, clean_token, provider=scripted_provider(), patient=StubPatient()
    )
    async with maker() as db:
        repo = CalibrationRepository(db)
        a, b = await repo.get(calibration_id), await repo.get(clean_id)
    assert a is not None and b is not None and a.result is not None and b.result is not None
    assert a.result["thresholds"] == b.result["thresholds"]
    assert a.result["scores"] == b.result["scores"]


async def test_a_live_lease_cannot_be_taken_and_a_stale_one_can(
    maker: Maker, dataset: MediQDataset
) -> None:
    calibration_id = await _queued(maker, spec_for(dataset, cases=4))
    first = await claim_run(maker, calibration_id, worker="first")
    with pytest.raises(InvalidInputError, match="being run by first"):
        await claim_run(maker, calibration_id, worker="second", lease_timeout_s=60)
    second = await claim_run(maker, calibration_id, worker="second", lease_timeout_s=0)
    async with maker.begin() as db:
        repo = CalibrationRepository(db)
        assert not await repo.heartbeat(calibration_id, first, datetime.now(UTC))
        assert not await repo.guarded_update(calibration_id, first, progress_done=99)
        assert await repo.heartbeat(calibration_id, second, datetime.now(UTC))
        lease = await repo.lease(calibration_id)
    assert lease is not None and lease.worker == "second" and lease.attempts == 2


async def test_a_worker_that_lost_its_lease_stops_writing(
    maker: Maker, dataset: MediQDataset
) -> None:
    calibration_id = await _queued(maker, spec_for(dataset, cases=6, concurrency=1))
    token = await claim_run(maker, calibration_id, worker="slow")

    class Thief(StubPatient):
        async def patient_reply(self, *, facts: object, question: str) -> str:
            if not self.calls:  # another worker decides this one is dead
                async with maker.begin() as db:
                    await CalibrationRepository(db).try_claim(
                        calibration_id,
                        expected_token=token,
                        stale_before=datetime.now(UTC) + timedelta(seconds=1),
                        new_token=uuid.uuid4(),
                        worker="thief",
                        now=datetime.now(UTC) - timedelta(hours=1),
                    )
            return await super().patient_reply(facts=facts, question=question)  # type: ignore[arg-type]

    outcome = await execute_run(
        maker, calibration_id, token, provider=scripted_provider(), patient=Thief()
    )
    assert outcome.status == "lost"
    assert await _cases(maker, calibration_id) == []


async def test_the_heartbeat_notices_a_lost_lease_and_stops_the_run(
    maker: Maker, dataset: MediQDataset
) -> None:
    calibration_id = await _queued(maker, spec_for(dataset, cases=6, concurrency=1))
    token = await claim_run(maker, calibration_id, worker="slow")

    class Stuck(StubPatient):
        async def patient_reply(self, *, facts: object, question: str) -> str:
            await asyncio.sleep(30)  # never returns in time: only the heartbeat can stop it
            return "no"

    async with maker.begin() as db:
        await CalibrationRepository(db).try_claim(
            calibration_id,
            expected_token=token,
            stale_before=None,
            new_token=uuid.uuid4(),
            worker="thief",
            now=datetime.now(UTC),
        )
    outcome = await asyncio.wait_for(
        execute_run(
            maker,
            calibration_id,
            token,
            provider=scripted_provider(),
            patient=Stuck(),
            heartbeat_s=0.05,
        ),
        timeout=10,
    )
    assert outcome.status == "lost"


async def test_cancelling_gives_the_run_back_to_the_queue(
    maker: Maker, dataset: MediQDataset
) -> None:
    calibration_id = await _queued(maker, spec_for(dataset, cases=8, concurrency=1))
    token = await claim_run(maker, calibration_id, worker="leaving")
    done = asyncio.Event()

    def progress(n: int, total: int) -> None:
        if n >= 2:
            done.set()

    task = asyncio.create_task(
        execute_run(
            maker,
            calibration_id,
            token,
            provider=scripted_provider(),
            patient=StubPatient(),
            progress=progress,
        )
    )
    await asyncio.wait_for(done.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with maker() as db:
        repo = CalibrationRepository(db)
        row, lease = await repo.get(calibration_id), await repo.lease(calibration_id)
        actions = (await db.scalars(sa.select(AuditEvent.action))).all()
    assert row is not None and row.status == "queued"
    assert lease is not None and lease.token is None
    assert {"calibration.create", "calibration.claim"} <= set(actions)


async def test_stopping_the_heartbeat_never_swallows_the_workers_own_cancellation() -> None:
    """A worker cancelled while its run waits for the heartbeat to stop must end: the wait
    once suppressed every BaseException, the cancellation with it, and the worker polled on
    for ever (a hang seen in CI, tests/worker/test_shared_run.py)."""

    async def heartbeat() -> None:  # takes a moment to stop, as one mid-write does
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise

    async def run_end() -> str:
        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0)
        await _stop(beat)
        return "went on"

    worker = asyncio.create_task(run_end())
    await asyncio.sleep(0.05)  # inside the wait for the heartbeat
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
