"""The calibration plot the page shows: numbers per step, the PNG, and who may fetch it."""

from __future__ import annotations

import math
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.auth.keys import Scope
from app.calibrations.plots import render_plot, step_summaries
from app.calibrations.results import calibration_result
from app.conformal import lac_threshold
from app.db.engine import create_engine
from app.db.models import Calibration
from app.settings import Settings
from tests.conftest import make_key, open_client

PNG = b"\x89PNG\r\n\x1a\n"


def _result(n: int = 40, steps: int = 4, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    scores = [sorted(float(x) for x in rng.uniform(0, 1, n)) for _ in range(steps)]
    taus = [lac_threshold(np.asarray(s), 0.1) for s in scores]
    return calibration_result(
        thresholds=taus, scores=scores, alpha=0.1, step_alpha=0.1, n_per_step=[n] * steps
    )


def test_step_summaries_read_what_a_run_stores() -> None:
    result = _result()
    summaries = step_summaries(result)
    assert [s.step for s in summaries] == [0, 1, 2, 3]
    for s, tau, scores in zip(summaries, result["thresholds"], result["scores"], strict=True):
        assert s.n == 40 and s.threshold == tau and s.target == pytest.approx(0.9)
        # In-sample coverage of a split-conformal threshold: rank/n >= 1 - alpha.
        assert s.coverage == pytest.approx(np.mean(np.asarray(scores) <= tau))
        assert s.coverage is not None and s.coverage >= 0.9
        assert s.band_high == pytest.approx(0.9 + 1 / 41)
        # Labels in the set have p >= 1 - tau; they fit into a total mass of 1.
        assert s.max_set_size == math.floor(1 / (1 - tau) + 1e-9)
        assert s.true_label_probabilities == pytest.approx([1 - x for x in scores])


def test_an_infinite_threshold_means_every_candidate() -> None:
    # 5 cases cannot give a 90% threshold (rank 6 > 5): stored as null.
    result = _result(n=5, steps=2)
    assert result["thresholds"] == [None, None]
    for s in step_summaries(result):
        assert s.threshold is None and s.max_set_size is None and s.coverage == 1.0
    assert render_plot(result, title="too few").startswith(PNG)


def test_the_plot_is_a_png() -> None:
    png = render_plot(_result(), title="Calibration x")
    assert png.startswith(PNG) and len(png) > 20_000


async def _insert(settings: Settings, *, result: dict[str, Any] | None) -> uuid.UUID:
    engine = create_engine(settings.effective_database_url)
    row_id = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(Calibration).values(
                    id=row_id,
                    status="succeeded" if result else "running",
                    model="scripted",
                    prompt_version="test",
                    policy="cip",
                    alpha=0.1,
                    anytime=False,
                    max_questions=3,
                    params={},
                    progress_done=40,
                    progress_total=40,
                    active=False,
                    result=result,
                )
            )
    finally:
        await engine.dispose()
    return row_id


async def test_the_plot_endpoint(
    client: httpx.AsyncClient, settings: Settings, app: FastAPI
) -> None:
    done = await _insert(settings, result=_result())
    running = await _insert(settings, result=None)
    response = await client.get(f"/v1/calibrations/{done}/plot.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG)
    assert "private" in response.headers["cache-control"]

    pending = await client.get(f"/v1/calibrations/{running}/plot.png")
    assert pending.status_code == 409
    assert pending.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/calibrations/{uuid.uuid4()}/plot.png")).status_code == 404

    # sessions:read (the clinician) or calibrations:admin may see it; nobody else.
    for scopes, status in (
        ([Scope.SESSIONS_READ], 200),
        ([Scope.CALIBRATIONS_ADMIN], 200),
        ([Scope.SESSIONS_WRITE, Scope.AUDIT_READ], 403),
    ):
        key = await make_key(settings, tenant="clinic-a", scopes=scopes)
        async for c in open_client(app, api_key=key):
            assert (await c.get(f"/v1/calibrations/{done}/plot.png")).status_code == status
    async for c in open_client(app):
        assert (await c.get(f"/v1/calibrations/{done}/plot.png")).status_code == 401
