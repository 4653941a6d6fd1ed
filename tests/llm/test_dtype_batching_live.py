"""benchmarks.dtype_batching against the real local vLLM server, on a few cases."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import dtype_batching
from tests.live_llm import POSTERIOR_TOLERANCE

pytestmark = pytest.mark.llm


async def test_report_measures_the_live_server(
    live_server: tuple[str, str], live_dtype: str
) -> None:
    base_url, model = live_server
    args = argparse.Namespace(
        server=[f"live={base_url}"],
        model=model,
        dataset=dtype_batching.DATASET,
        cases=4,
        steps=2,
        alpha=0.5,
        seed=0,
    )
    report = await dtype_batching.run(args)
    assert report["prompts"] == 8
    live = report["servers"]["live"]
    assert set(live["seconds"]) == set(dtype_batching.MODES)
    moved = live["movement"]["batched_vs_single"]
    assert moved["prompts"] == 8
    assert 0.0 <= moved["mean_abs"] <= moved["p99_abs"] <= moved["max_abs"]
    assert moved["max_abs"] <= POSTERIOR_TOLERANCE[live_dtype]
    sets = live["sets"]["calibration_batched_serving_single"]
    assert sets["sets"] == 4 and [s["n_cal"] for s in sets["per_step"]] == [2, 2]
    assert 0 <= sets["sets_changed"] <= sets["sets"]
