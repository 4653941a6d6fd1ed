"""One run shared by several workers (SQLite + PostgreSQL): each case claimed and stored once,
the same thresholds whatever the number of workers, a dead worker's cases redone once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.calibrations.repository import CalibrationRepository, CaseClaimRepository
from app.calibrations.service import create_run
from app.datasets import load_mediq
from app.db.models import CalibrationCase, CalibrationCaseClaim
from app.worker import Worker
from tests.calibrations.fakes import Crash, StubPatient, scripted_provider, write_dataset
from tests.calibrations.test_runner import spec_for
from tests.worker.conftest import Maker

CASES = 12
# How long a claim may go without a heartbeat (every 0.1 s) before another worker takes it.
# These workers share one event loop: with 0.5 s, a loaded CI machine once delayed a live
# worker's heartbeats past it, and its two reclaimed cases were taken and redone again.
LEASE_S = 2.0


class SlowPatient(StubPatient):
    """A patient that takes a little time, so the workers' cases overlap."""

    def __init__(self, *, delay_s: float = 0.01, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay_s = delay_s

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str:
        await asyncio.sleep(self.delay_s)
        return await super().patient_reply(facts=facts, question=question)


def worker(maker: Maker, name: str, patient: StubPatient | None = None, **kw: Any) -> Worker:
    return Worker(
        sessionmaker=maker,
        provider=scripted_provider(),
        patient=patient or SlowPatient(),
        name=name,
        poll_s=0.02,
        **kw,
    )


async def _queue(maker: Maker, tmp_path: Path) -> uuid.UUID:
    dataset = load_mediq(write_dataset(tmp_path / "tiny.jsonl", n=40))
    spec = spec_for(dataset, cases=CASES, concurrency=2)
    row = await create_run(
        maker, spec=spec, info=scripted_provider().info, name="shared", activate=False
    )
    return row.id


async def _run_together(maker: Maker, calibration_id: uuid.UUID, workers: list[Worker]) -> None:
    """Every worker polls until the run has succeeded (or failed)."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        async with asyncio.timeout(60):
            while True:
                async with maker() as db:
                    row = await CalibrationRepository(db).get(calibration_id)
                assert row is not None
                if row.status in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _stored(maker: Maker, calibration_id: uuid.UUID) -> dict[str, Any]:
    async with maker() as db:
        row = await CalibrationRepository(db).get(calibration_id)
        cases = (
            await db.scalars(
                sa.select(CalibrationCase.case_id).where(
                    CalibrationCase.calibration_id == calibration_id
                )
            )
        ).all()
        claims = (
            await db.execute(
                sa.select(CalibrationCaseClaim.worker, CalibrationCaseClaim.attempts).where(
                    CalibrationCaseClaim.calibration_id == calibration_id
                )
            )
        ).all()
        unfinished = await CaseClaimRepository(db).unfinished(calibration_id)
    assert row is not None
    return {
        "row": row,
        "cases": list(cases),
        "workers": {w for w, _ in claims},
        "attempts": sorted(a for _, a in claims),
        "unfinished": unfinished,
    }


@pytest.mark.parametrize("n", [1, 2, 4])
async def test_n_workers_share_one_run_and_store_each_case_once(
    maker: Maker, tmp_path: Path, n: int
) -> None:
    reference_id = await _queue(maker, tmp_path)
    await worker(maker, "solo").run(once=True)
    reference = await _stored(maker, reference_id)

    calibration_id = await _queue(maker, tmp_path)
    # 50 ms per answer: the first worker cannot finish before the others have joined.
    workers = [worker(maker, f"w{i}", SlowPatient(delay_s=0.05)) for i in range(n)]
    await _run_together(maker, calibration_id, workers)
    got = await _stored(maker, calibration_id)
    assert got["row"].status == "succeeded"
    assert len(got["cases"]) == len(set(got["cases"])) == CASES
    assert got["unfinished"] == 0 and got["attempts"] == [1] * CASES  # nobody redid a case
    if n > 1:
        assert len(got["workers"]) > 1  # the cases really were shared
    assert got["row"].result["thresholds"] == reference["row"].result["thresholds"]
    assert got["row"].result["scores"] == reference["row"].result["scores"]


@pytest.mark.parametrize("victim", ["owner", "helper"])
async def test_a_killed_workers_cases_are_redone_once_and_thresholds_unchanged(
    maker: Maker, tmp_path: Path, victim: str
) -> None:
    reference_id = await _queue(maker, tmp_path)
    await worker(maker, "solo").run(once=True)
    reference = await _stored(maker, reference_id)

    calibration_id = await _queue(maker, tmp_path)
    # The victim dies (Crash is not an Exception: nothing is given back) in its 2nd case.
    dying = worker(maker, "dying", patient=SlowPatient(crash_after=3), lease_timeout_s=LEASE_S)
    others = [worker(maker, f"w{i}", lease_timeout_s=LEASE_S, heartbeat_s=0.1) for i in range(2)]
    if victim == "owner":
        with pytest.raises(BaseExceptionGroup) as died:
            await dying.run_once()
        assert died.group_contains(Crash)
        await _run_together(maker, calibration_id, others)
    else:
        slow_owner = worker(
            maker, "owner", SlowPatient(delay_s=0.1), lease_timeout_s=LEASE_S, heartbeat_s=0.1
        )
        owner = asyncio.create_task(slow_owner.run())
        try:
            async with asyncio.timeout(30):
                while True:  # the owner has seeded the cases: the victim can join
                    async with maker() as db:
                        if await CaseClaimRepository(db).unfinished(calibration_id):
                            break
                    await asyncio.sleep(0.01)
            with pytest.raises(BaseExceptionGroup) as died:
                await dying.run_once()
            assert died.group_contains(Crash)
            await _run_together(maker, calibration_id, others)
        finally:
            owner.cancel()
            await asyncio.gather(owner, return_exceptions=True)

    got = await _stored(maker, calibration_id)
    assert got["row"].status == "succeeded"
    assert len(got["cases"]) == len(set(got["cases"])) == CASES and got["unfinished"] == 0
    redone = [a for a in got["attempts"] if a > 1]
    assert 1 <= len(redone) <= 2 and set(redone) == {2}  # the victim's in-flight cases, once
    assert got["row"].result["thresholds"] == reference["row"].result["thresholds"]
    assert got["row"].result["scores"] == reference["row"].result["scores"]
